"""text_embedding: the graph already pools and normalises; return its vector (ELASTIC_REFERENCE.md §2.5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError
from ..manifest import Manifest
from .common import (
    Prepared,
    TaskConfig,
    check_row_count,
    first_output,
    first_window,
    parse_common_update,
    reject_span,
    with_truncation,
)

if TYPE_CHECKING:
    from ..tokenization import Tokenizer

NAME = "text_embedding"


@dataclasses.dataclass(frozen=True)
class TextEmbeddingConfig(TaskConfig):
    """text_embedding settings: the manifest's embedding size, checked against the output."""

    embedding_size: int | None = None


class TextEmbedding:
    """The text_embedding task (see the module docstring)."""

    name = NAME

    def parse_config(self, manifest: Manifest, config: Mapping[str, Any]) -> TextEmbeddingConfig:
        results_field, truncate, span = parse_common_update(NAME, manifest, config)
        reject_span(NAME, span, with_value=False)
        return TextEmbeddingConfig(
            results_field=results_field,
            truncate=truncate,
            span=span,
            embedding_size=manifest.embedding_size,
        )

    def prepare(self, text: str, cfg: TaskConfig, tokenizer: Tokenizer) -> Prepared:
        text, windows, is_truncated = first_window(text, cfg, tokenizer)
        return Prepared(text=text, windows=windows, is_truncated=is_truncated)

    def finish(
        self, prepared: Prepared, outputs: list[tuple[np.ndarray, ...]], cfg: TaskConfig
    ) -> dict[str, Any]:
        assert isinstance(cfg, TextEmbeddingConfig)
        check_row_count(NAME, outputs, 1)
        vector = first_output(outputs, 0, NAME)
        if vector.ndim != 1 or (cfg.embedding_size is not None and vector.shape[0] != cfg.embedding_size):
            expected = cfg.embedding_size if cfg.embedding_size is not None else "dim"
            raise ModelError(
                f"[{NAME}] expected one embedding of shape [{expected}] per text; got {list(vector.shape)}"
            )
        # float32 widened to double, as ES's MlTextEmbeddingResults holds double[].
        return with_truncation({cfg.results_field: vector.astype(np.float64).tolist()}, prepared.is_truncated)


TASK = TextEmbedding()
