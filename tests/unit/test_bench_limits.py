"""The benchmark's limit: operations counted from a graph's structure, GEMM rates measured through the
engine's own session factory, and the shares every benchmark row reports."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
flops_module = pytest.importorskip("bench.flops")
limits = pytest.importorskip("bench.limits")
report = pytest.importorskip("bench.report")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HIDDEN, FFN, LABELS = 8, 32, 3


def _weight(name: str, shape: tuple[int, ...], dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype=dtype), name)


def _encoder_graph(path: Path) -> None:
    """One layer's worth of shapes: a fused QAttention (int8), an fp32 FFN up, an int8 FFN down, an unfused
    score product, then mean pooling and a classifier that runs once per row."""
    nodes = [
        helper.make_node("QAttention", ["x", "qkv", "qkv_bias", "scale"], ["attn"], domain="com.microsoft",
                         num_heads=2),
        helper.make_node("MatMul", ["attn", "up"], ["h"]),
        helper.make_node("MatMulIntegerToFloat", ["h_q", "down", "s", "ws"], ["y"], domain="com.microsoft"),
        helper.make_node("Transpose", ["y"], ["y_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["y", "y_t"], ["scores"]),
        helper.make_node("ReduceMean", ["y"], ["pooled"], axes=[1]),
        helper.make_node("Gemm", ["pooled", "classifier"], ["logits"], transB=1),
    ]
    initializers = [_weight("qkv", (HIDDEN, 3 * HIDDEN), np.int8), _weight("up", (HIDDEN, FFN)),
                    _weight("down", (FFN, HIDDEN), np.int8), _weight("classifier", (LABELS, HIDDEN))]
    graph = helper.make_graph(nodes, "encoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", HIDDEN])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", LABELS])], initializers)
    onnx.save(helper.make_model(graph), str(path))


def test_operations_are_counted_per_token_per_row_and_per_token_pair(tmp_path: Path) -> None:
    _encoder_graph(tmp_path / "model.onnx")
    counted = flops_module.graph_flops(tmp_path / "model.onnx")
    assert counted.hidden == HIDDEN  # the commonest GEMM input width (qkv, up)
    assert counted.token_int8 == 2 * HIDDEN * 3 * HIDDEN + 2 * FFN * HIDDEN
    assert counted.token_fp32 == 2 * HIDDEN * FFN
    assert (counted.row_int8, counted.row_fp32) == (0, 2 * HIDDEN * LABELS)  # after pooling: once per row
    assert counted.quadratic == 4 * HIDDEN + 2 * HIDDEN  # fused attention's two products + one unfused
    int8, fp32 = counted.of_row(10)
    assert int8 == 10 * counted.token_int8
    assert fp32 == 10 * counted.token_fp32 + counted.row_fp32 + 100 * counted.quadratic
    assert counted.of_rows([10, 10]) == (2 * int8, 2 * fp32)
    assert counted.shapes == {(HIDDEN, 3 * HIDDEN, True): 1, (HIDDEN, FFN, False): 1, (FFN, HIDDEN, True): 1,
                              (HIDDEN, LABELS, False): 1}


def test_gemm_rates_are_measured_through_the_engine_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "SECONDS_PER_SHAPE", 0.01)
    counted = flops_module.GraphFlops(token_int8=0, token_fp32=0, row_int8=0, row_fp32=0, quadratic=0,
                                      hidden=64, shapes={(64, 128, True): 2})
    limit = limits.measure_limit(counted, allocations=1, threads=1, tokens=32)
    assert limit.int8_ops_per_s > 0 and limit.fp32_ops_per_s > 0
    assert math.isfinite(limit.int8_ops_per_s) and math.isfinite(limit.fp32_ops_per_s)


def test_shares_are_achieved_operations_over_the_rates() -> None:
    limit = limits.Limit(allocations=1, threads=1, tokens=1024, int8_ops_per_s=100e9, fp32_ops_per_s=25e9)
    columns = limits.limit_columns(limit, docs_per_s=10.0, n_docs=4, int8_ops=4 * 3e9, fp32_ops=4 * 1e9)
    assert columns["gop_per_doc"] == pytest.approx(4.0)
    assert columns["gops"] == pytest.approx(40.0)
    assert columns["limit_share"] == pytest.approx(0.40)
    # the package's own limit: 3 GOP at 100 GOPS + 1 GOP at 25 GFLOP/s = 0.07 s per doc
    assert columns["ideal_share"] == pytest.approx(10.0 * 0.07)


def test_markdown_reports_the_shares_beside_docs_per_second() -> None:
    row = {"system": "engine", "config": "1x1", "docs_per_s": 10.0, "tokens_per_s": 1000.0, "latency_ms_p50": 1.0,
           "latency_ms_p95": 2.0, "latency_ms_p99": 3.0, "cpu_utilisation": 0.5, "peak_rss_mb": 100.0}
    assert "share of int8 limit" not in report.markdown_table([row])
    table = report.markdown_table([{**row, "gops": 40.0, "limit_share": 0.4, "ideal_share": 0.7}])
    header, _, line = table.splitlines()
    assert "share of int8 limit" in header and line.endswith("| 40.0 | 40% | 70% |")


def test_the_limit_is_the_best_configurations_median_reading() -> None:
    """A transient fast reading (the first seconds after a pause) does not set the limit; the best
    configuration's median does, int8 and fp32 each."""
    def reading(allocations: int, int8: float, fp32: float) -> limits.Limit:
        return limits.Limit(allocations, 1, 1024, int8, fp32)

    readings = [reading(1, 970e9, 100e9), reading(2, 1050e9, 200e9), reading(1, 530e9, 104e9),
                reading(2, 1030e9, 210e9), reading(1, 520e9, 102e9), reading(2, 1070e9, 190e9)]
    limit = limits.sustained_limit(readings)
    assert (limit.allocations, limit.threads) == (2, 1)
    assert limit.int8_ops_per_s == pytest.approx(1050e9)
    assert limit.fp32_ops_per_s == pytest.approx(200e9)
    assert limits.sustained_limit(readings[:2]).int8_ops_per_s == pytest.approx(1050e9)
