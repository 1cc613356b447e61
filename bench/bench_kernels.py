"""Kernel micro-benchmarks: each engine._kernels entry point against the NumPy code a task would
otherwise run, on the shapes in bench/kernel_cases.py (which tests/kernels/test_bench_cases.py
checks give the same answers).

    python -m bench.bench_kernels [--json out.json] [--repeat N]

Prints a Markdown table of median times per call and the NumPy / kernel ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine import _kernels

from .kernel_cases import KernelCase, all_cases

#: The logit Elasticsearch gives to non-context positions before the QA softmax.
QA_MASKED_LOGIT = -10000.0


def softmax_f64(values: np.ndarray, axis: int = -1) -> np.ndarray:
    x = values.astype(np.float64)
    exps = np.exp(x - x.max(axis=axis, keepdims=True))
    return exps / exps.sum(axis=axis, keepdims=True)


def numpy_topk_argpartition(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """fill_mask the NumPy way: double softmax over the vocabulary, argpartition, sort the k."""
    probs = softmax_f64(logits)
    top = np.argpartition(-probs, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return top, np.take_along_axis(probs, top, axis=1)


def numpy_topk_argsort(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """fill_mask with a full stable argsort of the vocabulary."""
    probs = softmax_f64(logits)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return top, np.take_along_axis(probs, top, axis=1)


def numpy_iob_decode(
    logits: np.ndarray, word_ids: np.ndarray, kinds: np.ndarray, entities: np.ndarray
) -> list[tuple[int, int, int, float]]:
    """NER decoding with vectorised softmax and word means, then Elasticsearch's grouping loop."""
    probs = softmax_f64(logits)
    valid = word_ids >= 0
    previous = np.concatenate(([-2], word_ids[:-1]))
    starts = np.flatnonzero(valid & (word_ids != previous))
    if starts.size == 0:
        return []
    following = np.concatenate((word_ids[1:], [-2]))
    ends = np.flatnonzero(valid & (word_ids != following))
    compressed = np.cumsum(valid) - 1
    sums = np.add.reduceat(probs[valid], compressed[starts], axis=0)
    means = sums / (ends - starts + 1)[:, None]
    labels = means.argmax(axis=1)
    scores = means[np.arange(len(labels)), labels]
    spans = []
    word = 0
    while word < len(labels):
        if kinds[labels[word]] == 0:
            word += 1
            continue
        entity = entities[labels[word]]
        last = word + 1
        while last < len(labels) and kinds[labels[last]] != 1 and entities[labels[last]] == entity:
            last += 1
        spans.append((int(starts[word]), int(ends[last - 1]), int(entity), float(scores[word:last].mean())))
        word = last
    return spans


def numpy_qa_top_spans(
    start: np.ndarray,
    end: np.ndarray,
    seq2_start: np.ndarray,
    token_size: np.ndarray,
    max_answer_length: int,
    k: int,
) -> list[tuple[int, int, int, float]]:
    """QA span search with a masked softmax and an outer product of start and end probabilities."""
    n_windows, seq_len = start.shape
    positions = np.arange(seq_len)
    windows, flat_scores = [], []
    for window in range(n_windows):
        first, size = int(seq2_start[window]), int(token_size[window])
        keep = (positions == 0) | ((positions >= first) & (positions < size - 1))
        start_probs = softmax_f64(np.where(keep, start[window], QA_MASKED_LOGIT))
        end_probs = softmax_f64(np.where(keep, end[window], QA_MASKED_LOGIT))
        start_probs[0] = end_probs[0] = 0.0
        s, e = positions[:, None], positions[None, :]
        valid = (s >= first) & (s < size) & (e >= s) & (e < s + max_answer_length) & (e < size)
        if k <= 1:
            valid &= start_probs[:, None] != 0.0
        windows.append(window)
        flat_scores.append(np.where(valid, np.outer(start_probs, end_probs), -1.0).ravel())
    if not flat_scores:
        return []
    scores = np.concatenate(flat_scores)
    if k <= 1:
        best = int(np.argmax(scores))
        chosen = [best] if scores[best] > 0.0 else []
    else:
        order = np.argsort(-scores, kind="stable")[:k]
        chosen = [int(i) for i in order if scores[i] >= 0.0]
    per_window = seq_len * seq_len
    return [
        (windows[i // per_window], (i % per_window) // seq_len, i % seq_len, float(scores[i])) for i in chosen
    ]


def numpy_sparse_extract(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positive = np.flatnonzero(weights > 0)
    order = positive[np.argsort(-weights[positive], kind="stable")]
    return order, weights[order]


def numpy_nli_scores(
    logits: np.ndarray, entailment: int, contradiction: int, multi_label: bool
) -> np.ndarray:
    if multi_label:
        return softmax_f64(logits[:, [entailment, contradiction]])[:, 0]
    return softmax_f64(logits[:, entailment])


#: The NumPy equivalents per kernel, with a label for the table.
NUMPY_EQUIVALENTS: dict[str, list[tuple[str, Callable[..., Any]]]] = {
    "softmax_topk": [("argpartition", numpy_topk_argpartition), ("argsort", numpy_topk_argsort)],
    "iob_decode": [("vectorised + loop", numpy_iob_decode)],
    "qa_top_spans": [("outer product", numpy_qa_top_spans)],
    "sparse_extract": [("argsort", numpy_sparse_extract)],
    "nli_scores": [("softmax", numpy_nli_scores)],
}


@dataclass
class Row:
    case: str
    baseline: str
    kernel_us: float
    numpy_us: float

    @property
    def ratio(self) -> float:
        return self.numpy_us / self.kernel_us


def median_seconds(function: Callable[..., Any], args: tuple[Any, ...], repeat: int) -> float:
    """Median over `repeat` runs of the time per call, each run long enough to time (autorange)."""
    timer = timeit.Timer(lambda: function(*args))
    number, _ = timer.autorange()
    return statistics.median(timer.repeat(repeat, number)) / number


def measure(cases: list[KernelCase], repeat: int) -> list[Row]:
    rows = []
    for case in cases:
        kernel_s = median_seconds(getattr(_kernels, case.kernel), case.args, repeat)
        for label, equivalent in NUMPY_EQUIVALENTS[case.kernel]:
            numpy_s = median_seconds(equivalent, case.args, repeat)
            rows.append(Row(case.description, label, kernel_s * 1e6, numpy_s * 1e6))
    return rows


def markdown(rows: list[Row]) -> str:
    lines = [
        "| case | NumPy baseline | kernel (us) | NumPy (us) | NumPy / kernel |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {row.case} | {row.baseline} | {row.kernel_us:,.1f} | {row.numpy_us:,.1f} | {row.ratio:,.1f}x |"
        for row in rows
    ]
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "allowed_cpus": affinity,
        "threads": "kernels run on the calling thread with the GIL released; NumPy as configured",
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_kernels", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--json", type=Path, help="also write the results and the environment to this file")
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed runs per measurement (the median is kept)"
    )
    arguments = parser.parse_args(argv)
    rows = measure(all_cases(), arguments.repeat)
    print(markdown(rows))
    if arguments.json:
        payload = {
            "environment": environment(),
            "results": [{**vars(row), "ratio": row.ratio} for row in rows],
        }
        arguments.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.bench_kernels"))
