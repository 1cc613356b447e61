"""exporters/attention_bias.py: MPNet's and MobileBERT's attention fused into MultiHeadAttention, checked
against PyTorch on models whose attention matters.

The tiny test models attend almost uniformly (small random query and key weights): dropping the padding
mask from their fused graph moves the NER logits by less than the parity tolerance, so they cannot tell a
right fusion from a wrong one. Here the query and key weights are scaled up until the attention is sharp,
and the test shows it can fail: the same fused graph without its attention bias misses PyTorch by far.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from engine.manifest import read_manifest
from exporters import export
from tests.exporters.oracles import graph_outputs, torch_outputs
from tests.tiny_models import build_tiny_model
from tests.tolerances import GRAPH_VS_TORCH_REL

SENTENCES = [
    "A short one.",
    "Rivers in the mountains froze early this winter, so the hikers changed their route twice.",
    "Where is the station?",
]
# Query and key weights ×8 make the scores 64× larger, so attention concentrates on a few tokens per row;
# value and output weights ×8 make what it returns outweigh the residual it is added to.
SHARPEN = 8.0
ATTENTION_WEIGHTS = ("q.weight", "k.weight", "v.weight", "o.weight", "query.weight", "key.weight", "value.weight",
                     "attention.output.dense.weight")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


def _sharpened(architecture: str, tiny_root: Path, out: Path) -> Path:
    """The tiny NER model of ``architecture`` with sharp attention, saved with its tokenizer at ``out``."""
    import torch
    from transformers import AutoModelForTokenClassification

    source = build_tiny_model(architecture, "ner", tiny_root)
    shutil.copytree(source, out)
    model = AutoModelForTokenClassification.from_pretrained(str(source))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(ATTENTION_WEIGHTS):
                parameter.mul_(SHARPEN)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def _feeds(model_dir: Path) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(str(model_dir))(SENTENCES, padding=True, return_tensors="np")
    return {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}


def _relative_error(actual: np.ndarray, expected: np.ndarray, mask: np.ndarray) -> float:
    real = mask.astype(bool)
    return float(np.abs(actual[real] - expected[real]).max() / np.abs(expected[real]).max())


@pytest.mark.parametrize("architecture", ["mpnet", "mobilebert"])
def test_fused_attention_matches_pytorch_where_attention_matters(
    architecture: str, tiny_root: Path, tmp_path: Path
) -> None:
    source = _sharpened(architecture, tiny_root, tmp_path / "source")
    package = export(source, tmp_path / "package", task="ner", quantize="none", progress=False)
    manifest = read_manifest(package)
    graph = onnx.load(str(package / manifest.graph))
    layers = sum(node.op_type == "MultiHeadAttention" for node in graph.graph.node)
    assert layers == manifest.optimization["fusions"]["MultiHeadAttention"] == 2
    assert not any(node.op_type == "Softmax" for node in graph.graph.node)

    feeds = _feeds(source)
    (expected,) = torch_outputs(architecture, "ner", source, feeds, SENTENCES)
    (actual,) = graph_outputs(package, feeds)
    assert _relative_error(actual, expected, feeds["attention_mask"]) <= GRAPH_VS_TORCH_REL

    # The comparison can fail: without the bias (padding mask, and MPNet's position bias) the fused graph
    # misses PyTorch by more than the tolerance (7e-3 for MobileBERT, 0.3 for MPNet; 1e-7 with it).
    for node in graph.graph.node:
        if node.op_type == "MultiHeadAttention":
            node.input[5] = ""
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    (unbiased,) = session.run(manifest.output_names, {name: feeds[name] for name in manifest.inputs})
    assert _relative_error(unbiased, expected, feeds["attention_mask"]) > GRAPH_VS_TORCH_REL
