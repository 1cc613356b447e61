"""What every task shares: the config base, update-key validation, and the result-building helpers.

A task turns an Elasticsearch ``inference_config`` update plus the package manifest into a frozen
config (:meth:`Task.parse_config`), turns one input text into the model rows to run
(:meth:`Task.prepare`), and turns the rows' graph outputs into one Elasticsearch result dict
(:meth:`Task.finish`). The rules that are the same for all tasks live here so that every task
rejects the same bad updates with the same Elasticsearch messages (ELASTIC_REFERENCE.md §1, §4.1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from .. import _kernels, units
from ..errors import InvalidInput, ModelError
from ..manifest import TASKS, TRUNCATE_MODES, Manifest
from ..tokenization import NO_SPAN, Tokenizer, Window, validate_window_settings

DEFAULT_RESULTS_FIELD = "predicted_value"


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """The per-request settings of one task, merged from the manifest and the request's update.

    Frozen (and holding only hashable values) because the inference cache keys on it: two
    requests with equal token ids and equal configs must be able to share a result.
    """

    results_field: str = DEFAULT_RESULTS_FIELD
    truncate: str = "first"
    span: int = NO_SPAN

    def cache_key(self) -> tuple[Any, ...]:
        """A hashable value that differs whenever two configs could give different results."""
        return (type(self).__name__, *(getattr(self, field.name) for field in dataclasses.fields(self)))


@dataclasses.dataclass
class Prepared:
    """One input text made ready to run: the model rows and what ``finish`` needs besides outputs.

    Tasks subclass this to carry per-text state (the mask position). What is the same for every
    text of a package, the tokenizer above all, lives on the runner instead.
    """

    text: str
    windows: list[Window]
    is_truncated: bool


ConfigT = TypeVar("ConfigT", bound=TaskConfig)
PreparedT = TypeVar("PreparedT", bound=Prepared)
OutputT = TypeVar("OutputT")
RunnerT = TypeVar("RunnerT", bound="TaskRunner[Any, Any, Any]")


class TaskRunner(Generic[ConfigT, PreparedT, OutputT]):
    """One task bound to one package: the contract between the scheduler and a task.

    The scheduler calls :meth:`parse_config` and :meth:`prepare` on the caller's thread before a
    text is queued, and :meth:`finish` after the model ran (docs/INTERNALS.md, "engine/tasks/").
    A subclass names its config, prepared and model-output types once, as type parameters, so its
    methods need no run-time type checks. :meth:`finish` turns each window's raw graph outputs
    into the task's typed output with :meth:`read` (where every shape is checked) before
    :meth:`result` builds the Elasticsearch result from them.
    """

    name: ClassVar[str]

    def __init__(self, manifest: Manifest, tokenizer: Tokenizer, package: str | None = None) -> None:
        self.manifest = manifest
        self.tokenizer = tokenizer
        # What a ModelError calls the package: its directory name (the model id), else its source.
        self.package = package or str(manifest.source.get("id") or "unnamed")

    @classmethod
    def bind(
        cls: type[RunnerT], manifest: Manifest, tokenizer: Tokenizer, package: str | None = None
    ) -> RunnerT:
        """This task for one package: the runner a deployment keeps for the package's lifetime."""
        return cls(manifest, tokenizer, package)

    def parse_config(self, config: Mapping[str, Any] | None) -> ConfigT:
        """The request's ``inference_config`` update merged with the manifest; InvalidInput on error."""
        raise NotImplementedError

    def prepare(self, text: str, cfg: ConfigT) -> PreparedT:
        """The model rows for one input text (``Prepared.windows``) and what ``finish`` needs."""
        raise NotImplementedError

    def read(self, row: tuple[np.ndarray, ...], window: Window, cfg: ConfigT) -> OutputT:
        """One window's graph outputs as this task's typed output; ModelError on a wrong shape."""
        raise NotImplementedError

    def result(self, prepared: PreparedT, outputs: list[OutputT], cfg: ConfigT) -> dict[str, Any]:
        """The Elasticsearch result dict from the typed outputs of every window."""
        raise NotImplementedError

    def check_rows(
        self, prepared: PreparedT, outputs: Sequence[tuple[np.ndarray, ...]], cfg: ConfigT
    ) -> None:
        """One output row per window; a task with its own Elasticsearch message overrides this."""
        check_row_count(self.name, outputs, len(prepared.windows))

    def finish(
        self, prepared: PreparedT, outputs: Sequence[tuple[np.ndarray, ...]], cfg: ConfigT
    ) -> dict[str, Any]:
        """The result for one text from its windows' graph outputs.

        ``outputs[i]`` holds the graph outputs for ``prepared.windows[i]`` in manifest output
        order, the batch axis removed and sequence axes trimmed to the window's length.

        Raises:
            ModelError: the outputs do not have the shapes the task needs. A kernel's
                ``ShapeError`` (a check :meth:`read` missed) is reported the same way, naming
                the package, since it is the model's outputs, not the request, that are wrong.
        """
        self.check_rows(prepared, outputs, cfg)
        typed = [self.read(row, window, cfg) for row, window in zip(outputs, prepared.windows, strict=True)]
        try:
            return self.result(prepared, typed, cfg)
        except _kernels.ShapeError as error:
            raise ModelError(
                f"[{self.name}] the outputs of model package [{self.package}] do not fit the task: {error}"
            ) from error


# Update keys every NLP task accepts (ELASTIC_REFERENCE.md §1.1).
COMMON_KEYS = frozenset({"results_field", "tokenization"})


def unwrap_update(task: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Accept both ``{key: value}`` and Elasticsearch's ``{"<task>": {key: value}}`` update form.

    The nested form is what ``inference_config`` in an ``_infer`` body holds; naming another task
    there is the 400 Elasticsearch gives for updating a config with the wrong task type.
    """
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise InvalidInput(f"[{task}] inference config update must be an object")
    if len(config) == 1:
        ((key, value),) = config.items()
        if key in TASKS and isinstance(value, Mapping):
            if key != task:
                raise InvalidInput(
                    f"Inference config of type [{task}] can not be updated with a inference request of type [{key}]"
                )
            return dict(value)
    return dict(config)


def check_keys(task: str, update: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Reject any key Elasticsearch does not accept in this task's update, naming it."""
    allowed = set(allowed) | COMMON_KEYS
    for key in update:
        if key not in allowed:
            raise InvalidInput(
                f"[{task}] unknown field [{key}]; the update keys for [{task}] are {sorted(allowed)}"
            )


def parse_results_field(task: str, update: Mapping[str, Any]) -> str:
    value = update.get("results_field", DEFAULT_RESULTS_FIELD)
    if value is None:
        return DEFAULT_RESULTS_FIELD
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"[{task}] [results_field] must be a non-empty string; got [{value}]")
    return value


def parse_tokenization(manifest: Manifest, update: Mapping[str, Any]) -> tuple[str, int]:
    """Merge a tokenization update into the manifest's ``truncate``/``span``, validated as ES does.

    Accepts ``{"tokenization": {"<type>": {"truncate": .., "span": ..}}}`` (the ES form, where the
    type must be the model's) and the flat ``{"tokenization": {"truncate": .., "span": ..}}`` that
    ``engine.run(tokenization=...)`` takes. Changing ``truncate`` away from ``none`` without a span
    drops the stored span, because a span is only legal with ``truncate: none``.
    """
    stored = manifest.tokenization
    truncate, span = stored.truncate, stored.span
    block = update.get("tokenization")
    if block is None:
        return truncate, span
    if not isinstance(block, Mapping):
        raise InvalidInput("[tokenization] must be an object")
    settings: Mapping[str, Any] = block
    if len(block) == 1:
        ((key, value),) = block.items()
        if key not in ("truncate", "span"):
            if not isinstance(value, Mapping):
                raise InvalidInput(f"[tokenization] [{key}] must be an object")
            if key != stored.type:
                raise InvalidInput(
                    f"Tokenization config of type [{stored.type}] can not be updated with a request of type [{key}]"
                )
            settings = value
    for key in settings:
        if key not in ("truncate", "span"):
            raise InvalidInput(
                f"[tokenization] unknown field [{key}]; only [truncate] and [span] can be updated"
            )
    if "truncate" in settings:
        truncate = settings["truncate"]
        if not isinstance(truncate, str):
            raise InvalidInput(f"[truncate] must be one of [{', '.join(TRUNCATE_MODES)}]; got [{truncate}]")
        truncate = truncate.lower()
        if "span" not in settings and truncate != "none":
            span = NO_SPAN
    if "span" in settings:
        span = settings["span"]
    validate_window_settings(truncate, span, stored.max_sequence_length)
    return truncate, span


def parse_common_update(
    task: str, manifest: Manifest, config: Mapping[str, Any] | None
) -> tuple[str, str, int]:
    """``(results_field, truncate, span)`` for the tasks whose update takes only the common keys
    (ner, text_embedding, text_expansion, pass_through)."""
    update = unwrap_update(task, config)
    check_keys(task, update, ())
    truncate, span = parse_tokenization(manifest, update)
    return parse_results_field(task, update), truncate, span


def first_window(tokenizer: Tokenizer, text: Any, cfg: TaskConfig) -> Prepared:
    """The text with only its first window: Elasticsearch reads only ``R[0]`` for ner, text_embedding,
    text_expansion and pass_through, so running later windows would cost time for nothing."""
    text = require_text(text)
    tokenized = tokenizer.single(text, cfg.truncate, cfg.span)
    return Prepared(text=text, windows=tokenized.windows[:1], is_truncated=tokenized.is_truncated)


def reject_span(task: str, span: int, with_value: bool = True) -> None:
    """Tasks that cannot recombine windows refuse a span (fill_mask, ner, zero-shot, text_embedding)."""
    if span != NO_SPAN:
        suffix = f"; configured span [{span}]" if with_value else ""
        raise InvalidInput(f"[{task}] does not support windowing long text sequences{suffix}")


def parse_int(task: str, update: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = update.get(key, default)
    if value is None:
        return default
    value = units.parse_int(value, key, owner=task, strict=True)
    if value < minimum:
        raise InvalidInput(f"[{task}] [{key}] must be greater than or equal to [{minimum}]; got [{value}]")
    return value


def parse_bool(task: str, update: Mapping[str, Any], key: str, default: bool) -> bool:
    value = update.get(key, default)
    if value is None:
        return default
    return units.parse_bool(value, key, owner=task, strict=True)


def parse_string_list(task: str, value: Any, key: str) -> tuple[str, ...]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not all(isinstance(v, str) for v in value)
    ):
        raise InvalidInput(f"[{task}] [{key}] must be a list of strings; got [{value}]")
    return tuple(value)


def require_text(text: Any) -> str:
    """The one check every task makes on its input: Elasticsearch only infers on strings."""
    if not isinstance(text, str):
        raise InvalidInput(f"Input value [{text}] for field [text_field] must be a string")
    return text


def graph_output(task: str, row: tuple[np.ndarray, ...], index: int = 0) -> np.ndarray:
    """Graph output ``index`` (manifest order) of one window, as C-contiguous float32 (what the kernels take)."""
    if len(row) <= index:
        raise ModelError(f"[{task}] expected at least [{index + 1}] outputs from the model; got [{len(row)}]")
    return np.ascontiguousarray(row[index], dtype=np.float32)


def check_row_count(task: str, outputs: Sequence[tuple[np.ndarray, ...]], expected: int) -> None:
    if len(outputs) != expected:
        raise ModelError(
            f"[{task}] expected outputs for [{expected}] rows from the model; got [{len(outputs)}]"
        )


def top_classes(names: Sequence[str], scores: Sequence[float]) -> list[dict[str, Any]]:
    """Elasticsearch's ``top_classes`` entries: ``class_probability`` and ``class_score`` are equal."""
    return [
        {"class_name": name, "class_probability": float(score), "class_score": float(score)}
        for name, score in zip(names, scores, strict=True)
    ]


def classification_result(
    results_field: str,
    names: Sequence[str],
    scores: Sequence[float],
    num_top_classes: int,
    is_truncated: bool,
) -> dict[str, Any]:
    """``predicted_value`` / ``top_classes`` / ``prediction_probability`` from classes sorted best first.

    ``num_top_classes`` -1 keeps every class, 0 omits ``top_classes`` (ES writes it only when
    non-empty), anything else keeps that many.
    """
    result: dict[str, Any] = {results_field: names[0]}
    keep = len(names) if num_top_classes < 0 else num_top_classes
    if keep > 0:
        result["top_classes"] = top_classes(names[:keep], scores[:keep])
    result["prediction_probability"] = float(scores[0])
    return with_truncation(result, is_truncated)


def with_truncation(result: dict[str, Any], is_truncated: bool) -> dict[str, Any]:
    """Elasticsearch writes ``is_truncated`` only when it is true (ELASTIC_REFERENCE.md §1.2)."""
    if is_truncated:
        result["is_truncated"] = True
    return result


def sort_descending(scores: np.ndarray) -> np.ndarray:
    """Indices by score, best first; ties keep the lower index (a stable sort), NaN last."""
    keys = np.where(np.isnan(scores), np.inf, -scores)
    return np.argsort(keys, kind="stable")
