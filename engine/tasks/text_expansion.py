"""text_expansion: sparse term weights keyed by vocabulary entry (ELASTIC_REFERENCE.md §2.6).

The graph already max-pools ``log(1 + relu(logits))`` over the tokens (DESIGN.md), so this task
only keeps the positive weights, best first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _kernels
from ..errors import ModelError
from ..tokenization import Window
from .common import (
    Prepared,
    TaskConfig,
    TaskRunner,
    first_window,
    graph_output,
    parse_common_update,
    with_truncation,
)
from .outputs import Vector

NAME = "text_expansion"


@dataclasses.dataclass(frozen=True)
class TextExpansionConfig(TaskConfig):
    """TextExpansion has only the common settings."""


class TextExpansion(TaskRunner[TextExpansionConfig, Prepared, Vector]):
    """The text_expansion task (see the module docstring)."""

    name = NAME

    def parse_config(self, config: Mapping[str, Any] | None) -> TextExpansionConfig:
        results_field, truncate, span = parse_common_update(NAME, self.manifest, config)
        return TextExpansionConfig(results_field=results_field, truncate=truncate, span=span)

    def prepare(self, text: str, cfg: TextExpansionConfig) -> Prepared:
        return first_window(self.tokenizer, text, cfg)

    def read(self, row: tuple[np.ndarray, ...], window: Window, cfg: TextExpansionConfig) -> Vector:
        weights = graph_output(NAME, row)
        if weights.ndim != 1:
            raise ModelError(
                f"[{NAME}] expected pooled term weights of shape [vocabulary] per text; got {list(weights.shape)}"
            )
        return Vector(weights)

    def result(self, prepared: Prepared, outputs: list[Vector], cfg: TextExpansionConfig) -> dict[str, Any]:
        indices, values = _kernels.sparse_extract(outputs[0].values)
        # ES stores the weights as Java floats and writes them with Float.toString, i.e. the
        # shortest decimal that round-trips the float32; str(np.float32) prints the same digits.
        # Two entries can meet after the '.' rewrite ("a.b" and "a__b"); the first, heavier one wins.
        expansion: dict[str, float] = {}
        for index, value in zip(indices, values.astype(np.float32), strict=True):
            token = self.tokenizer.id_to_token(int(index)).replace(".", "__")
            expansion.setdefault(token, float(str(value)))
        return with_truncation({cfg.results_field: expansion}, prepared.is_truncated)


TASK = TextExpansion
