"""text_classification: softmax per window, mean over windows (ELASTIC_REFERENCE.md §2.4).

Default ``num_top_classes`` is 0, which omits ``top_classes``. Elasticsearch's constructor default
is -1, but a model created through the REST API (as eland does, without the field) ends up with
0, and the ``_infer`` documentation shows exactly that: only ``predicted_value`` and
``prediction_probability``. A user moving from Elasticsearch sees the same result shape here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _kernels
from ..errors import InvalidInput, ModelError
from ..manifest import Manifest
from .common import (
    Prepared,
    TaskConfig,
    check_keys,
    check_row_count,
    classification_result,
    first_output,
    parse_int,
    parse_results_field,
    parse_string_list,
    parse_tokenization,
    require_text,
    sort_descending,
    unwrap_update,
)

if TYPE_CHECKING:
    from ..tokenization import Tokenizer

NAME = "text_classification"
DEFAULT_NUM_TOP_CLASSES = 0


@dataclasses.dataclass(frozen=True)
class TextClassificationConfig(TaskConfig):
    """text_classification settings: the labels in model output order and how many to list."""

    labels: tuple[str, ...] = ()
    num_top_classes: int = DEFAULT_NUM_TOP_CLASSES


class TextClassification:
    """The text_classification task (see the module docstring)."""

    name = NAME

    def parse_config(self, manifest: Manifest, config: Mapping[str, Any]) -> TextClassificationConfig:
        update = unwrap_update(NAME, config)
        check_keys(NAME, update, {"num_top_classes", "classification_labels"})
        truncate, span = parse_tokenization(manifest, update)
        if update.get("classification_labels") is not None:
            labels = parse_string_list(NAME, update["classification_labels"], "classification_labels")
            error: type[InvalidInput] | type[ModelError] = InvalidInput
        else:
            labels = tuple(manifest.labels or ())
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

    def prepare(self, text: str, cfg: TaskConfig, tokenizer: Tokenizer) -> Prepared:
        text = require_text(text)
        tokenized = tokenizer.single(text, cfg.truncate, cfg.span)
        return Prepared(text=text, windows=tokenized.windows, is_truncated=tokenized.is_truncated)

    def finish(
        self, prepared: Prepared, outputs: list[tuple[np.ndarray, ...]], cfg: TaskConfig
    ) -> dict[str, Any]:
        assert isinstance(cfg, TextClassificationConfig)
        check_row_count(NAME, outputs, len(prepared.windows))
        rows = [first_output(outputs, i, NAME).reshape(-1) for i in range(len(outputs))]
        for row in rows:
            if row.shape[0] != len(cfg.labels):
                raise ModelError(
                    f"Expected exactly [{len(cfg.labels)}] values in text classification result; got [{row.shape[0]}]"
                )
        probabilities = _kernels.softmax_rows(np.stack(rows)).mean(axis=0)
        order = sort_descending(probabilities)
        return classification_result(
            cfg.results_field,
            [cfg.labels[i] for i in order],
            [float(probabilities[i]) for i in order],
            cfg.num_top_classes,
            prepared.is_truncated,
        )


TASK = TextClassification()
