"""Write a benchmark's results as JSON, a Markdown table and a PNG plot."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: they mean nothing without it."""
    import onnxruntime

    from .throughput import allowed_cores

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "allowed_cores": allowed_cores(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__}


def markdown_table(rows: list[dict[str, Any]], reference: str = "engine") -> str:
    best = max((row["docs_per_s"] for row in rows if row["system"] == reference), default=0.0)
    limits = all("limit_share" in row for row in rows)  # bench.limits: the GEMM rate of the same run
    extra = " GOP/s | share of int8 limit | share of package limit |" if limits else ""
    lines = ["| system | configuration | docs/s | tokens/s | p50 ms | p95 ms | p99 ms | CPU | peak RSS MB | engine best ÷ this |"
             + extra, "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if limits else "")]
    for row in rows:
        ratio = best / row["docs_per_s"] if row["docs_per_s"] else float("nan")
        shares = (f" {row['gops']:.1f} | {row['limit_share']:.0%} | {row['ideal_share']:.0%} |" if limits else "")
        lines.append(
            f"| {row['system']} | {row['config']} | {row['docs_per_s']:.1f} | {row['tokens_per_s']:.0f} | "
            f"{row['latency_ms_p50']:.1f} | {row['latency_ms_p95']:.1f} | {row['latency_ms_p99']:.1f} | "
            f"{row['cpu_utilisation']:.0%} | {row['peak_rss_mb']:.0f} | {ratio:.2f}× |" + shares
        )
    return "\n".join(lines)


def limit_summary(limit: dict[str, Any]) -> str:
    """One line for the Markdown header: the rates each configuration was priced at, and the work per doc."""
    rates = "; ".join(f"{entry['allocations']}x{entry['threads']} int8 {entry['int8_gops']} GOPS, "
                      f"fp32 {entry['fp32_gflops']} GFLOP/s" for entry in limit["limits"])
    return (f"{rates} (ONNX Runtime GEMMs at the model's shapes, {limit['limits'][0]['tokens']} tokens); "
            f"{limit['gop_per_doc']} GOP per doc, {limit['int8_share_of_ops']:.0%} of it in int8 nodes")


def model_label(meta: dict[str, Any]) -> str:
    """The model as a reader knows it: the source's hub id, or the last two parts of a local path (never
    a temporary directory's full path)."""
    name = str(meta.get("source") or meta.get("model") or "model")
    if name.startswith(("/", "~", ".")):
        parts = Path(name).parts
        name = "/".join(parts[-2:]) if parts[-1] == "model" else parts[-1]
    return name


def write_reports(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.md", out / "bench.png"]
    paths[0].write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    header = "\n".join(f"- {key}: {limit_summary(value) if key == 'limit' else value}" for key, value in meta.items())
    paths[1].write_text(f"{header}\n\n{markdown_table(rows)}\n")
    plot(meta, rows, paths[2])
    return paths


ENGINE_COLOUR, BASELINE_COLOUR = "tab:blue", "tab:gray"


def plot(meta: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    """Two panels over the same configurations: throughput (median of the repeats, whiskers from the
    slowest to the fastest repeat) and request latency (p50 bar, p95 and p99 marks), engine and
    baselines told apart by a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    positions = list(range(len(rows)))
    labels = [f"{row['system']}\n{row['config']}" for row in rows]
    colours = [ENGINE_COLOUR if row["system"] == "engine" else BASELINE_COLOUR for row in rows]
    figure, (speed, latency) = plt.subplots(2, 1, figsize=(max(7, 0.9 * len(rows)), 8), sharex=True)
    medians = [row["docs_per_s"] for row in rows]
    spread = [[median - min(row.get("repeats") or [median]) for median, row in zip(medians, rows, strict=True)],
              [max(row.get("repeats") or [median]) - median for median, row in zip(medians, rows, strict=True)]]
    speed.bar(positions, medians, color=colours, yerr=spread, capsize=3, ecolor="black")
    speed.set_ylabel("docs/s, median of repeats")
    kinds = [Patch(color=ENGINE_COLOUR, label="engine"),
             Line2D([], [], color="black", marker="|", linestyle="", markersize=10,
                    label="whiskers: slowest and fastest repeat")]
    if any(row["system"] != "engine" for row in rows):
        kinds.append(Patch(color=BASELINE_COLOUR, label="baseline (what a user would otherwise run)"))
    speed.legend(handles=kinds, loc="upper left", fontsize=8)
    speed.set_ylim(0, 1.4 * max(max(row.get("repeats") or [row["docs_per_s"]]) for row in rows))  # room for the legend
    latency.bar(positions, [row["latency_ms_p50"] for row in rows], color=colours, alpha=0.8)
    latency.scatter(positions, [row["latency_ms_p95"] for row in rows], marker="_", s=200, color="black", zorder=3)
    latency.scatter(positions, [row["latency_ms_p99"] for row in rows], marker="v", s=25, color="tab:red", zorder=3)
    latency.set_ylabel("request latency, ms")
    latency.set_ylim(0, 1.35 * max(row["latency_ms_p99"] for row in rows))
    latency.legend(handles=[Patch(color="lightgray", label="p50 (bar)"),
                            Line2D([], [], color="black", marker="_", linestyle="", markersize=12, label="p95"),
                            Line2D([], [], color="tab:red", marker="v", linestyle="", label="p99")],
                   loc="upper left", fontsize=8)
    latency.set_xticks(positions, labels, rotation=60, ha="right", fontsize=7)
    machine = meta.get("machine", {})
    speed.set_title(f"{meta.get('task')} · {model_label(meta)} · corpus {meta.get('corpus')} "
                    f"({meta.get('texts')} texts) · {machine.get('allowed_cores')} cores · "
                    f"{meta.get('repeats')} repeats", fontsize=9)
    latency.set_xlabel("configuration: allocations x threads, max_batch_tokens, client threads, texts per request",
                       fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report RESULT.json [...]``: draw each saved result's plot again, beside it."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("results", nargs="+", type=Path, help="bench.json files (engine bench --out writes them)")
    for result in parser.parse_args(argv).results:
        saved = json.loads(result.read_text())
        plot(saved["meta"], saved["results"], result.with_suffix(".png"))
        print(f"wrote {result.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.report"))
