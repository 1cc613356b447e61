"""int8 quantisation with the accuracy guard: real MiniLM and all-mpnet-base-v2 against fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from engine.errors import ExportError
from exporters import quantize
from exporters.calibration import calibration_sentences
from exporters.optimize import optimize_graph
from exporters.quantize import quantize_with_guard
from tests.exporters.mpnet import export_mean_pooled, mpnet_dir, sentence_feeds
from tests.tolerances import GUARD_SCORE_ABS, SAME_GRAPH_ABS

CALIBRATION = 128  # sentences the guard sees; the rest of the packaged file is held out


def _embed(path: Path, feeds: list[dict]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [item.name for item in session.get_inputs()]
    return np.concatenate([session.run(None, {name: feed[name] for name in names})[0] for feed in feeds])


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _fused(
    model_dir: Path, work: Path, architecture: str, heads: int, hidden: int, token_types: bool
) -> Path:
    raw = export_mean_pooled(model_dir, work / "raw.onnx", with_token_types=token_types)
    fused = work / "fused.onnx"
    assert optimize_graph(raw, fused, architecture, heads, hidden)["fused"]
    return fused


@pytest.fixture(scope="module")
def minilm_fp32(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fused(minilm_dir, tmp_path_factory.mktemp("minilm"), "bert", 12, 384, token_types=True)


@pytest.fixture(scope="module")
def minilm_feeds(minilm_dir: Path) -> list[dict]:
    return sentence_feeds(minilm_dir / "tokenizer.json", calibration_sentences()[:CALIBRATION])


@pytest.fixture(scope="module")
def minilm_int8(
    minilm_fp32: Path, minilm_feeds: list[dict], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict]:
    dst = tmp_path_factory.mktemp("minilm-int8") / "model.onnx"
    return dst, quantize_with_guard(minilm_fp32, dst, minilm_feeds, "cosine", 0.99, progress=False)


def test_minilm_block_fields(minilm_int8: tuple[Path, dict], minilm_fp32: Path) -> None:
    dst, block = minilm_int8
    assert block["mode"] == "int8" and "reduce_range" in block["method"]
    agreement = block["agreement"]
    assert set(agreement) == {
        "metric", "value", "min", "threshold", "tail_threshold", "tail", "n_samples", "buckets", "held_out"
    }
    assert agreement["metric"] == "cosine" and agreement["threshold"] == 0.99
    assert agreement["tail_threshold"] == quantize.DEFAULT_TAIL_THRESHOLDS["cosine"]
    assert agreement["n_samples"] == CALIBRATION and agreement["held_out"] is False
    assert sum(bucket["n"] for bucket in agreement["buckets"].values()) == CALIBRATION
    assert agreement["tail"] == {"short": "p1", "sentence": "min", "passage": "min"}
    for name, bucket in agreement["buckets"].items():
        figure = bucket[agreement["tail"][name]]
        assert bucket["mean"] >= 0.99 and figure >= agreement["tail_threshold"][name]
    assert block["activations"] == "static" and 0.0 <= block["fp32_weight_share"] < 1.0
    assert block["reached_threshold"] is True and block["agreement"]["value"] >= 0.99
    assert block["candidates"] == 24  # 6 fused Attention + 18 MatMul
    # the 30522×384 word-embedding table stays fp32 (it is a lookup, not a MatMul): 90 MB -> 58 MB
    assert dst.stat().st_size < minilm_fp32.stat().st_size * 0.7
    graph = onnx.load(str(dst)).graph
    ops = {node.op_type for node in graph.node}
    # static activation scales: no per-batch DynamicQuantizeLinear, scales applied inside the GEMM
    assert {"QAttention", "MatMulIntegerToFloat", "QuantizeLinear"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "MatMulInteger"}
    # ... and the projection biases too: the attention output, FFN-in and FFN-out GEMMs of 6 layers take
    # theirs (the FFN-in bias was BiasGelu's: a plain Gelu reads the GEMM), and no separate Add of a
    # constant follows any int8 GEMM
    gemms = [node for node in graph.node if node.op_type == "MatMulIntegerToFloat"]
    assert sum(len(node.input) == 7 for node in gemms) == 18
    producers = {node.output[0]: node.op_type for node in graph.node}
    gelus = [node for node in graph.node if node.op_type == "Gelu"]
    assert "BiasGelu" not in ops and len(gelus) == 6
    assert {producers[node.input[0]] for node in gelus} == {"MatMulIntegerToFloat"}
    constants = {item.name for item in graph.initializer}
    outputs = {node.output[0] for node in gemms}
    assert not [node for node in graph.node
                if node.op_type == "Add" and set(node.input) & outputs and set(node.input) & constants]


@pytest.mark.parametrize("held_out", ["calibration", "sts"])
def test_minilm_int8_matches_fp32_on_held_out_sentences(
    held_out: str,
    minilm_int8: tuple[Path, dict],
    minilm_fp32: Path,
    minilm_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    if held_out == "sts":
        rows = (request.getfixturevalue("shared_data") / "sts" / "sts-dev.csv").read_text().splitlines()[:150]
        sentences = [column for row in rows for column in row.split("\t")[5:7]]
    else:
        sentences = calibration_sentences()[CALIBRATION:]
    feeds = sentence_feeds(minilm_dir / "tokenizer.json", sentences)
    cosines = _row_cosines(_embed(minilm_fp32, feeds), _embed(minilm_int8[0], feeds))
    assert cosines.mean() >= 0.99
    assert cosines.min() >= 0.97


def test_guard_keeps_sensitive_nodes_at_a_high_threshold(
    minilm_fp32: Path, minilm_feeds: list[dict], tmp_path: Path
) -> None:
    dst = tmp_path / "model.onnx"
    block = quantize_with_guard(minilm_fp32, dst, minilm_feeds, "cosine", 0.999, progress=False)
    kept = block["kept_fp32"]
    assert block["reached_threshold"] is True and 0 < len(kept) < block["candidates"]
    fp32_nodes = {node.name: node.op_type for node in onnx.load(str(minilm_fp32)).graph.node}
    int8_nodes = {node.name: node.op_type for node in onnx.load(str(dst)).graph.node}
    for name in kept:  # still there, under its name, as the fp32 op
        assert int8_nodes[name] == fp32_nodes[name] in ("MatMul", "Attention")
    cosines = _row_cosines(_embed(minilm_fp32, minilm_feeds), _embed(dst, minilm_feeds))
    assert cosines.mean() == pytest.approx(block["agreement"]["value"], abs=SAME_GRAPH_ABS)
    assert cosines.mean() >= 0.999


def _outputs(*arrays: np.ndarray) -> list[list[np.ndarray]]:
    return [list(arrays)]


def test_cosine_metrics() -> None:
    mask = {"attention_mask": np.ones((3, 2), np.int64)}
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], np.float32)
    cand = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]], np.float32)
    for metric in ("cosine", "sparse_cosine"):
        scores = quantize._agreement(metric, _outputs(ref), _outputs(cand), [mask]).scores
        np.testing.assert_allclose(scores, [1.0, 0.0, 1.0])  # empty vectors on both sides agree


def test_cosine_of_hidden_states_ignores_padding() -> None:
    mask = np.array([[1, 1, 0], [1, 1, 1]], np.int64)
    ref = np.random.default_rng(2).normal(size=(2, 3, 4)).astype(np.float32)
    cand = ref.copy()
    cand[0, 2] = -ref[0, 2]  # padding: ignored
    cand[1, 0] = -ref[1, 0]  # one of three real tokens points the other way: cosine -1
    scores = quantize._agreement("cosine", _outputs(ref), _outputs(cand), [{"attention_mask": mask}]).scores
    np.testing.assert_allclose(scores, [1.0, 1 / 3], atol=GUARD_SCORE_ABS)


def test_score_metric_measures_scalar_closeness() -> None:
    ref = np.array([[2.0], [-4.0], [1.0]], np.float32)
    cand = np.array([[2.0], [-3.8], [1.4]], np.float32)
    feeds = [{"attention_mask": np.ones((3, 2))}]
    result = quantize._agreement("score", _outputs(ref), _outputs(cand), feeds)
    # gaps over max|fp32| = 4
    np.testing.assert_allclose(result.scores, [1.0, 0.95, 0.9], atol=GUARD_SCORE_ABS)


def test_argmax_metric() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], np.float32)
    cand = np.array([[0.2, 0.8], [0.4, 0.6], [0.1, 0.9]], np.float32)
    result = quantize._agreement(
        "argmax", _outputs(ref), _outputs(cand), [{"attention_mask": np.ones((3, 4))}]
    )
    assert result.value == pytest.approx(2 / 3) and result.min == 0.0


@pytest.mark.parametrize("length, passes", [(6, True), (30, False), (200, False)])
def test_tail_figure_is_p1_for_short_texts_and_the_minimum_beyond(length: int, passes: bool) -> None:
    """One bad row in 150 passes the short bucket (its p1 is the second-worst row) and fails a
    sentence or passage bucket (held to its minimum), at the default cosine tails."""
    scores = np.full(150, 0.995)
    scores[7] = 0.95
    agreement = quantize.Agreement("cosine", scores, np.full(150, length))
    assert agreement.passes(0.99, quantize._tails("cosine", None)) is passes
    assert agreement.passes(0.99, quantize._tails("cosine", 0.9)) is True  # one value sets every bucket


def test_token_argmax_ignores_padding() -> None:
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int64)
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(2, 4, 5)).astype(np.float32)
    cand = ref.copy()
    cand[1, 2:] = -ref[1, 2:]  # padded tokens disagree: must not count
    cand[0, 3] = -ref[0, 3]  # one real token of four disagrees
    result = quantize._agreement("token_argmax", _outputs(ref), _outputs(cand), [{"attention_mask": mask}])
    np.testing.assert_allclose(result.scores, [0.75, 1.0])


def test_token_argmax_compares_qa_start_and_end() -> None:
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.int64)
    start = np.array([[0.0, 5.0, 1.0, 0.0], [3.0, 0.0, 1.0, 2.0]], np.float32)
    end = np.array([[0.0, 1.0, 5.0, 0.0], [0.0, 0.0, 1.0, 4.0]], np.float32)
    cand_start = start.copy()
    cand_start[0, 3] = 9.0  # a padded position wins only if padding is not masked
    cand_end = end.copy()
    cand_end[1] = [4.0, 0.0, 0.0, 0.0]  # the end moves in row 1
    result = quantize._agreement(
        "token_argmax", _outputs(start, end), _outputs(cand_start, cand_end), [{"attention_mask": mask}]
    )
    np.testing.assert_allclose(result.scores, [1.0, 0.5])


def test_bad_arguments_raise_export_error(
    minilm_fp32: Path, minilm_feeds: list[dict], tmp_path: Path
) -> None:
    dst = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="unknown quantization metric"):
        quantize_with_guard(minilm_fp32, dst, minilm_feeds, "accuracy", 0.99)
    with pytest.raises(ExportError, match="threshold"):
        quantize_with_guard(minilm_fp32, dst, minilm_feeds, "cosine", 1.5)
    with pytest.raises(ExportError, match="at least one"):
        quantize_with_guard(minilm_fp32, dst, [], "cosine", 0.99)
    without_mask = [{"input_ids": feed["input_ids"]} for feed in minilm_feeds]
    with pytest.raises(ExportError, match="attention_mask"):
        quantize_with_guard(minilm_fp32, dst, without_mask, "cosine", 0.99)
    with pytest.raises(ExportError, match="does not exist"):
        quantize_with_guard(tmp_path / "missing.onnx", dst, minilm_feeds, "cosine", 0.99)
    assert not dst.exists()


@pytest.mark.slow
def test_guard_brings_mpnet_to_the_threshold(tmp_path: Path) -> None:
    """all-mpnet-base-v2 is the hard case: plain dynamic int8 gives mean cosine ≈ 0.92 to fp32."""
    source = mpnet_dir()
    fp32 = _fused(source, tmp_path, "mpnet", 12, 768, token_types=False)
    feeds = sentence_feeds(source / "tokenizer.json", calibration_sentences()[:CALIBRATION])
    dst = tmp_path / "int8.onnx"
    block = quantize_with_guard(fp32, dst, feeds, "cosine", 0.99, progress=False)
    assert block["reached_threshold"] is True and block["kept_fp32"]
    cosines = _row_cosines(_embed(fp32, feeds), _embed(dst, feeds))
    assert cosines.mean() >= 0.99
    held_out = sentence_feeds(source / "tokenizer.json", calibration_sentences()[CALIBRATION:])
    assert _row_cosines(_embed(fp32, held_out), _embed(dst, held_out)).mean() >= 0.985


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.mark.parametrize("option", ["accuracy_threshold", "accuracy_tail"])
@pytest.mark.parametrize("value", [-0.01, 1.01, float("nan")])
def test_out_of_range_accuracy_options_are_refused(option: str, value: float) -> None:
    from exporters.export import ExportOptions

    with pytest.raises(ExportError, match=rf"\[{option}\] must be between 0 and 1"):
        ExportOptions(**{option: value})


def test_accuracy_tail_is_the_guards_tail(tiny_root: Path, tmp_path: Path) -> None:
    """``accuracy_tail`` reaches the guard: 0 with a mean threshold of 0 takes the all-int8 graph,
    1.0 (every text of every bucket identical to fp32) makes it keep nodes fp32."""
    from engine.manifest import read_manifest
    from exporters import export
    from tests.tiny_models import build_tiny_model

    source = build_tiny_model("bert", "text_embedding", tiny_root)
    loose = export(
        source, tmp_path / "loose", quantize="int8", accuracy_threshold=0.0, accuracy_tail=0.0, progress=False
    )
    block = read_manifest(loose).quantization
    assert set(block["agreement"]["tail_threshold"].values()) == {0.0} and block["kept_fp32"] == []
    strict = export(source, tmp_path / "strict", quantize="int8", accuracy_tail=1.0, progress=False)
    block = read_manifest(strict).quantization
    guard = block.get("int8_rejected", block)  # fp32 shipped when no int8 graph reached it
    assert set(guard["agreement"]["tail_threshold"].values()) == {1.0} and guard["kept_fp32"]


def test_accuracy_threshold_zero_is_used_as_given(tiny_root: Path, tmp_path: Path) -> None:
    """0 is a value, not "unset": the guard gets 0 and accepts the fully quantised graph."""
    from engine.manifest import read_manifest
    from exporters import export
    from tests.tiny_models import build_tiny_model

    source = build_tiny_model("bert", "ner", tiny_root)
    package = export(source, tmp_path / "pkg", quantize="int8", accuracy_threshold=0.0, progress=False)
    quantization = read_manifest(package).quantization
    assert quantization["mode"] == "int8"
    assert quantization["agreement"]["threshold"] == 0.0
    assert quantization["kept_fp32"] == []


def test_two_exports_are_byte_identical(tiny_root: Path, tmp_path: Path) -> None:
    """Same source, task, options and libraries: the same bytes, guard search included (threshold
    1.0 keeps it searching), in this process and in another with a different hash seed."""
    import json
    import os
    import subprocess
    import sys

    from exporters import export
    from tests.tiny_models import build_tiny_model

    source = build_tiny_model("bert", "fill_mask", tiny_root)
    options = {"quantize": "int8", "accuracy_threshold": 1.0, "progress": False}
    first = export(source, tmp_path / "first", **options)
    code = f"from exporters import export; export({str(source)!r}, {str(tmp_path / 'second')!r}, **{options!r})"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(repo)}
    subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, check=True)
    second = tmp_path / "second"
    manifest = json.loads((first / "engine.json").read_text())
    assert manifest["quantization"]["kept_fp32"], "the guard search did not run"
    assert (first / "engine.json").read_bytes() == (second / "engine.json").read_bytes()
    for name in manifest["files"]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
