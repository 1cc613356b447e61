"""Throughput against sequence length, per system, with the share of the int8 limit: where each one stops scaling.

    python -m bench.bench_lengths --package DIR --source HF_DIR [--task text_embedding] [--words 8,32,96,192,380]
                                  [--limit 128] [--repeats 3] [--json OUT] [--plot PNG]

For every length the texts are the built-in passages joined and cut to that many words (so every text of
a point has the same length, and the points differ only in length); the engine (2 allocations × 1 thread,
its default budgets) and the baseline a user would run for the task (bench/baselines.py: sentence-transformers
for embeddings, the transformers pipeline otherwise; PyTorch fp32 on every allowed core) run the same texts,
medians of ``--repeats``, then the limit (bench/limits.py) is measured and every point is also a share of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from .bench_sizes import Case, texts_for


def sweep(package: str, source: str, task: str, words: list[int], limit: int, repeats: int,
          task_config: dict[str, Any]) -> list[dict[str, Any]]:
    from .baselines import baselines_for, run_child
    from .limits import attach_limits
    from .throughput import BenchConfig, bench_engine

    baseline = baselines_for(task)[0]
    config = BenchConfig(2, 1, 2048, 4, 32)
    points = []
    with tempfile.TemporaryDirectory(prefix="bench-lengths-") as scratch:
        for count in words:
            texts = texts_for(Case("sweep", "", task, "", "builtin-passages", words=count), limit)
            corpus = Path(scratch, f"{count}.txt")
            corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
            rows = [m.to_json() for m in bench_engine(package, task, texts, [config], repeats, task_config,
                                                       progress=lambda line: print(line, file=sys.stderr))]
            rows.append(run_child(baseline, source, task, str(corpus), limit, repeats, task_config))
            meta = attach_limits(rows, package, texts, task_config, {config.label(): (2, 1)},
                                 progress=lambda line: print(line, file=sys.stderr))
            tokens = rows[0]["tokens_per_s"] / rows[0]["docs_per_s"]
            points.append({"words": count, "tokens_per_text": round(tokens, 1), "limit": meta, "rows": rows})
            print(f"  {count} words ({tokens:.0f} tokens): " + ", ".join(
                f"{row['system']} {row['docs_per_s']:.1f} docs/s {row['limit_share']:.0%}" for row in rows),
                file=sys.stderr)
    return points


def markdown(points: list[dict[str, Any]]) -> str:
    lines = ["| words | tokens per text | system | docs/s | GOP/s | share of int8 limit | engine ÷ baseline |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for point in points:
        engine_row, baseline_row = point["rows"]
        ratio = engine_row["docs_per_s"] / baseline_row["docs_per_s"]
        for row in point["rows"]:
            lines.append(f"| {point['words']} | {point['tokens_per_text']:.0f} | {row['system']} | "
                         f"{row['docs_per_s']:.1f} | {row['gops']:.1f} | {row['limit_share']:.1%} | "
                         f"{f'{ratio:.2f}×' if row is engine_row else ''} |")
    return "\n".join(lines)


def plot(points: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [point["tokens_per_text"] for point in points]
    systems = [row["system"] for row in points[0]["rows"]]
    figure, (speed, share) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, system in enumerate(systems):
        speed.plot(tokens, [point["rows"][index]["docs_per_s"] for point in points], marker="o", label=system)
        share.plot(tokens, [100 * point["rows"][index]["limit_share"] for point in points], marker="o", label=system)
    speed.set_xscale("log")
    speed.set_yscale("log")
    speed.set_xlabel("tokens per text")
    speed.set_ylabel("docs/s (median of repeats)")
    share.set_xscale("log")
    share.set_xlabel("tokens per text")
    share.set_ylabel("% of the int8 GEMM limit (same run)")
    for axis in (speed, share):
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_lengths", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", required=True)
    parser.add_argument("--source", required=True, help="the Hugging Face folder the package came from")
    parser.add_argument("--task", default="text_embedding")
    parser.add_argument("--words", default="8,32,96,192,380")
    parser.add_argument("--limit", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="{}")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    points = sweep(args.package, args.source, args.task, [int(w) for w in args.words.split(",")], args.limit,
                   args.repeats, json.loads(args.config))
    print(markdown(points))
    if args.json:
        args.json.write_text(json.dumps(points, indent=2) + "\n")
    if args.plot:
        plot(points, args.plot, f"{args.task} · {Path(args.package).name} · engine 2x1 vs {points[0]['rows'][1]['system']}")
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.bench_lengths"))
