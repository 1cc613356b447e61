"""Kernel inputs at the sizes the tasks see, measured by bench/bench_kernels.py and checked by
tests/kernels/test_bench_cases.py, so that whatever the benchmark measures is also tested
(../shared/docs/STYLE.md, rule 18). They live in bench/ because bench ships and tests import bench,
never the other way round."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: The default ES NER label map [O, B_MISC, I_MISC, B_PER, I_PER, B_ORG, I_ORG, B_LOC, I_LOC].
NER_KINDS = np.array([0, 1, 2, 1, 2, 1, 2, 1, 2], dtype=np.int8)
NER_ENTITIES = np.array([-1, 0, 0, 1, 1, 2, 2, 3, 3], dtype=np.int32)


@dataclass(frozen=True)
class KernelCase:
    """One benchmarked call: the kernel's name and its positional arguments."""

    name: str
    description: str
    kernel: str
    args: tuple[Any, ...]


def fill_mask_case(seed: int = 0, vocabulary: int = 250_002, k: int = 5) -> KernelCase:
    """XLM-R sized MLM logits at the mask position (ELASTIC_REFERENCE.md §2.1)."""
    logits = np.random.default_rng(seed).standard_normal((1, vocabulary)).astype(np.float32) * 3
    return KernelCase("fill_mask", f"top-{k} of a {vocabulary:,} vocabulary", "softmax_topk", (logits, k))


def ner_case(seed: int = 0, n_tokens: int = 128) -> KernelCase:
    """Token logits of a 128-token sentence with the 9 CoNLL labels; every third word has 2 pieces."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n_tokens, len(NER_KINDS))).astype(np.float32) * 3
    logits[:, 0] += 2.0  # mostly O, as in real text
    word_ids = np.empty(n_tokens, dtype=np.int32)
    word, token = 0, 1
    word_ids[0] = word_ids[-1] = -1
    while token < n_tokens - 1:
        pieces = 2 if word % 3 == 0 else 1
        word_ids[token : min(token + pieces, n_tokens - 1)] = word
        token += pieces
        word += 1
    return KernelCase(
        "ner",
        f"IOB decode, {n_tokens} tokens x 9 labels",
        "iob_decode",
        (logits, word_ids, NER_KINDS, NER_ENTITIES),
    )


def qa_case(seed: int = 0, seq_len: int = 384, n_windows: int = 1, k: int = 1) -> KernelCase:
    """SQuAD-sized windows: 12 question tokens, the context after them, max_answer_length 15."""
    rng = np.random.default_rng(seed)
    start = rng.standard_normal((n_windows, seq_len)).astype(np.float32) * 3
    end = rng.standard_normal((n_windows, seq_len)).astype(np.float32) * 3
    seq2_start = np.full(n_windows, 14, dtype=np.int64)
    token_size = np.full(n_windows, seq_len, dtype=np.int64)
    description = f"QA spans, {n_windows} x {seq_len} tokens, top-{k}"
    return KernelCase("qa", description, "qa_top_spans", (start, end, seq2_start, token_size, 15, k))


def sparse_case(seed: int = 0, vocabulary: int = 30_522, active: float = 0.01) -> KernelCase:
    """SPLADE-like term weights: about 1% of the BERT vocabulary positive."""
    rng = np.random.default_rng(seed)
    weights = np.zeros(vocabulary, dtype=np.float32)
    chosen = rng.random(vocabulary) < active
    weights[chosen] = rng.gamma(2.0, 0.5, int(chosen.sum())).astype(np.float32)
    return KernelCase("sparse", f"sparse extract, {vocabulary:,} weights", "sparse_extract", (weights,))


def nli_case(seed: int = 0, n_labels: int = 10, multi_label: bool = False) -> KernelCase:
    """Zero-shot over 10 candidate labels: one [entailment, neutral, contradiction] row each."""
    logits = np.random.default_rng(seed).standard_normal((n_labels, 3)).astype(np.float32) * 3
    mode = "multi-label" if multi_label else "single-label"
    return KernelCase(
        "nli", f"NLI scores, {n_labels} labels, {mode}", "nli_scores", (logits, 0, 2, multi_label)
    )


def all_cases(seed: int = 0) -> list[KernelCase]:
    return [
        fill_mask_case(seed),
        ner_case(seed),
        qa_case(seed),
        qa_case(seed, n_windows=4, k=5),
        sparse_case(seed),
        nli_case(seed),
        nli_case(seed, multi_label=True),
    ]
