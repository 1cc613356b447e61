"""Adaptive allocations: grow and shrink a deployment's allocation count with its measured load.

Elasticsearch (ELASTIC_REFERENCE.md §6.3) every 10 s estimates the load as request rate × mean
inference time, i.e. how many allocations would be busy all the time, and scales up while
``load / allocations > 0.9`` and down while ``allocations > 1`` and ``load / (allocations - 1) < 0.85``,
clamped to ``[min, max]`` (max 32 when unset). It smooths rate and time with 1-D Kalman filters and
uses their confidence bounds; we smooth both with simple exponential smoothing and use the point
estimate for both directions, which reacts in a few intervals instead of minutes and needs no noise
model. The rate counts demand (texts queued *and* texts rejected by a full queue), so an overloaded
deployment still sees its real load. Scaling to zero is not implemented, so the minimum is at least 1.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidInput
from .stats import LoadSample
from .units import parse_bool, parse_int

SCALE_UP_THRESHOLD = 0.9
SCALE_DOWN_THRESHOLD = 0.85
DEFAULT_MAX_ALLOCATIONS = 32


@dataclasses.dataclass(frozen=True)
class AdaptiveAllocations:
    """Elasticsearch's ``adaptive_allocations`` block plus the timing knobs (seconds).

    Attributes:
        enabled: scale at all.
        min_number_of_allocations: at least 1 (no scale to zero); None means 1.
        max_number_of_allocations: None means 32, Elasticsearch's cap.
        evaluation_interval_s: how often the load is measured (Elasticsearch: 10 s).
        scale_up_cooldown_s: minimum time after a change before scaling up again.
        scale_down_cooldown_s: minimum time after a change before scaling down (Elasticsearch: 5 min),
            so a pause between two bursts does not give allocations back.
        smoothing: weight of the newest measurement in the exponential smoothing, in ``(0, 1]``.
    """

    enabled: bool = True
    min_number_of_allocations: int | None = None
    max_number_of_allocations: int | None = None
    evaluation_interval_s: float = 10.0
    scale_up_cooldown_s: float = 0.0
    scale_down_cooldown_s: float = 300.0
    smoothing: float = 0.3

    def __post_init__(self) -> None:
        parse_bool(self.enabled, "enabled", strict=True)
        for name in ("min_number_of_allocations", "max_number_of_allocations"):
            if getattr(self, name) is not None:
                parse_int(getattr(self, name), name, strict=True)
        if self.min_number_of_allocations is not None and self.min_number_of_allocations < 0:
            raise InvalidInput("[min_number_of_allocations] must be a non-negative integer or null")
        if self.min_number_of_allocations == 0:
            raise InvalidInput(
                "[min_number_of_allocations] must be at least 1: this engine does not scale a deployment to zero"
            )
        if self.max_number_of_allocations is not None and self.max_number_of_allocations < 1:
            raise InvalidInput("[max_number_of_allocations] must be a positive integer or null")
        if self.minimum > self.maximum:
            raise InvalidInput("[min_number_of_allocations] must not be larger than [max_number_of_allocations]")
        for name in ("evaluation_interval_s", "scale_up_cooldown_s", "scale_down_cooldown_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise InvalidInput(f"[{name}] must be a non-negative number of seconds, got [{value!r}]")
        if self.evaluation_interval_s <= 0:
            raise InvalidInput("[evaluation_interval_s] must be positive")
        if not 0 < self.smoothing <= 1:
            raise InvalidInput(f"[smoothing] must be in (0, 1], got [{self.smoothing}]")

    @property
    def minimum(self) -> int:
        return self.min_number_of_allocations or 1

    @property
    def maximum(self) -> int:
        return self.max_number_of_allocations or DEFAULT_MAX_ALLOCATIONS

    @classmethod
    def from_value(cls, value: AdaptiveAllocations | Mapping[str, Any] | None) -> AdaptiveAllocations | None:
        """Accept the dataclass, Elasticsearch's JSON object, or None.

        Raises:
            InvalidInput: unknown keys or bad values.
        """
        if value is None or isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise InvalidInput(f"[adaptive_allocations] must be an object, got [{value!r}]")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise InvalidInput(f"[adaptive_allocations] has unknown keys {unknown}")
        return cls(**value)

    def to_json(self) -> dict[str, Any]:
        """The Elasticsearch-shaped block reported in stats."""
        data: dict[str, Any] = {"enabled": self.enabled}
        if self.min_number_of_allocations is not None:
            data["min_number_of_allocations"] = self.min_number_of_allocations
        if self.max_number_of_allocations is not None:
            data["max_number_of_allocations"] = self.max_number_of_allocations
        return data


class AdaptiveScaler:
    """Turns load samples into a wanted allocation count. Not thread-safe: one scaler thread owns it."""

    def __init__(self, settings: AdaptiveAllocations, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._rate: float | None = None          # texts per second
        self._time_per_text: float | None = None  # allocation-seconds per text
        self._last_change = float("-inf")

    @property
    def load(self) -> float | None:
        """Estimated allocations kept busy (rate × time per text), or None before any completion."""
        if self._rate is None or self._time_per_text is None:
            return None
        return self._rate * self._time_per_text

    def _smooth(self, previous: float | None, value: float) -> float:
        if previous is None:
            return value
        return previous + self.settings.smoothing * (value - previous)

    def observe(self, sample: LoadSample) -> None:
        """Fold one measurement interval in; an interval with no completion keeps the old time."""
        if sample.interval_s <= 0:
            return
        self._rate = self._smooth(self._rate, sample.demand / sample.interval_s)
        if sample.completed:
            self._time_per_text = self._smooth(self._time_per_text, sample.busy_s / sample.completed)

    def decide(self, current: int, ceiling: int | None = None) -> int:
        """The allocation count to run now; ``current`` when nothing should change.

        Args:
            current: the target count in force.
            ceiling: the most allocations the hardware allows (clamping of §5.5), if lower than max.
        """
        settings = self.settings
        maximum = settings.maximum if ceiling is None else max(1, min(settings.maximum, ceiling))
        minimum = min(settings.minimum, maximum)
        wanted = current
        load = self.load
        if load is not None:
            while wanted < maximum and load / wanted > SCALE_UP_THRESHOLD:
                wanted += 1
            while wanted > max(1, minimum) and load / (wanted - 1) < SCALE_DOWN_THRESHOLD:
                wanted -= 1
        wanted = min(max(wanted, minimum), maximum)
        now = self._clock()
        since = now - self._last_change
        if (wanted > current and since < settings.scale_up_cooldown_s) or (
            wanted < current and since < settings.scale_down_cooldown_s
        ):
            return current
        if wanted != current:
            self._last_change = now
        return wanted
