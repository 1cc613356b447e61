"""zero_shot_classification: NLI entailment of one hypothesis per label (ELASTIC_REFERENCE.md §2.8)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import _kernels
from ..errors import InvalidInput, ModelError
from ..tokenization import Window
from .common import (
    Prepared,
    TaskConfig,
    TaskRunner,
    check_keys,
    check_row_count,
    classification_result,
    graph_output,
    parse_bool,
    parse_results_field,
    parse_string_list,
    parse_tokenization,
    reject_span,
    require_text,
    sort_descending,
    unwrap_update,
)
from .outputs import Vector

NAME = "zero_shot_classification"
DEFAULT_HYPOTHESIS_TEMPLATE = "This example is {}."
NLI_LABELS = ("entailment", "neutral", "contradiction")
LABELS_REQUIRED = (
    "stored configuration has no [labels] defined, supplied inference_config update must supply [labels]"
)


@dataclasses.dataclass(frozen=True)
class ZeroShotClassificationConfig(TaskConfig):
    """zero-shot settings: candidate labels, template, and where the model puts entailment."""

    labels: tuple[str, ...] = ()
    multi_label: bool = False
    hypothesis_template: str = DEFAULT_HYPOTHESIS_TEMPLATE
    entailment_index: int = 0
    contradiction_index: int = 2
    nli_label_count: int = 3


def nli_indices(classification_labels: list[str] | None) -> tuple[int, int]:
    """Where the model puts entailment and contradiction, from its lower-cased NLI labels.

    Raises:
        ModelError: the package's labels are not exactly entailment, neutral and contradiction.
    """
    lowered = [label.lower() for label in classification_labels or ()]
    if len(lowered) != 3 or sorted(lowered) != sorted(NLI_LABELS):
        raise ModelError(
            f"[{NAME}] [classification_labels] must contain exactly the three values {list(NLI_LABELS)}; "
            f"got {list(classification_labels or ())}"
        )
    return lowered.index("entailment"), lowered.index("contradiction")


class ZeroShotClassification(TaskRunner[ZeroShotClassificationConfig, Prepared, Vector]):
    """The zero_shot_classification task (see the module docstring)."""

    name = NAME

    def parse_config(self, config: Mapping[str, Any] | None) -> ZeroShotClassificationConfig:
        manifest = self.manifest
        update = unwrap_update(NAME, config)
        check_keys(NAME, update, {"labels", "multi_label"})
        truncate, span = parse_tokenization(manifest, update)
        reject_span(NAME, span)
        options = manifest.task_options
        if update.get("labels") is not None:
            labels = parse_string_list(NAME, update["labels"], "labels")
            if not labels:
                raise InvalidInput("[labels] must not be empty")
        elif options.get("labels"):
            labels = parse_string_list(NAME, options["labels"], "labels")
        else:
            raise InvalidInput(LABELS_REQUIRED)
        template = options.get("hypothesis_template") or DEFAULT_HYPOTHESIS_TEMPLATE
        entailment, contradiction = nli_indices(manifest.labels)
        return ZeroShotClassificationConfig(
            results_field=parse_results_field(NAME, update),
            truncate=truncate,
            span=span,
            labels=labels,
            multi_label=parse_bool(NAME, update, "multi_label", bool(options.get("multi_label", False))),
            hypothesis_template=template,
            entailment_index=entailment,
            contradiction_index=contradiction,
            nli_label_count=len(manifest.labels or ()),
        )

    def prepare(self, text: str, cfg: ZeroShotClassificationConfig) -> Prepared:
        text = require_text(text)
        # Plain replacement, not str.format: a label or template may hold other braces.
        hypotheses = [cfg.hypothesis_template.replace("{}", label) for label in cfg.labels]
        tokenized = self.tokenizer.pairs(text, hypotheses, cfg.truncate)
        return Prepared(
            text=text,
            windows=[pair.windows[0] for pair in tokenized],
            is_truncated=any(pair.is_truncated for pair in tokenized),
        )

    def check_rows(
        self, prepared: Prepared, outputs: Sequence[tuple[np.ndarray, ...]], cfg: ZeroShotClassificationConfig
    ) -> None:
        # One row per candidate label, with Elasticsearch's message when the count is off.
        if len(outputs) != len(cfg.labels):
            raise ModelError(
                f"Expected exactly [{len(cfg.labels)}] values in zero shot classification result; got [{len(outputs)}]"
            )
        check_row_count(NAME, outputs, len(prepared.windows))

    def read(self, row: tuple[np.ndarray, ...], window: Window, cfg: ZeroShotClassificationConfig) -> Vector:
        logits = graph_output(NAME, row).reshape(-1)
        if logits.shape[0] != cfg.nli_label_count:
            raise ModelError(
                f"Expected exactly [{cfg.nli_label_count}] values in inner zero shot classification result; "
                f"got [{logits.shape[0]}]"
            )
        return Vector(logits)

    def result(
        self, prepared: Prepared, outputs: list[Vector], cfg: ZeroShotClassificationConfig
    ) -> dict[str, Any]:
        scores = _kernels.nli_scores(
            np.stack([output.values for output in outputs]),
            cfg.entailment_index,
            cfg.contradiction_index,
            cfg.multi_label,
        )
        order = sort_descending(scores)
        return classification_result(
            cfg.results_field,
            [cfg.labels[i] for i in order],
            [float(scores[i]) for i in order],
            -1,
            prepared.is_truncated,
        )


TASK = ZeroShotClassification
