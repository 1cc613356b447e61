"""Write a benchmark's results as JSON, a Markdown table and a PNG plot."""

from __future__ import annotations

import json
import platform
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
    lines = ["| system | configuration | docs/s | tokens/s | p50 ms | p95 ms | p99 ms | CPU | peak RSS MB | engine best ÷ this |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = best / row["docs_per_s"] if row["docs_per_s"] else float("nan")
        lines.append(
            f"| {row['system']} | {row['config']} | {row['docs_per_s']:.1f} | {row['tokens_per_s']:.0f} | "
            f"{row['latency_ms_p50']:.1f} | {row['latency_ms_p95']:.1f} | {row['latency_ms_p99']:.1f} | "
            f"{row['cpu_utilisation']:.0%} | {row['peak_rss_mb']:.0f} | {ratio:.2f}× |"
        )
    return "\n".join(lines)


def write_reports(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.md", out / "bench.png"]
    paths[0].write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    header = "\n".join(f"- {key}: {value}" for key, value in meta.items())
    paths[1].write_text(f"{header}\n\n{markdown_table(rows)}\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{row['system']}\n{row['config']}" for row in rows]
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4.5))
    axis.bar(range(len(rows)), [row["docs_per_s"] for row in rows],
             color=["tab:blue" if row["system"] == "engine" else "tab:gray" for row in rows])
    axis.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("docs/s")
    axis.set_title(f"{meta.get('task')} · {meta.get('model')} · {meta.get('machine', {}).get('allowed_cores')} cores")
    figure.tight_layout()
    figure.savefig(paths[2], dpi=110)
    plt.close(figure)
    return paths
