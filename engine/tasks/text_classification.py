"""text_classification: softmax per window, mean over windows (ELASTIC_REFERENCE.md §2.4).

Default ``num_top_classes`` is 0, which omits ``top_classes``. Elasticsearch's constructor default
is -1, but a model created through the REST API (as eland does, without the field) ends up with
0, and the ``_infer`` documentation shows exactly that: only ``predicted_value`` and
``prediction_probability``. A user moving from Elasticsearch sees the same result shape here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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
    classification_result,
    graph_output,
    parse_int,
    parse_results_field,
    parse_string_list,
    parse_tokenization,
    require_text,
    sort_descending,
    unwrap_update,
)
from .outputs import Vector

NAME = "text_classification"
DEFAULT_NUM_TOP_CLASSES = 0


@dataclasses.dataclass(frozen=True)
class TextClassificationConfig(TaskConfig):
    """text_classification settings: the labels in model output order and how many to list."""

    labels: tuple[str, ...] = ()
    num_top_classes: int = DEFAULT_NUM_TOP_CLASSES


class TextClassification(TaskRunner[TextClassificationConfig, Prepared, Vector]):
    """The text_classification task (see the module docstring)."""

    name = NAME

    def parse_config(self, config: Mapping[str, Any] | None) -> TextClassificationConfig:
        update = unwrap_update(NAME, config)
        check_keys(NAME, update, {"num_top_classes", "classification_labels"})
        truncate, span = parse_tokenization(self.manifest, update)
        if update.get("classification_labels") is not None:
            labels = parse_string_list(NAME, update["classification_labels"], "classification_labels")
            error: type[InvalidInput] | type[ModelError] = InvalidInput
        else:
            labels = tuple(self.manifest.labels or ())
            error = ModelError
        if len(labels) < 2:
            raise error(f"[{NAME}] requires at least 2 [classification_labels]")
        return TextClassificationConfig(
            results_field=parse_results_field(NAME, update),
            truncate=truncate,
            span=span,
            labels=labels,
            num_top_classes=parse_int(NAME, update, "num_top_classes", DEFAULT_NUM_TOP_CLASSES, -1),
        )

    def prepare(self, text: str, cfg: TextClassificationConfig) -> Prepared:
        text = require_text(text)
        tokenized = self.tokenizer.single(text, cfg.truncate, cfg.span)
        return Prepared(text=text, windows=tokenized.windows, is_truncated=tokenized.is_truncated)

    def read(self, row: tuple[np.ndarray, ...], window: Window, cfg: TextClassificationConfig) -> Vector:
        logits = graph_output(NAME, row).reshape(-1)
        if logits.shape[0] != len(cfg.labels):
            raise ModelError(
                f"Expected exactly [{len(cfg.labels)}] values in text classification result; got [{logits.shape[0]}]"
            )
        return Vector(logits)

    def result(
        self, prepared: Prepared, outputs: list[Vector], cfg: TextClassificationConfig
    ) -> dict[str, Any]:
        probabilities = _kernels.softmax_rows(np.stack([output.values for output in outputs])).mean(axis=0)
        order = sort_descending(probabilities)
        return classification_result(
            cfg.results_field,
            [cfg.labels[i] for i in order],
            [float(probabilities[i]) for i in order],
            cfg.num_top_classes,
            prepared.is_truncated,
        )


TASK = TextClassification
