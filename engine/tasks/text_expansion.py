"""text_expansion: sparse term weights keyed by vocabulary entry (ELASTIC_REFERENCE.md §2.6).

The graph already max-pools ``log(1 + relu(logits))`` over the tokens (DESIGN.md), so this task
only keeps the positive weights, best first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _kernels
from ..errors import ModelError
from ..manifest import Manifest
from .common import (
    Prepared,
    TaskConfig,
    check_row_count,
    first_output,
    first_window,
    parse_common_update,
    with_truncation,
)

if TYPE_CHECKING:
    from ..tokenization import Tokenizer

NAME = "text_expansion"


@dataclasses.dataclass(frozen=True)
class TextExpansionConfig(TaskConfig):
    """TextExpansion has only the common settings."""


@dataclasses.dataclass
class TextExpansionPrepared(Prepared):
    """The tokenizer that names the vocabulary entries of the weights (finish has no other)."""

    tokenizer: Tokenizer


class TextExpansion:
    """The text_expansion task (see the module docstring)."""

    name = NAME

    def parse_config(self, manifest: Manifest, config: Mapping[str, Any]) -> TextExpansionConfig:
        results_field, truncate, span = parse_common_update(NAME, manifest, config)
        return TextExpansionConfig(results_field=results_field, truncate=truncate, span=span)

    def prepare(self, text: str, cfg: TaskConfig, tokenizer: Tokenizer) -> TextExpansionPrepared:
        text, windows, is_truncated = first_window(text, cfg, tokenizer)
        return TextExpansionPrepared(
            text=text, windows=windows, is_truncated=is_truncated, tokenizer=tokenizer
        )

    def finish(
        self, prepared: Prepared, outputs: list[tuple[np.ndarray, ...]], cfg: TaskConfig
    ) -> dict[str, Any]:
        assert isinstance(prepared, TextExpansionPrepared)
        check_row_count(NAME, outputs, 1)
        weights = first_output(outputs, 0, NAME)
        if weights.ndim != 1:
            raise ModelError(
                f"[{NAME}] expected pooled term weights of shape [vocabulary] per text; got {list(weights.shape)}"
            )
        indices, values = _kernels.sparse_extract(weights)
        tokenizer = prepared.tokenizer
        # ES stores the weights as Java floats and writes them with Float.toString, i.e. the
        # shortest decimal that round-trips the float32; str(np.float32) prints the same digits.
        # Two entries can meet after the '.' rewrite ("a.b" and "a__b"); the first, heavier one wins.
        expansion: dict[str, float] = {}
        for index, value in zip(indices, values.astype(np.float32), strict=True):
            expansion.setdefault(tokenizer.id_to_token(int(index)).replace(".", "__"), float(str(value)))
        return with_truncation({cfg.results_field: expansion}, prepared.is_truncated)


TASK = TextExpansion()
