"""fill_mask: predict the vocabulary entry behind the one mask token (ELASTIC_REFERENCE.md §2.1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _kernels
from ..errors import InferenceFailed, InvalidInput, ModelError
from ..manifest import Manifest
from .common import (
    Prepared,
    TaskConfig,
    check_keys,
    check_row_count,
    first_output,
    parse_int,
    parse_results_field,
    parse_tokenization,
    reject_span,
    require_text,
    top_classes,
    unwrap_update,
    with_truncation,
)

if TYPE_CHECKING:
    from ..tokenization import Tokenizer

NAME = "fill_mask"
# Elasticsearch's FillMaskConfig.DEFAULT_NUM_RESULTS; its public _infer page says 0, the code says 5.
DEFAULT_NUM_TOP_CLASSES = 5


@dataclasses.dataclass(frozen=True)
class FillMaskConfig(TaskConfig):
    """fill_mask settings: how many predictions to list (-1 all, 0 none)."""

    num_top_classes: int = DEFAULT_NUM_TOP_CLASSES


@dataclasses.dataclass
class FillMaskPrepared(Prepared):
    """Where the mask sits, and the tokenizer that decodes predicted ids (finish has no other)."""

    mask_token: str
    mask_position: int
    tokenizer: Tokenizer


class FillMask:
    """The fill_mask task (see the module docstring)."""

    name = NAME

    def parse_config(self, manifest: Manifest, config: Mapping[str, Any]) -> FillMaskConfig:
        update = unwrap_update(NAME, config)
        check_keys(NAME, update, {"num_top_classes"})
        truncate, span = parse_tokenization(manifest, update)
        reject_span(NAME, span)
        return FillMaskConfig(
            results_field=parse_results_field(NAME, update),
            truncate=truncate,
            span=span,
            num_top_classes=parse_int(NAME, update, "num_top_classes", DEFAULT_NUM_TOP_CLASSES, -1),
        )

    def prepare(self, text: str, cfg: TaskConfig, tokenizer: Tokenizer) -> FillMaskPrepared:
        text = require_text(text)
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
        # Checked here rather than after the model ran: a mask cut off by truncation can never
        # be answered, and Elasticsearch fails such a request with this 500.
        positions = np.flatnonzero(window.input_ids == tokenizer.mask_token_id)
        if positions.size == 0:
            raise InferenceFailed(f"mask token id [{tokenizer.mask_token_id}] not found in the tokenization")
        return FillMaskPrepared(
            text=text,
            windows=[window],
            is_truncated=tokenized.is_truncated,
            mask_token=mask,
            mask_position=int(positions[0]),
            tokenizer=tokenizer,
        )

    def finish(
        self, prepared: Prepared, outputs: list[tuple[np.ndarray, ...]], cfg: TaskConfig
    ) -> dict[str, Any]:
        assert isinstance(prepared, FillMaskPrepared) and isinstance(cfg, FillMaskConfig)
        check_row_count(NAME, outputs, 1)
        logits = first_output(outputs, 0, NAME)
        if logits.ndim != 2 or logits.shape[0] <= prepared.mask_position:
            raise ModelError(
                f"[{NAME}] expected MLM logits of shape [sequence, vocabulary] covering token "
                f"[{prepared.mask_position}]; got shape {list(logits.shape)}"
            )
        # k == 0 still needs the top-1 for predicted_value (ES computes it and drops the list).
        k = -1 if cfg.num_top_classes < 0 else max(cfg.num_top_classes, 1)
        indices, probabilities = _kernels.softmax_topk(
            logits[prepared.mask_position : prepared.mask_position + 1], k
        )
        tokens = [prepared.tokenizer.decode_token(int(i)) for i in indices[0]]
        scores = [float(p) for p in probabilities[0]]
        field = cfg.results_field
        result: dict[str, Any] = {field: tokens[0]}
        if cfg.num_top_classes != 0:
            result["top_classes"] = top_classes(tokens, scores)
        result["prediction_probability"] = scores[0]
        # Java String.replace: every occurrence (prepare guarantees there is exactly one).
        result[f"{field}_sequence"] = prepared.text.replace(prepared.mask_token, tokens[0])
        return with_truncation(result, prepared.is_truncated)


TASK = FillMask()
