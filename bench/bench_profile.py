"""Where a batch's time goes: ONNX Runtime's per-operator profile plus the engine's own steps around it.

    python -m bench.bench_profile --package DIR [--task ner] [--corpus builtin-sentences] [--limit 512]
                                  [--threads 1] [--batch-tokens 2048] [--rows 32] [--json OUT]

Batches are formed by the engine's own scheduler (:class:`engine.scheduler.RequestQueue`, the
deployment's budgets), then run twice on one session of ``--threads`` threads: once plain, timing
each step the deployment does per batch (``prepare`` = tokenise, per text; ``collate``;
``session.run``; ``split_outputs``; ``finish`` = the task's post-processing, per text), and once with
ORT's profiler on (``engine.session``'s ``profile_file_prefix``) for the time of every operator type.
``run − operators`` is ORT's own per-run overhead (input copies, allocation, thread dispatch).
The GEMM share is what :mod:`bench.limits` prices; everything else is what a faster engine must cut.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GEMM_OPS = {"MatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "Gemm",
            "QGemm", "FusedMatMul", "FusedGemm"}
ATTENTION_OPS = {"Attention", "QAttention", "MultiHeadAttention"}


def scheduled_rows(prepared: list[Any], max_batch_tokens: int, max_batch_rows: int,
                   grouping_window: int = 256) -> list[list[tuple[int, int]]]:
    """``(text index, window)`` of every batch the deployment would run, in order, all texts queued
    at once (the batcher groups by length, so a batch's rows are not in text order)."""
    from engine.scheduler import Entry, Request, RequestQueue

    queue = RequestQueue(len(prepared) + 1, max_batch_tokens, grouping_window, max_batch_rows)
    request = Request(len(prepared), None)
    queue.offer([Entry(request, index, item.windows, 1, None) for index, item in enumerate(prepared)])
    batches = []
    while rows := queue.take_batch():
        batches.append([(entry.index, row) for entry, row in rows])
    return batches


def windows_of(prepared: list[Any], order: list[list[tuple[int, int]]]) -> list[list[Any]]:
    """The windows of each batch of ``order`` (:func:`scheduled_rows`)."""
    return [[prepared[index].windows[row] for index, row in batch] for batch in order]


def scheduled_batches(prepared: list[Any], max_batch_tokens: int, max_batch_rows: int,
                      grouping_window: int = 256) -> list[list[Any]]:
    """The windows of every batch the deployment would run, in order, all texts queued at once."""
    return windows_of(prepared, scheduled_rows(prepared, max_batch_tokens, max_batch_rows, grouping_window))


def operator_times(profile: Path) -> dict[str, float]:
    """Microseconds per operator type, summed over every run in an ORT profile trace."""
    totals: dict[str, float] = collections.defaultdict(float)
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            totals[event.get("args", {}).get("op_name", "?")] += float(event.get("dur", 0))
    return dict(totals)


def profile_package(package: str, texts: list[str], task_config: dict[str, Any], threads: int,
                    max_batch_tokens: int, max_batch_rows: int) -> dict[str, Any]:
    from engine.batch import collate, split_outputs
    from engine.package import load_package
    from engine.session import create_session

    loaded = load_package(package)
    runner, manifest = loaded.runner, loaded.manifest
    cfg = runner.parse_config(dict(task_config))
    names_axes = [(output["name"], output["axes"]) for output in manifest.outputs]
    pad = loaded.tokenizer.pad_token_id
    started = time.perf_counter()
    prepared = [runner.prepare(text, cfg) for text in texts]
    prepare_s = time.perf_counter() - started
    order = scheduled_rows(prepared, max_batch_tokens, max_batch_rows)
    batches = windows_of(prepared, order)
    session = create_session(loaded.graph_path, threads)
    collated = [collate(windows, manifest.inputs, pad) for windows in batches]
    session.run(manifest.output_names, collated[0].inputs)  # warm-up
    steps: dict[str, float] = collections.defaultdict(float)
    outputs = []  # in batch order; ``order`` says whose
    for windows in batches:
        t0 = time.perf_counter()
        batch = collate(windows, manifest.inputs, pad)
        t1 = time.perf_counter()
        raw = session.run(manifest.output_names, batch.inputs)
        t2 = time.perf_counter()
        outputs.extend(split_outputs(raw, names_axes, batch.lengths))
        t3 = time.perf_counter()
        steps["collate"] += t1 - t0
        steps["session.run"] += t2 - t1
        steps["split_outputs"] += t3 - t2
    by_row = dict(zip((key for batch in order for key in batch), outputs, strict=True))
    started = time.perf_counter()
    for index, item in enumerate(prepared):
        runner.finish(item, [by_row[index, row] for row in range(len(item.windows))], cfg)
    steps["finish"] = time.perf_counter() - started
    steps["prepare"] = prepare_s
    with tempfile.TemporaryDirectory(prefix="engine-profile-") as scratch:
        profiled = create_session(loaded.graph_path, threads, options={"profile_file_prefix": str(Path(scratch, "ort"))})
        run_started = time.perf_counter()
        for batch in collated:
            profiled.run(manifest.output_names, batch.inputs)
        profiled_run_s = time.perf_counter() - run_started
        operators = operator_times(Path(profiled.end_profiling()))
    operator_s = sum(operators.values()) / 1e6
    rows = sum(len(windows) for windows in batches)
    real = sum(len(window.input_ids) for windows in batches for window in windows)
    padded = sum(len(windows) * max(len(window.input_ids) for window in windows) for windows in batches)
    return {
        "package": package, "task": manifest.task, "texts": len(texts), "batches": len(batches), "rows": rows,
        "threads": threads, "max_batch_tokens": max_batch_tokens, "max_batch_rows": max_batch_rows,
        "mean_rows_per_batch": rows / len(batches), "mean_real_tokens_per_row": real / rows,
        "padding_efficiency": real / padded,
        "steps_ms_per_batch": {name: 1000 * seconds / len(batches) for name, seconds in steps.items()},
        "profiled_run_ms_per_batch": 1000 * profiled_run_s / len(batches),
        "operators_ms_per_batch": {op: us / 1000 / len(batches)
                                   for op, us in sorted(operators.items(), key=lambda item: -item[1])},
        "ort_overhead_ms_per_batch": 1000 * (profiled_run_s - operator_s) / len(batches),
        "gemm_share_of_operators": sum(us for op, us in operators.items() if op in GEMM_OPS) / max(1.0, sum(operators.values())),
        "attention_share_of_operators": sum(us for op, us in operators.items() if op in ATTENTION_OPS)
        / max(1.0, sum(operators.values())),
    }


def markdown(result: dict[str, Any]) -> str:
    steps = result["steps_ms_per_batch"]
    total = sum(steps.values())
    lines = [f"{result['texts']} texts → {result['batches']} batches, {result['mean_rows_per_batch']:.1f} rows × "
             f"{result['mean_real_tokens_per_row']:.1f} real tokens per row (padding efficiency "
             f"{result['padding_efficiency']:.2f}), {result['threads']} thread(s)", "",
             "| step | ms per batch | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {ms:.2f} | {ms / total:.1%} |" for name, ms in steps.items()]
    operators = result["operators_ms_per_batch"]
    op_total = sum(operators.values()) + max(0.0, result["ort_overhead_ms_per_batch"])
    lines += ["", f"Profiled session.run: {result['profiled_run_ms_per_batch']:.2f} ms per batch; GEMM operators "
              f"{result['gemm_share_of_operators']:.1%} and fused attention {result['attention_share_of_operators']:.1%} "
              "of operator time.", "", "| operator | ms per batch | share of run |", "|---|---:|---:|"]
    lines += [f"| {op} | {ms:.3f} | {ms / op_total:.1%} |" for op, ms in operators.items()]
    lines.append(f"| (ORT per-run overhead) | {result['ort_overhead_ms_per_batch']:.3f} | "
                 f"{result['ort_overhead_ms_per_batch'] / op_total:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from engine.config import DEFAULT_MAX_BATCH_TOKENS

    from .corpus import DEFAULT_CORPUS, load_corpus

    parser = argparse.ArgumentParser(prog="python -m bench.bench_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", required=True)
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS)
    parser.add_argument("--rows", type=int, default=32, help="max_batch_rows")
    parser.add_argument("--config", default="{}", help="task options as JSON")
    parser.add_argument("--repeats", type=int, default=1, help="profile this many times; medians per step")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    texts = load_corpus(args.corpus, args.limit)
    results = [profile_package(args.package, texts, json.loads(args.config), args.threads, args.batch_tokens,
                               args.rows) for _ in range(args.repeats)]
    result = results[0]
    if len(results) > 1:
        for key in ("steps_ms_per_batch", "operators_ms_per_batch"):
            result[key] = {name: statistics.median(r[key].get(name, 0.0) for r in results) for name in result[key]}
        for key in ("profiled_run_ms_per_batch", "ort_overhead_ms_per_batch", "gemm_share_of_operators",
                    "attention_share_of_operators"):
            result[key] = statistics.median(r[key] for r in results)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.bench_profile"))
