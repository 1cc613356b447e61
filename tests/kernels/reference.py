"""Plain-Python oracles for the C kernels: loops, lists and the math module, written from
ELASTIC_REFERENCE.md (§2.1, §2.2, §2.3, §2.6, §2.8) and the special-value rules in kernels/kernels.h.

They share no code with the kernels and favour obviousness over speed. Every function takes plain
Python lists (``ndarray.tolist()`` of the float32 inputs, which is exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The logit Elasticsearch gives to question/separator/padding positions before the QA softmax.
QA_MASKED_LOGIT = -10000.0


def softmax(values: list[float]) -> list[float]:
    """Softmax with the kernels' special-value rules.

    NaN counts as -inf; when the largest value is infinite the entries equal to it share the mass;
    a row without any number is all zeros.
    """
    numbers = [v for v in values if not math.isnan(v)]
    if not numbers:
        return [0.0] * len(values)
    top = max(numbers)
    if math.isinf(top):
        ties = sum(1 for v in values if v == top)
        return [1.0 / ties if v == top else 0.0 for v in values]
    exps = [0.0 if math.isnan(v) else math.exp(v - top) for v in values]
    total = math.fsum(exps)
    return [e / total for e in exps]


def rank_order(values: list[float]) -> list[int]:
    """Indices by value descending, ties to the lower index, NaN after everything (even -inf)."""
    return sorted(
        range(len(values)),
        key=lambda i: (math.isnan(values[i]), 0.0 if math.isnan(values[i]) else -values[i], i),
    )


def softmax_topk(rows: list[list[float]], k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Per row: the k best indices (all when k < 0) and their softmax probabilities."""
    all_indices, all_probs = [], []
    for row in rows:
        kept = len(row) if k < 0 else min(k, len(row))
        probs = softmax(row)
        order = rank_order(row)[:kept]
        all_indices.append(order)
        all_probs.append([probs[i] for i in order])
    return all_indices, all_probs


def nli_scores(
    rows: list[list[float]], entailment: int, contradiction: int, multi_label: bool
) -> list[float]:
    """ES §2.8: softmax across labels of the entailment logit, or per label over (entail, contra)."""
    if multi_label:
        return [softmax([row[entailment], row[contradiction]])[0] for row in rows]
    return softmax([row[entailment] for row in rows])


@dataclass
class Word:
    first_token: int
    last_token: int
    label: int
    score: float
    probabilities: list[float]


def iob_words(logits: list[list[float]], word_ids: list[int]) -> list[Word]:
    """ES §2.2 steps 1-2: softmax per token, mean over each word's tokens, first argmax."""
    words: list[Word] = []
    token = 0
    while token < len(word_ids):
        if word_ids[token] < 0:
            token += 1
            continue
        last = token
        while last + 1 < len(word_ids) and word_ids[last + 1] == word_ids[token]:
            last += 1
        token_probs = [softmax(logits[t]) for t in range(token, last + 1)]
        count = last - token + 1
        mean = []
        for label in range(len(logits[token])):
            total = 0.0
            for probs in token_probs:
                total += probs[label]
            mean.append(total / count)
        best = 0
        for label in range(len(mean)):
            if mean[label] > mean[best]:
                best = label
        words.append(Word(token, last, best, mean[best], mean))
        token = last + 1
    return words


def iob_decode(
    logits: list[list[float]], word_ids: list[int], tag_kind: list[int], tag_entity: list[int]
) -> list[tuple[int, int, int, float]]:
    """ES §2.2 step 3, written the way Elasticsearch's groupTaggedTokens walks the words."""
    words = iob_words(logits, word_ids)
    entities = []
    start = 0
    while start < len(words):
        word = words[start]
        if tag_kind[word.label] == 0:
            start += 1
            continue
        entity = tag_entity[word.label]
        end = start + 1
        score_sum = word.score
        while end < len(words):
            following = words[end]
            if tag_kind[following.label] == 1 or tag_entity[following.label] != entity:
                break
            score_sum += following.score
            end += 1
        entities.append((word.first_token, words[end - 1].last_token, entity, score_sum / (end - start)))
        start = end
    return entities


def qa_probabilities(logits: list[float], seq2_start: int, token_size: int) -> list[float]:
    """ES §2.3 steps 1-3: mask, softmax, zero CLS.

    Elasticsearch writes the softmax as exp(v - log(sum(exp(v)))). That is the same value as
    exp(v - max) / sum(exp(v - max)), which this oracle uses because the literal form loses about
    log2(|v|) bits once the logits are large (v - lse subtracts two nearly equal numbers).
    """
    masked = [
        v if i == 0 or seq2_start <= i < token_size - 1 else QA_MASKED_LOGIT for i, v in enumerate(logits)
    ]
    probs = softmax(masked)
    if probs:
        probs[0] = 0.0
    return probs


def qa_candidates(
    starts: list[list[float]],
    ends: list[list[float]],
    seq2_starts: list[int],
    token_sizes: list[int],
    max_answer_length: int,
) -> list[tuple[int, int, int, float]]:
    """Every candidate span (window, s, e, score) in scan order, per ES §2.3 step 4."""
    spans = []
    for window, (start_row, end_row) in enumerate(zip(starts, ends, strict=True)):
        seq2_start, token_size = seq2_starts[window], token_sizes[window]
        start_probs = qa_probabilities(start_row, seq2_start, token_size)
        end_probs = qa_probabilities(end_row, seq2_start, token_size)
        for s in range(seq2_start, token_size):
            for e in range(s, min(s + max_answer_length, token_size)):
                spans.append((window, s, e, start_probs[s] * end_probs[e]))
    return spans


def qa_top_spans(
    starts: list[list[float]],
    ends: list[list[float]],
    seq2_starts: list[int],
    token_sizes: list[int],
    max_answer_length: int,
    k: int,
) -> list[tuple[int, int, int, float]]:
    """k <= 1: ES's gather-one loop (skip zero start probability, strict improvement over 0.0).
    k > 1: the k best candidates, equal scores in scan order."""
    candidates = qa_candidates(starts, ends, seq2_starts, token_sizes, max_answer_length)
    if k > 1:
        return sorted(candidates, key=lambda span: -span[3])[:k]
    start_probs = [
        qa_probabilities(row, seq2_start, token_size)
        for row, seq2_start, token_size in zip(starts, seq2_starts, token_sizes, strict=True)
    ]
    best = None
    best_score = 0.0
    for window, s, e, score in candidates:
        if start_probs[window][s] == 0.0:
            continue
        if score > best_score:
            best, best_score = (window, s, e, score), score
    return [] if best is None else [best]


def sparse_extract(weights: list[float]) -> tuple[list[int], list[float]]:
    """ES §2.6: entries with weight > 0, heaviest first, ties to the lower index."""
    chosen = sorted((i for i, w in enumerate(weights) if w > 0.0), key=lambda i: (-weights[i], i))
    return chosen, [weights[i] for i in chosen]
