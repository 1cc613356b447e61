"""sentence-transformers bi-encoders: Pooling modes, Dense and Normalize inside the graph, checked
against the sentence-transformers library itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from engine.manifest import read_manifest
from exporters import export
from tests.tiny_models import build_tiny_sentence_transformer

SENTENCES = ["Short.", "A somewhat longer sentence about rivers, mountains and trains.", "Three words here"]
CASES = [
    ("bert", ("cls",), None, False),
    ("bert", ("max",), 24, True),
    ("bert", ("mean_sqrt_len",), None, True),
    ("bert", ("cls", "mean"), 16, False),
    ("mpnet", ("mean",), 24, True),
    ("xlm-roberta", ("max", "mean"), None, True),
]


@pytest.mark.parametrize(("architecture", "pooling", "dense", "normalize"), CASES)
def test_pipeline_matches_sentence_transformers(
    architecture: str,
    pooling: tuple[str, ...],
    dense: int | None,
    normalize: bool,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    source = build_tiny_sentence_transformer(
        architecture, tmp_path_factory.getbasetemp() / "st-models", pooling, dense, normalize
    )
    package = export(source, tmp_path / "pkg", quantize="none", fuse=False, progress=False)
    manifest = read_manifest(package)
    assert manifest.task == "text_embedding"  # detected from modules.json
    assert manifest.task_options["pooling"] == [
        mode for mode in ("cls", "max", "mean", "mean_sqrt_len") if mode in pooling
    ]
    width = dense or 32 * len(pooling)
    assert manifest.embedding_size == width
    encoded = AutoTokenizer.from_pretrained(str(source))(SENTENCES, padding=True, return_tensors="np")
    session = onnxruntime.InferenceSession(str(package / manifest.graph), providers=["CPUExecutionProvider"])
    (embeddings,) = session.run(None, {name: encoded[name].astype(np.int64) for name in manifest.inputs})
    reference = SentenceTransformer(str(source), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    assert embeddings.shape == reference.shape == (len(SENTENCES), width)
    assert np.max(np.abs(embeddings - reference)) / np.max(np.abs(reference)) <= 1e-3
    norms = np.linalg.norm(embeddings, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize
