"""text_similarity: a cross-encoder's raw logit for (query, document) (ELASTIC_REFERENCE.md §2.7).

No sigmoid: Elasticsearch returns the raw logit, which can be negative (ES #120201); rerankers
that need positive scores map it themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InvalidInput, ModelError
from ..tokenization import Window
from .common import (
    Prepared,
    TaskConfig,
    TaskRunner,
    check_keys,
    graph_output,
    parse_results_field,
    parse_tokenization,
    require_text,
    unwrap_update,
    with_truncation,
)
from .outputs import Vector

NAME = "text_similarity"
TEXT_REQUIRED = "please provide configuration update for text_similarity task including the desired [text]"
COMBINATIONS = ("max", "mean")


@dataclasses.dataclass(frozen=True)
class TextSimilarityConfig(TaskConfig):
    """text_similarity settings: the per-request query text and how windows combine."""

    text: str = ""
    span_score_combination_function: str = "max"


class TextSimilarity(TaskRunner[TextSimilarityConfig, Prepared, Vector]):
    """The text_similarity task (see the module docstring)."""

    name = NAME

    def parse_config(self, config: Mapping[str, Any] | None) -> TextSimilarityConfig:
        update = unwrap_update(NAME, config)
        check_keys(NAME, update, {"text", "span_score_combination_function"})
        text = update.get("text")
        if text is None:
            raise InvalidInput(TEXT_REQUIRED)
        if not isinstance(text, str):
            raise InvalidInput(f"[{NAME}] [text] must be a string; got [{text}]")
        combination = update.get("span_score_combination_function") or "max"
        if not isinstance(combination, str) or combination.lower() not in COMBINATIONS:
            raise InvalidInput(
                f"[{NAME}] [span_score_combination_function] must be one of {list(COMBINATIONS)}; got [{combination}]"
            )
        truncate, span = parse_tokenization(self.manifest, update)
        return TextSimilarityConfig(
            results_field=parse_results_field(NAME, update),
            truncate=truncate,
            span=span,
            text=text,
            span_score_combination_function=combination.lower(),
        )

    def prepare(self, text: str, cfg: TextSimilarityConfig) -> Prepared:
        text = require_text(text)
        # seq1 is the query (cfg.text), seq2 the document being scored, which is what gets windowed.
        tokenized = self.tokenizer.pair(cfg.text, text, cfg.truncate, cfg.span)
        return Prepared(text=text, windows=tokenized.windows, is_truncated=tokenized.is_truncated)

    def read(self, row: tuple[np.ndarray, ...], window: Window, cfg: TextSimilarityConfig) -> Vector:
        logit = graph_output(NAME, row).reshape(-1)
        if logit.shape[0] != 1:
            raise ModelError(f"Expected exactly [1] value in {NAME} result; got [{logit.shape[0]}]")
        return Vector(logit)

    def result(self, prepared: Prepared, outputs: list[Vector], cfg: TextSimilarityConfig) -> dict[str, Any]:
        scores = [float(output.values[0]) for output in outputs]
        score = max(scores) if cfg.span_score_combination_function == "max" else sum(scores) / len(scores)
        return with_truncation({cfg.results_field: score}, prepared.is_truncated)


TASK = TextSimilarity
