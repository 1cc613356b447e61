"""What the accuracy guard's fp32 nodes cost: a package's graph quantised with every node int8.

    python -m bench.all_int8 FP32_PACKAGE OUT

``FP32_PACKAGE`` is an ``engine export --quantize none`` package (the fused fp32 graph). ``OUT`` gets the
same package with the graph quantised by the exporter's own quantiser (static activation scales
calibrated on the same packaged calibration text) with the guard's thresholds at 0, so no node stays
fp32; its manifest records the agreement it reached. It is a measurement device for benchmarks (how
fast the package would be if the guard kept nothing), not a package to ship: the guard keeps nodes
fp32 because all-int8 misses the agreement target.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any


class _CalibrationTokenizer:
    """The two things the exporter's calibration feeds read of its tokenizer, from a package's files."""

    def __init__(self, package: Path, manifest: Any) -> None:
        from transformers import PreTrainedTokenizerFast

        self.tokenization = manifest.tokenization
        self._hf = PreTrainedTokenizerFast(tokenizer_file=str(package / manifest.tokenizer),
                                           pad_token=manifest.special_tokens["pad"][0])

    def encode(self, texts: list[str], pairs: list[str] | None, max_length: int) -> dict[str, Any]:
        return dict(self._hf(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="np"))


def all_int8(fp32_package: Path, out: Path) -> dict[str, Any]:
    from engine.manifest import read_manifest, write_manifest
    from exporters import registry
    from exporters.export import _calibration_feeds
    from exporters.quantize import quantize_with_guard

    manifest = read_manifest(fp32_package)
    tokenizer = _CalibrationTokenizer(fp32_package, manifest)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(fp32_package, out)
    inputs = tuple(manifest.inputs)
    block = quantize_with_guard(
        fp32_package / manifest.graph, out / manifest.graph,
        _calibration_feeds(tokenizer, manifest.task, inputs, "choose"),  # type: ignore[arg-type]
        registry.QUANTIZATION_METRICS[manifest.task], 0.0, progress=False,
        held_out=_calibration_feeds(tokenizer, manifest.task, inputs, "held_out"),  # type: ignore[arg-type]
        tail_threshold=0.0)
    write_manifest(out, dataclasses.replace(manifest, quantization={**block, "note": "bench.all_int8: no node kept fp32"}))
    return block


if __name__ == "__main__":
    result = all_int8(Path(sys.argv[1]), Path(sys.argv[2]))
    print({key: result[key] for key in ("kept_fp32", "agreement")})
