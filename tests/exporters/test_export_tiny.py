"""Every supported (architecture, task) pair, exported from a tiny random model and checked against
transformers' own forward pass (not the exporter's wrappers) on sentences the exporter never saw.

The oracle per task is what Elasticsearch's graph contract means in plain transformers terms, so a
wrapper that drifts from the model (wrong pooling, wrong head, a baked-in shape) fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch

from engine.manifest import GRAPH_RECIPE, read_manifest
from exporters import export
from exporters.registry import OUTPUTS, PAIR_TASKS, SUPPORTED, supported_pairs
from tests.exporters.oracles import graph_outputs, torch_outputs
from tests.tiny_models import ARCHITECTURES, EMBEDDING_ONLY, build_tiny_model, tiny_tasks
from tests.tolerances import DIFFERENT_ABS, GRAPH_VS_TORCH_REL

TOLERANCE = GRAPH_VS_TORCH_REL
# Not the exporter's parity sentences: a different batch size and lengths than its trace and check.
SENTENCES = [
    "A short one.",
    "Rivers in the mountains froze early this winter, so the hikers changed their route twice.",
    "Where is the station?",
]
PAIRS = [
    "The weather was cold.",
    "A map shows the way.",
    "Trains leave from the central station every hour, even on public holidays.",
]
PAIRS_OF_TASK = {task: PAIRS for task in PAIR_TASKS}


def _model_type(architecture: str) -> str:
    return "dpr" if architecture.startswith("dpr_") else architecture


CASES = [(architecture, task) for architecture in ARCHITECTURES for task in tiny_tasks(architecture)]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


def _encode(model_dir: Path, task: str) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    encoded = tokenizer(SENTENCES, PAIRS_OF_TASK.get(task), padding=True, return_tensors="np")
    return {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}


def _oracle(architecture: str, task: str, model_dir: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return torch_outputs(architecture, task, model_dir, feeds, SENTENCES)


def assert_matches(task: str, actual: list[np.ndarray], expected: list[np.ndarray], mask: np.ndarray) -> None:
    """Relative max error ≤ GRAPH_VS_TORCH_REL per output, over real tokens only for outputs with a sequence axis."""
    assert len(actual) == len(expected)
    for spec, got, want in zip(OUTPUTS[task], actual, expected, strict=True):
        assert got.shape == want.shape, spec.name
        if "sequence" in spec.axes:
            got, want = got[mask.astype(bool)], want[mask.astype(bool)]
        error = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-6)
        assert error <= TOLERANCE, f"{spec.name}: relative error {error:.2e}"


def export_and_compare(architecture: str, task: str, tiny_root: Path, out: Path, **options: Any) -> Path:
    model_dir = build_tiny_model(architecture, task, tiny_root)
    package = export(model_dir, out, task=task, quantize="none", progress=False, **options)
    feeds = _encode(model_dir, task)
    assert_matches(
        task,
        graph_outputs(package, feeds),
        _oracle(architecture, task, model_dir, feeds),
        feeds["attention_mask"],
    )
    return package


def test_tiny_models_cover_every_supported_pair() -> None:
    built = {(_model_type(architecture), task) for architecture, task in CASES}
    assert built == set(supported_pairs())


@pytest.mark.parametrize(("architecture", "task"), CASES, ids=[f"{a}-{t}" for a, t in CASES])
def test_fp32_graph_matches_transformers(
    architecture: str, task: str, tiny_root: Path, tmp_path: Path
) -> None:
    package = export_and_compare(architecture, task, tiny_root, tmp_path / "package", fuse=False)
    manifest = read_manifest(package)
    spec = SUPPORTED[_model_type(architecture)]
    assert manifest.task == task
    assert manifest.architecture == spec.model_type
    assert manifest.tokenization.type == spec.tokenizer_type
    assert manifest.outputs == [output.to_json() for output in OUTPUTS[task]]
    assert manifest.quantization == {"mode": "none"}
    assert sorted(manifest.files) == ["model.onnx", "tokenizer.json"]
    assert manifest.source["id"] == str(build_tiny_model(architecture, task, tiny_root))
    expected_inputs = spec.inputs if architecture != "deberta-v2" else ("input_ids", "attention_mask")
    assert tuple(manifest.inputs) == expected_inputs
    if task == "text_embedding":
        assert manifest.embedding_size == (16 if architecture == "retribert" else 32)
        assert manifest.similarity == ("dot_product" if architecture.startswith("dpr_") else "cosine")
    else:
        assert manifest.embedding_size is None and manifest.similarity is None


# One task per architecture through ORT's fusions: the fused graph must match transformers too.
FUSED_CASES = [
    (architecture, "text_embedding" if architecture in EMBEDDING_ONLY else "text_classification")
    for architecture in ARCHITECTURES
]

# What ORT's fuser makes of each architecture, as {op: (per layer, once)}; measured on the tiny models
# with onnxruntime 1.32, torch 2.13, transformers 4.57 (the graphs are torch.onnx traces, so a new
# release can change it: then update this table from the manifests, knowingly). A fusion that silently stops matching
# (a regression in speed, not in results) fails here, where a parity check alone would pass.
# Residual LayerNorms stay LayerNormalization (exporters/optimize.py says why): two per layer.
BERT_LAYER = {"Attention": (1, 0), "BiasGelu": (1, 0), "LayerNormalization": (2, 0)}
EMBED = {"EmbedLayerNormalization": (0, 1)}
EXPECTED_FUSIONS: dict[str, dict[str, tuple[int, int]]] = {
    "bert": {**BERT_LAYER, **EMBED},
    "dpr_question": {**BERT_LAYER, **EMBED},
    "dpr_context": {**BERT_LAYER, **EMBED},
    "retribert": {**BERT_LAYER, **EMBED},
    # The classification head's activation is a plain Gelu.
    "electra": {**BERT_LAYER, **EMBED, "Gelu": (0, 1)},
    # Position ids computed from input_ids: the embedding LayerNorm stays a LayerNormalization.
    "roberta": {**BERT_LAYER, "LayerNormalization": (2, 1)},
    "xlm-roberta": {**BERT_LAYER, "LayerNormalization": (2, 1)},
    # Traced through its sdpa attention (exporters/loading.py ATTENTION_IMPLEMENTATION), DistilBERT fuses as BERT.
    "distilbert": {**BERT_LAYER, **EMBED},
    # DeBERTa's disentangled attention is no pattern the bert fuser knows: only the feed-forward and
    # residual LayerNorms fuse.
    "deberta-v2": {
        "BiasGelu": (1, 0),
        "LayerNormalization": (2, 2),
        "Gelu": (0, 1),
    },
    # MPNet's attention adds a relative-position bias: exporters/attention_bias.py fuses it (tested where
    # attention matters in test_attention_bias.py: these tiny models attend almost uniformly).
    "mpnet": {"MultiHeadAttention": (1, 0), "BiasGelu": (1, 0), "LayerNormalization": (2, 1)},
    # Counted per encoder + decoder layer; a decoder layer has three residual LayerNorms.
    "bart": {"BiasGelu": (1, 0), "LayerNormalization": (0, 2)},
    # MobileBERT's bottleneck layers (NoNorm, no LayerNorm at all) match none of ORT's patterns; its attention
    # (Q and K from the bottleneck, V from the layer input) is fused by exporters/attention_bias.py.
    "mobilebert": {"MultiHeadAttention": (1, 0)},
}


def _expected_fusions(architecture: str, model_dir: Path) -> dict[str, int]:
    config = json.loads((model_dir / "config.json").read_text())
    layers = config.get("num_hidden_layers") or config.get("n_layers") or config.get("encoder_layers")
    decoder_layers = config.get("decoder_layers", 0)
    expected = {
        op: per_layer * (layers + decoder_layers) + once
        for op, (per_layer, once) in EXPECTED_FUSIONS[architecture].items()
    }
    if architecture == "bart":
        expected["LayerNormalization"] += 2 * layers + 3 * decoder_layers
    return expected


def test_every_architecture_has_expected_fusions() -> None:
    assert set(EXPECTED_FUSIONS) == set(ARCHITECTURES)


@pytest.mark.parametrize(("architecture", "task"), FUSED_CASES, ids=[f"{a}-{t}" for a, t in FUSED_CASES])
def test_fused_graph_matches_transformers(
    architecture: str, task: str, tiny_root: Path, tmp_path: Path
) -> None:
    import onnx

    package = export_and_compare(architecture, task, tiny_root, tmp_path / "package", fuse=True)
    manifest = read_manifest(package)
    optimization = manifest.optimization
    assert optimization["opset"] == 17
    assert manifest.graph_recipe == GRAPH_RECIPE
    expected = _expected_fusions(architecture, build_tiny_model(architecture, task, tiny_root))
    assert optimization["fusions"] == expected, optimization.get("reason")
    assert optimization["fused"] is bool(expected)
    # The manifest reports what the shipped graph holds, node for node.
    op_types = [node.op_type for node in onnx.load(str(package / manifest.graph)).graph.node]
    assert {op: op_types.count(op) for op in expected} == expected
    if {"Attention", "MultiHeadAttention"} & set(expected):  # every layer's softmax is inside the fused op
        assert "Softmax" not in op_types


def test_sequence_axes_are_dynamic(tiny_root: Path, tmp_path: Path) -> None:
    """One graph serves a batch of 1 and a batch of 5 with a longer sequence than it was traced on."""
    model_dir = build_tiny_model("bert", "ner", tiny_root)
    package = export(model_dir, tmp_path / "package", task="ner", quantize="none", fuse=False, progress=False)
    manifest = read_manifest(package)
    session = onnxruntime.InferenceSession(str(package / manifest.graph), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 3), (5, 200)):
        feeds = {
            "input_ids": np.full((batch, length), 1000, dtype=np.int64),
            "attention_mask": np.ones((batch, length), dtype=np.int64),
            "token_type_ids": np.zeros((batch, length), dtype=np.int64),
        }
        (logits,) = session.run(None, feeds)
        assert logits.shape == (batch, length, 9)


def test_ner_labels_use_underscores(tiny_root: Path, tmp_path: Path) -> None:
    model_dir = build_tiny_model("roberta", "ner", tiny_root)
    manifest = read_manifest(
        export(model_dir, tmp_path / "p", task="ner", quantize="none", fuse=False, progress=False)
    )
    assert manifest.labels == ["O", "B_MISC", "I_MISC", "B_PER", "I_PER", "B_ORG", "I_ORG", "B_LOC", "I_LOC"]


def test_saved_tokenizer_has_no_truncation_or_padding(tiny_root: Path, tmp_path: Path) -> None:
    model_dir = build_tiny_model("xlm-roberta", "fill_mask", tiny_root)
    package = export(model_dir, tmp_path / "p", task="fill_mask", quantize="none", fuse=False, progress=False)
    saved = json.loads((package / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None
    manifest = read_manifest(package)
    assert manifest.special_tokens["mask"][0] == "<mask>"
    assert manifest.tokenization.do_lower_case is False


INT8_TASKS = ["ner", "question_answering", "zero_shot_classification", "text_similarity", "text_expansion"]
# Every task on BERT; NER on DistilBERT (fused from its sdpa trace), MPNet and MobileBERT (MultiHeadAttention,
# which the quantiser must leave whole while it quantises the projections).
INT8_CASES = [("bert", task) for task in INT8_TASKS] + [(name, "ner") for name in ("distilbert", "mpnet", "mobilebert")]


@pytest.mark.parametrize(("architecture", "task"), INT8_CASES, ids=[f"{a}-{t}" for a, t in INT8_CASES])
def test_int8_package_through_the_quantisers_guard(
    architecture: str, task: str, tiny_root: Path, tmp_path: Path
) -> None:
    """Each task's agreement metric goes through quantize_with_guard; the package holds one graph, int8
    when the guard passed, else the fp32 graph with the rejected attempt recorded."""
    import onnx

    model_dir = build_tiny_model(architecture, task, tiny_root)
    package = export(model_dir, tmp_path / "pkg", task=task, quantize="int8", progress=False)
    manifest = read_manifest(package)
    assert sorted(manifest.files) == ["model.onnx", "tokenizer.json"]
    op_types = {node.op_type for node in onnx.load(str(package / manifest.graph)).graph.node}
    quantization = manifest.quantization
    if quantization["mode"] == "int8":
        assert quantization["agreement"]["value"] >= quantization["agreement"]["threshold"] == 0.99
        # Static activation scales: constant QuantizeLinear feeding the int8 GEMMs, never a per-batch
        # DynamicQuantizeLinear (that is what makes results batch-invariant).
        assert "QuantizeLinear" in op_types and op_types & {"MatMulIntegerToFloat", "QAttention"}
        assert not op_types & {"DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
    else:
        assert quantization["mode"] == "none" and quantization["int8_rejected"]["reached_threshold"] is False
        assert not op_types & {
            "QuantizeLinear",
            "DynamicQuantizeLinear",
            "MatMulInteger",
            "MatMulIntegerToFloat",
            "DynamicQuantizeMatMul",
            "QAttention",
        }
    feeds = _encode(model_dir, task)
    outputs = graph_outputs(package, feeds)
    assert [output.shape for output in outputs] == [
        output.shape for output in _oracle(architecture, task, model_dir, feeds)
    ]


def test_retribert_document_tower(tiny_root: Path, tmp_path: Path) -> None:
    import transformers as tf

    model_dir = build_tiny_model("retribert", "text_embedding", tiny_root)
    package = export(
        model_dir, tmp_path / "pkg", quantize="none", fuse=False, progress=False, retribert_tower="document"
    )
    assert read_manifest(package).task_options == {"tower": "document"}
    feeds = _encode(model_dir, "text_embedding")
    config = tf.RetriBertConfig.from_pretrained(str(model_dir))
    config.position_embedding_type = "absolute"
    model = tf.RetriBertModel.from_pretrained(str(model_dir), config=config)
    with torch.no_grad():
        expected = model.embed_answers(
            torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
        )
    assert_matches(
        "text_embedding", graph_outputs(package, feeds), [expected.numpy()], feeds["attention_mask"]
    )
    query = export(model_dir, tmp_path / "query", quantize="none", fuse=False, progress=False)
    assert not np.allclose(graph_outputs(query, feeds)[0], expected.numpy(), atol=DIFFERENT_ABS)
