"""Graph fusion: real MiniLM fuses and still matches; anything the fuser cannot be trusted with stays unfused."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from engine.errors import ExportError
from engine.session import checking_session
from exporters import optimize
from exporters.optimize import PARITY_TOLERANCE, max_relative_error, optimize_graph
from tests.exporters.mpnet import export_mean_pooled


@pytest.fixture(scope="module")
def minilm_onnx(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_mean_pooled(minilm_dir, tmp_path_factory.mktemp("minilm") / "model.onnx")


@pytest.fixture(scope="module")
def splade_onnx(splade_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT: fast enough for the fallback cases."""
    return export_mean_pooled(splade_dir, tmp_path_factory.mktemp("splade") / "model.onnx")


def _op_counts(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def test_minilm_fuses_and_matches_unfused(minilm_onnx: Path, tmp_path: Path) -> None:
    fused = tmp_path / "fused.onnx"
    block = optimize_graph(minilm_onnx, fused, "bert", num_heads=12, hidden_size=384)
    assert block["fused"] is True
    assert block["fusions"]["Attention"] == 6
    assert block["fusions"]["LayerNormalization"] == 12
    assert "SkipLayerNormalization" not in block["fusions"]
    assert block["fusions"]["EmbedLayerNormalization"] == 1
    assert block["parity"]["max_rel_err"] <= PARITY_TOLERANCE
    assert block["opset"] >= 14
    ops = _op_counts(fused)
    assert ops["Attention"] == 6 and ops["Softmax"] == 0  # attention really is one op per layer now
    assert max_relative_error(minilm_onnx, fused) <= PARITY_TOLERANCE


def test_unknown_architecture_is_copied_unfused(splade_onnx: Path, tmp_path: Path) -> None:
    dst = tmp_path / "model.onnx"
    block = optimize_graph(splade_onnx, dst, "gpt_neo", num_heads=2, hidden_size=128)
    assert block["fused"] is False and block["fusions"] == {}
    assert "gpt_neo" in block["reason"]
    assert dst.read_bytes() == splade_onnx.read_bytes()


def test_parity_failure_keeps_the_unfused_graph(
    splade_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fuser that produced a wrong graph is simulated by a parity check that reports a large error.
    monkeypatch.setattr(optimize, "max_relative_error", lambda reference, candidate: 0.5)
    dst = tmp_path / "model.onnx"
    block = optimize_graph(splade_onnx, dst, "bert", num_heads=2, hidden_size=128)
    assert block["fused"] is False
    assert "differs" in block["reason"] and "5.00e-01" in block["reason"]
    assert dst.read_bytes() == splade_onnx.read_bytes()


def test_fused_graph_that_does_not_run_keeps_the_unfused_graph(
    splade_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fusion that ORT cannot run (a contrib op given inputs it refuses) fails inside the parity check.
    def refuse(reference: Path, candidate: Path) -> float:
        raise RuntimeError("attention_bias dimension 2 should be same as sequence_length")

    monkeypatch.setattr(optimize, "max_relative_error", refuse)
    dst = tmp_path / "model.onnx"
    block = optimize_graph(splade_onnx, dst, "bert", num_heads=2, hidden_size=128)
    assert block["fused"] is False and "does not run" in block["reason"] and "sequence_length" in block["reason"]
    assert dst.read_bytes() == splade_onnx.read_bytes()


def test_parity_check_sees_a_changed_weight(splade_onnx: Path, tmp_path: Path) -> None:
    model = onnx.load(str(splade_onnx))
    matmul_weights = {node.input[1] for node in model.graph.node if node.op_type == "MatMul"}
    target = next(init for init in model.graph.initializer if init.name in matmul_weights)
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * 1.5, target.name))
    changed = tmp_path / "changed.onnx"
    onnx.save(model, str(changed))
    assert max_relative_error(splade_onnx, splade_onnx) == 0.0
    assert max_relative_error(splade_onnx, changed) > PARITY_TOLERANCE


def test_parity_feeds_are_valid_right_padded_batches(splade_onnx: Path) -> None:
    session = checking_session(splade_onnx)
    for feed in optimize.parity_feeds(session, splade_onnx):
        mask = feed["attention_mask"]
        assert set(feed) == {item.name for item in session.get_inputs()}
        # right padding: every row is ones then zeros, and padding carries id 0
        assert (np.diff(mask, axis=1) <= 0).all() and mask[:, 0].all()
        assert (feed["input_ids"][mask == 0] == 0).all()
        assert feed["input_ids"].max() < 100


def test_bad_arguments_raise_export_error(splade_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        optimize_graph(tmp_path / "missing.onnx", tmp_path / "out.onnx", "bert", 2, 128)
    with pytest.raises(ExportError, match="positive"):
        optimize_graph(splade_onnx, tmp_path / "out.onnx", "bert", 0, 128)


def test_graph_without_a_known_pattern_is_copied_unfused(tmp_path: Path) -> None:
    """A graph the fusers cannot read as a transformer (one MatMul) ships as it is, with the reason."""
    from onnx import TensorProto, helper

    weight = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])], "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [weight],
    )
    src, dst = tmp_path / "plain.onnx", tmp_path / "out.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    block = optimize_graph(src, dst, "bert", num_heads=2, hidden_size=4)
    assert block["fused"] is False and "matched no pattern" in block["reason"]
    assert dst.read_bytes() == src.read_bytes()
