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
    check_keys,
    check_row_count,
    first_output,
    parse_results_field,
    parse_tokenization,
    reject_span,
    require_text,
    unwrap_update,
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
        update = unwrap_update(NAME, config)
        check_keys(NAME, update, ())
        truncate, span = parse_tokenization(manifest, update)
        reject_span(NAME, span, with_value=False)
        return TextEmbeddingConfig(
            results_field=parse_results_field(NAME, update),
            truncate=truncate,
            span=span,
            embedding_size=manifest.embedding_size,
        )

    def prepare(self, text: str, cfg: TaskConfig, tokenizer: Tokenizer) -> Prepared:
        text = require_text(text)
        tokenized = tokenizer.single(text, cfg.truncate, cfg.span)
        return Prepared(text=text, windows=tokenized.windows[:1], is_truncated=tokenized.is_truncated)

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
