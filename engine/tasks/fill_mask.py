"""fill_mask: predict the vocabulary entry behind the one mask token (ELASTIC_REFERENCE.md §2.1)."""

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
    graph_output,
    parse_int,
    parse_results_field,
    parse_tokenization,
    reject_span,
    require_text,
    top_classes,
    unwrap_update,
    with_truncation,
)
from .outputs import TokenScores

NAME = "fill_mask"
# Elasticsearch's FillMaskConfig.DEFAULT_NUM_RESULTS; its public _infer page says 0, the code says 5.
DEFAULT_NUM_TOP_CLASSES = 5


@dataclasses.dataclass(frozen=True)
class FillMaskConfig(TaskConfig):
    """fill_mask settings: how many predictions to list (-1 all, 0 none)."""

    num_top_classes: int = DEFAULT_NUM_TOP_CLASSES


@dataclasses.dataclass
class FillMaskPrepared(Prepared):
    """Where the mask sits: the one token whose logits ``finish`` reads."""

    mask_token: str
    mask_position: int


class FillMask(TaskRunner[FillMaskConfig, FillMaskPrepared, TokenScores]):
    """The fill_mask task (see the module docstring)."""

    name = NAME

    def parse_config(self, config: Mapping[str, Any] | None) -> FillMaskConfig:
        update = unwrap_update(NAME, config)
        check_keys(NAME, update, {"num_top_classes"})
        truncate, span = parse_tokenization(self.manifest, update)
        reject_span(NAME, span)
        return FillMaskConfig(
            results_field=parse_results_field(NAME, update),
            truncate=truncate,
            span=span,
            num_top_classes=parse_int(NAME, update, "num_top_classes", DEFAULT_NUM_TOP_CLASSES, -1),
        )

    def prepare(self, text: str, cfg: FillMaskConfig) -> FillMaskPrepared:
        text = require_text(text)
        tokenizer = self.tokenizer
        mask = tokenizer.mask_token
        if tokenizer.mask_token_id < 0:
            # A model/vocabulary mismatch, not a bad request: Elasticsearch answers 409 here.
            raise ModelError(f"[{NAME}] the model's vocabulary has no mask token [{mask}]")
        first = text.find(mask)
        if first < 0:
            raise InvalidInput(f"no {mask} token could be found in the input")
        if text.find(mask, first + len(mask)) >= 0:
            raise InvalidInput(f"only one {mask} token should exist in the input")
        tokenized = tokenizer.single(text, cfg.truncate, cfg.span)
        window = tokenized.windows[0]
        # Checked here rather than after the model ran: a mask cut off by truncation can never be
        # answered. Elasticsearch fails this with a 500 naming the token id; it is the input's doing, so
        # it is a 400 that says why.
        positions = np.flatnonzero(window.input_ids == tokenizer.mask_token_id)
        if positions.size == 0:
            raise InvalidInput(
                f"the {mask} token fell past [max_sequence_length] [{tokenizer.config.max_sequence_length}] "
                f"and was truncated away; put it earlier in the text or shorten the text before it"
            )
        return FillMaskPrepared(
            text=text,
            windows=[window],
            is_truncated=tokenized.is_truncated,
            mask_token=mask,
            mask_position=int(positions[0]),
        )

    def read(self, row: tuple[np.ndarray, ...], window: Window, cfg: FillMaskConfig) -> TokenScores:
        logits = graph_output(NAME, row)
        if logits.ndim != 2 or logits.shape[0] != len(window.input_ids):
            raise ModelError(
                f"[{NAME}] expected MLM logits of shape [sequence, vocabulary] for the "
                f"[{len(window.input_ids)}] tokens of the text; got shape {list(logits.shape)}"
            )
        return TokenScores(logits)

    def result(
        self, prepared: FillMaskPrepared, outputs: list[TokenScores], cfg: FillMaskConfig
    ) -> dict[str, Any]:
        logits = outputs[0].logits  # one window: prepare never windows a fill_mask text
        # k == 0 still needs the top-1 for predicted_value (ES computes it and drops the list).
        k = -1 if cfg.num_top_classes < 0 else max(cfg.num_top_classes, 1)
        indices, probabilities = _kernels.softmax_topk(
            logits[prepared.mask_position : prepared.mask_position + 1], k
        )
        tokens = [self.tokenizer.decode_token(int(i)) for i in indices[0]]
        scores = [float(p) for p in probabilities[0]]
        field = cfg.results_field
        result: dict[str, Any] = {field: tokens[0]}
        if cfg.num_top_classes != 0:
            result["top_classes"] = top_classes(tokens, scores)
        result["prediction_probability"] = scores[0]
        # Java String.replace: every occurrence (prepare guarantees there is exactly one).
        result[f"{field}_sequence"] = prepared.text.replace(prepared.mask_token, tokens[0])
        return with_truncation(result, prepared.is_truncated)


TASK = FillMask
