"""Elasticsearch's NLP post-processing written out in plain Python: the oracle the tests compare with.

Deliberately naive (lists, loops, ``math``) and independent of ``engine._kernels`` and of
``engine.tasks``, following ELASTIC_REFERENCE.md §2 step by step, so that a bug in the engine's
vectorised or C code cannot hide behind the same bug here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

QA_MASK = -10000.0


def softmax(values: Sequence[float]) -> list[float]:
    """Max-subtracted softmax in double (ES NlpHelpers.convertToProbabilitiesBySoftMax)."""
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def ranked(scores: Sequence[float]) -> list[int]:
    """Indices best first; ties to the lower index."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def fill_mask(
    mask_logits: Sequence[float], num_top_classes: int, decode: Callable[[int], str], text: str, mask: str
) -> dict:
    probabilities = softmax(mask_logits)
    order = ranked(probabilities)
    keep = len(order) if num_top_classes < 0 else max(num_top_classes, 1)
    best = decode(order[0])
    result: dict = {"predicted_value": best}
    if num_top_classes != 0:
        result["top_classes"] = [
            {"class_name": decode(i), "class_probability": probabilities[i], "class_score": probabilities[i]}
            for i in order[:keep]
        ]
    result["prediction_probability"] = probabilities[order[0]]
    result["predicted_value_sequence"] = text.replace(mask, best)
    return result


def iob_tag(label: str) -> tuple[str, bool, bool]:
    """(entity, is_beginning, is_outside) as IobTag.fromTag reads a label."""
    upper = label.upper()
    if upper == "O":
        return "O", False, True
    entity = upper[2:] if upper[:2] in ("B-", "I-", "B_", "I_") else upper
    return entity, upper.startswith("B"), False


def ner(
    logits: Sequence[Sequence[float]],
    word_ids: Sequence[int],
    offsets: Sequence[Sequence[int]],
    labels: Sequence[str],
    text: str,
    do_lower_case: bool,
) -> dict:
    """NerProcessor: softmax per token, mean over a word's tokens, argmax, then IOB grouping."""
    words: list[tuple[int, int, int, float]] = []  # (start, end, label, score)
    index = 0
    while index < len(word_ids):
        if word_ids[index] < 0:
            index += 1
            continue
        last = index
        while last + 1 < len(word_ids) and word_ids[last + 1] == word_ids[index]:
            last += 1
        rows = [softmax(logits[t]) for t in range(index, last + 1)]
        mean = [sum(row[j] for row in rows) / len(rows) for j in range(len(labels))]
        best = max(range(len(labels)), key=lambda j: (mean[j], -j))
        words.append((offsets[index][0], offsets[last][1], best, mean[best]))
        index = last + 1
    source = text.lower() if do_lower_case else text
    entities = []
    position = 0
    while position < len(words):
        entity, _, outside = iob_tag(labels[words[position][2]])
        if outside:
            position += 1
            continue
        group = [words[position]]
        position += 1
        while position < len(words):
            next_entity, beginning, next_outside = iob_tag(labels[words[position][2]])
            if next_outside or beginning or next_entity != entity:
                break
            group.append(words[position])
            position += 1
        start, end = group[0][0], group[-1][1]
        entities.append(
            {
                "entity": source[start:end],
                "class_name": entity,
                "class_probability": sum(word[3] for word in group) / len(group),
                "start_pos": start,
                "end_pos": end,
            }
        )
    annotated = ""
    cursor = 0
    for entity in entities:
        piece = text[entity["start_pos"] : entity["end_pos"]]
        annotated += (
            text[cursor : entity["start_pos"]]
            + f"[{piece}]({entity['class_name']}&{piece.replace(' ', '+')})"
        )
        cursor = entity["end_pos"]
    annotated += text[cursor:]
    return {"predicted_value": annotated, "entities": entities}


def qa_spans(
    starts: Sequence[Sequence[float]],
    ends: Sequence[Sequence[float]],
    seq2_starts: Sequence[int],
    token_sizes: Sequence[int],
    max_answer_length: int,
    num_top_classes: int,
) -> list[tuple[int, int, int, float]]:
    """QuestionAnsweringProcessor: masked log-sum-exp softmax, CLS zeroed, best or global top-k spans."""
    candidates: list[tuple[float, int, int, int]] = []
    best: tuple[float, int, int, int] | None = None
    for window, (start_row, end_row) in enumerate(zip(starts, ends, strict=True)):
        seq2_start, size = seq2_starts[window], token_sizes[window]

        def masked_softmax(
            row: Sequence[float], seq2_start: int = seq2_start, size: int = size
        ) -> list[float]:
            masked = [
                v if k == 0 or seq2_start <= k < size - 1 else QA_MASK for k, v in enumerate(row[:size])
            ]
            log_total = math.log(sum(math.exp(v) for v in masked))
            probabilities = [math.exp(v - log_total) for v in masked]
            probabilities[0] = 0.0
            return probabilities

        start_p, end_p = masked_softmax(start_row), masked_softmax(end_row)
        for s in range(seq2_start, size):
            if num_top_classes <= 1 and start_p[s] == 0.0:
                continue
            for e in range(s, min(s + max_answer_length, size)):
                score = start_p[s] * end_p[e]
                entry = (score, window, s, e)
                if num_top_classes <= 1:
                    if score > (best[0] if best else 0.0):
                        best = entry
                else:
                    candidates.append(entry)
    if num_top_classes <= 1:
        return [] if best is None else [(best[1], best[2], best[3], best[0])]
    candidates.sort(key=lambda c: -c[0])
    return [(w, s, e, score) for score, w, s, e in candidates[:num_top_classes]]


def text_classification(
    window_logits: Sequence[Sequence[float]], labels: Sequence[str], num_top_classes: int
) -> dict:
    rows = [softmax(row) for row in window_logits]
    mean = [sum(row[j] for row in rows) / len(rows) for j in range(len(labels))]
    return classification(mean, labels, num_top_classes)


def classification(scores: Sequence[float], labels: Sequence[str], num_top_classes: int) -> dict:
    order = ranked(scores)
    result: dict = {"predicted_value": labels[order[0]]}
    keep = len(order) if num_top_classes < 0 else num_top_classes
    if keep > 0:
        result["top_classes"] = [
            {"class_name": labels[i], "class_probability": scores[i], "class_score": scores[i]}
            for i in order[:keep]
        ]
    result["prediction_probability"] = scores[order[0]]
    return result


def zero_shot(
    logits: Sequence[Sequence[float]],
    labels: Sequence[str],
    entailment: int,
    contradiction: int,
    multi_label: bool,
) -> dict:
    if multi_label:
        scores = [softmax([row[entailment], row[contradiction]])[0] for row in logits]
    else:
        scores = softmax([row[entailment] for row in logits])
    return classification(scores, labels, -1)


def text_similarity(window_logits: Sequence[float], combination: str) -> float:
    return max(window_logits) if combination == "max" else sum(window_logits) / len(window_logits)


def text_expansion(weights: Sequence[float], token: Callable[[int], str]) -> dict[str, float]:
    order = sorted((i for i, w in enumerate(weights) if w > 0.0), key=lambda i: (-weights[i], i))
    result: dict[str, float] = {}
    for i in order:
        result.setdefault(token(i).replace(".", "__"), float(weights[i]))
    return result
