"""The FastEmbed baseline embeds what sentence-transformers embeds: a speed ratio against it means something
only if it runs the same model with the same pooling (bench/baselines.py builds its local graph itself)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastembed", reason="needs fastembed: pip install -e .[bench]")
pytest.importorskip("sentence_transformers", reason="needs sentence-transformers: pip install -e .[export]")

TEXTS = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog near the old river bank at dawn.",
    "ONNX Runtime runs transformer encoders on CPUs with int8 GEMMs.",
]


def test_fastembed_matches_sentence_transformers(minilm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sentence_transformers import SentenceTransformer

    from bench.baselines import KINDS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fastembed = np.stack(KINDS["fastembed"](str(minilm_dir), "text_embedding", {})(TEXTS))
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS)
    cosine = (fastembed * reference).sum(1) / np.linalg.norm(fastembed, axis=1) / np.linalg.norm(reference, axis=1)
    assert fastembed.shape == reference.shape
    assert cosine.min() >= 0.999, cosine
