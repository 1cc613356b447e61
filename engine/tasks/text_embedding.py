"""text_embedding: the graph already pools and normalises; return its vector (ELASTIC_REFERENCE.md §2.5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ModelError
from ..tokenization import Window
from .common import (
    Prepared,
    TaskConfig,
    TaskRunner,
    first_window,
    graph_output,
    parse_common_update,
    reject_span,
    with_truncation,
)
from .outputs import Vector

NAME = "text_embedding"


@dataclasses.dataclass(frozen=True)
class TextEmbeddingConfig(TaskConfig):
    """text_embedding settings: the manifest's embedding size, checked against the output."""

    embedding_size: int | None = None


class TextEmbedding(TaskRunner[TextEmbeddingConfig, Prepared, Vector]):
    """The text_embedding task (see the module docstring)."""

    name = NAME

    def parse_config(self, config: Mapping[str, Any] | None) -> TextEmbeddingConfig:
        results_field, truncate, span = parse_common_update(NAME, self.manifest, config)
        reject_span(NAME, span, with_value=False)
        return TextEmbeddingConfig(
            results_field=results_field,
            truncate=truncate,
            span=span,
            embedding_size=self.manifest.embedding_size,
        )

    def prepare(self, text: str, cfg: TextEmbeddingConfig) -> Prepared:
        return first_window(self.tokenizer, text, cfg)

    def read(self, row: tuple[np.ndarray, ...], window: Window, cfg: TextEmbeddingConfig) -> Vector:
        vector = graph_output(NAME, row)
        if vector.ndim != 1 or (cfg.embedding_size is not None and vector.shape[0] != cfg.embedding_size):
            expected = cfg.embedding_size if cfg.embedding_size is not None else "dim"
            raise ModelError(
                f"[{NAME}] expected one embedding of shape [{expected}] per text; got {list(vector.shape)}"
            )
        return Vector(vector)

    def result(self, prepared: Prepared, outputs: list[Vector], cfg: TextEmbeddingConfig) -> dict[str, Any]:
        # float32 widened to double, as ES's MlTextEmbeddingResults holds double[].
        vector = outputs[0].values.astype(np.float64).tolist()
        return with_truncation({cfg.results_field: vector}, prepared.is_truncated)


TASK = TextEmbedding
