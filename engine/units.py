"""Scalar setting values as Elasticsearch writes them: time values, byte sizes, integers, booleans.

The one place these are parsed and printed, for every layer that reads a setting: the deployment
config (``cache_size``), the deployment's timeout messages, the HTTP server's query strings and
bodies, and the tasks' inference_config updates. Messages follow Elasticsearch's where it has one
(``TimeValue``, ``ByteSizeValue``, ``Booleans.parseBoolean``).

Two reading modes for integers and booleans: ``strict`` takes only JSON values of the right type
(the tasks' inference_config, as Elasticsearch's object parser does), the default also takes the
text of a query string (``?force=true``, ``?from=10``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import InvalidInput

# Largest unit first: format_time_value picks the first that fits.
TIME_UNITS: dict[str, float] = {
    "d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "micros": 1e-6, "nanos": 1e-9,
}
BYTE_UNITS: dict[str, int] = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}

_TIME = re.compile(r"(\d+(?:\.\d+)?)\s*(" + "|".join(TIME_UNITS) + ")")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(" + "|".join(BYTE_UNITS) + ")")


def _label(name: str, owner: str | None) -> str:
    return f"[{owner}] [{name}]" if owner else f"[{name}]"


def parse_time_value(value: Any, name: str) -> float | None:
    """An Elasticsearch time value (``10s``, ``500ms``, ``1m``; ``-1`` = no limit) in seconds.

    Raises:
        InvalidInput: not a time value (a bare number has no unit, as in Elasticsearch).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value == -1:
            return None
        raise InvalidInput(f"failed to parse setting [{name}] with value [{value}] as a time value: unit is missing")
    text = str(value).strip().lower()
    if text == "-1":
        return None
    match = _TIME.fullmatch(text)
    if not match:
        raise InvalidInput(
            f"failed to parse setting [{name}] with value [{value}] as a time value: unit is missing or unrecognized"
        )
    return float(match.group(1)) * TIME_UNITS[match.group(2)]


def format_time_value(seconds: float) -> str:
    """Seconds as Elasticsearch prints a TimeValue in messages: the largest unit (down to micros) that
    is at least 1, one decimal, ``.0`` dropped (``10s``, ``1.5m``, ``200ms``)."""
    units = [(suffix, size) for suffix, size in TIME_UNITS.items() if suffix != "nanos"]
    suffix, size = next(((suffix, size) for suffix, size in units if seconds >= size), units[-1])
    return f"{round(seconds / size, 1):.1f}".removesuffix(".0") + suffix


def parse_byte_size(value: Any, name: str = "cache_size") -> int:
    """Bytes from a non-negative int or an Elasticsearch byte size (``"0b"``, ``"512kb"``, ``"1.5gb"``).

    Raises:
        InvalidInput: a negative number, a float or bool, or a string that is not a byte size.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput(f"failed to parse setting [{name}] with value [{value}] as a size in bytes")
    return int(float(match.group(1)) * BYTE_UNITS[match.group(2)])


def parse_int(value: Any, name: str, *, owner: str | None = None, strict: bool = False) -> int:
    """An integer; with ``strict`` only a JSON integer, else also its decimal text.

    Args:
        owner: prefixes the name in messages (the task, as ``[ner] [num_top_classes]``).

    Raises:
        InvalidInput: ``[name] must be an integer; got [value]``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not strict and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise InvalidInput(f"{_label(name, owner)} must be an integer; got [{value}]")


def parse_bool(value: Any, name: str, *, owner: str | None = None, strict: bool = False) -> bool:
    """A boolean; with ``strict`` only a JSON boolean, else also ``true``/``false`` text, and an empty
    value means true (as Elasticsearch reads a bare ``?force``).

    Raises:
        InvalidInput: strict: ``[owner] [name] must be a boolean; got [value]``; else Elasticsearch's
            ``Failed to parse value [..] as only [true] or [false] are allowed for [name]``.
    """
    if isinstance(value, bool):
        return value
    if strict:
        raise InvalidInput(f"{_label(name, owner)} must be a boolean; got [{value}]")
    text = str(value).strip().lower()
    if text in ("", "true"):
        return True
    if text == "false":
        return False
    raise InvalidInput(f"Failed to parse value [{value}] as only [true] or [false] are allowed for [{name}]")


def parse_json_object(text: str, name: str = "--config") -> dict[str, Any]:
    """A JSON object given as text (the CLI verbs' task options): the one place that says what is wrong
    with it, so ``engine run``, ``engine batch`` and ``engine bench`` refuse alike."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise InvalidInput(f"{name} is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be a JSON object")
    return value
