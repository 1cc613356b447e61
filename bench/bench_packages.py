"""Export table for every real model we have: size fp32 vs int8, nodes kept in fp32, agreement, and
single-thread latency of the naive (unfused) fp32, fused fp32 and guarded int8 graphs, side by side.

    python -m bench.bench_packages [--work DIR]

Models: SPLADE-tiny (text_expansion, fill_mask) and the five ../shared/models task models. MiniLM and
all-mpnet-base-v2 have their own, more detailed table (``python -m bench.bench_export``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .accuracy import model_dir, sst2_rows

CASES = [
    ("splade", "text_expansion"),
    ("splade", "fill_mask"),
    ("tiny-ner-conll", "ner"),
    ("tiny-sst2", "text_classification"),
    ("tiny-nli", "zero_shot_classification"),
    ("tiny-sts-crossencoder", "text_similarity"),
    ("tiny-squad", "question_answering"),
]


def _feeds(package: Path, sentences: list[str]) -> dict[str, np.ndarray]:
    from engine.batch import collate
    from engine.package import load_package

    loaded = load_package(package)
    windows = [t.windows[0] for t in loaded.tokenizer.single_batch(sentences, "first", -1)]
    return collate(windows, loaded.manifest.inputs, loaded.tokenizer.pad_token_id).inputs


def _latency_ms(graph: Path, feeds: dict[str, np.ndarray], repeats: int = 15) -> float:
    from engine.session import create_session

    session = create_session(graph, 1)
    session.run(None, feeds)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="keep the packages here (default: a temp dir)")
    args = parser.parse_args(argv)
    from engine.manifest import read_manifest
    from exporters import export

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-packages-"))
    sentences = [sentence for sentence, _ in sst2_rows(1, 16)]
    print("| model | task | fp32 MB | int8 MB | kept fp32 | agreement (metric) | naive fp32 ms | fused fp32 ms "
          "| int8 ms |")
    print("|---|---|---:|---:|---|---|---:|---:|---:|")
    for model, task in CASES:
        source = model_dir(model)
        paths = {}
        for label, options in (("naive", {"quantize": "none", "fuse": False}), ("fp32", {"quantize": "none"}),
                               ("int8", {"quantize": "int8"})):
            paths[label] = export(str(source), work / f"{model}-{task}-{label}", task=task, force=True,
                                  progress=False, **options)
        feeds = _feeds(paths["fp32"], [s.replace(".", " [MASK].", 1) if task == "fill_mask" else s
                                       for s in sentences])
        manifest = read_manifest(paths["int8"])
        block = manifest.quantization
        agreement = block.get("agreement") or block.get("int8_rejected", {}).get("agreement", {})
        kept = block.get("kept_fp32", [])
        sizes = {label: (path / "model.onnx").stat().st_size / 2**20 for label, path in paths.items()}
        latency = {label: _latency_ms(path / "model.onnx", feeds) for label, path in paths.items()}
        print(f"| {model} | {task} | {sizes['fp32']:.1f} | {sizes['int8']:.1f} | {len(kept)} of "
              f"{block.get('candidates', '?')} | {agreement.get('value', float('nan')):.4f} "
              f"({agreement.get('metric', '?')}) | {latency['naive']:.2f} | {latency['fp32']:.2f} | "
              f"{latency['int8']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.bench_packages"))
