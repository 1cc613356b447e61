"""Type stubs for the C extension engine._kernels (kernels/pymodule.c; contracts in kernels/kernels.h)."""

import numpy as np
from numpy.typing import NDArray
from typing_extensions import Buffer

class ShapeError(ValueError):
    """An array has the wrong dtype, ndim, layout or size, or an index argument is out of range."""

IOB_OUTSIDE: int  # iob_decode tag kind of the O label
IOB_BEGIN: int  # iob_decode tag kind of B-/B_ labels
IOB_INSIDE: int  # iob_decode tag kind of I-/I_ labels
QA_MASKED_LOGIT: float  # the logit qa_top_spans gives every position that cannot be part of an answer

def softmax_rows(logits: Buffer) -> NDArray[np.float64]:
    """Softmax of every row of a float32 [n_rows, n_cols] array, in double."""

def softmax_topk(logits: Buffer, k: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The k most probable columns per row, best first, ties to the lower index, NaN last."""

def nli_scores(logits: Buffer, entailment: int, contradiction: int, multi_label: bool) -> NDArray[np.float64]:
    """Zero-shot scores per candidate label from float32 [n_labels, n_classes] NLI logits."""

def iob_decode(
    logits: Buffer, word_ids: Buffer, tag_kind: Buffer, tag_entity: Buffer
) -> list[tuple[int, int, int, float]]:
    """NER entities as (first_token, last_token, entity_id, score), in text order."""

def qa_top_spans(
    start: Buffer, end: Buffer, seq2_start: Buffer, token_size: Buffer, max_answer_length: int, k: int
) -> list[tuple[int, int, int, float]]:
    """Answer spans as (window, start_token, end_token, score), best first."""

def sparse_extract(weights: Buffer) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Indices and values of the positive weights, heaviest first, ties to the lower index."""
