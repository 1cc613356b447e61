"""The deployment's parts on their own: stats periods, the inference cache, the session factory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cache import ENTRY_OVERHEAD_BYTES, InferenceCache, cache_key
from engine.errors import InvalidInput, ModelError
from engine.session import EXPOSED_OPTIONS, arena_priming_shapes, create_session, prime_arena
from engine.stats import DeploymentStats
from engine.units import parse_byte_size
from tests.unit.test_deployment import Window, build_graph


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


# -- stats -------------------------------------------------------------------------------------------


def test_last_minute_is_the_previous_complete_period_aligned_to_start() -> None:
    clock = Clock()
    stats = DeploymentStats(period_s=60.0, clock=clock)
    for _ in range(3):
        stats.record_inference(10.0, cache_hit=False)
    clock.now += 59.0
    stats.record_inference(2.0, cache_hit=True)
    snapshot = stats.snapshot()
    assert snapshot["throughput_last_minute"] == 0  # the first period is not complete yet
    assert snapshot["inference_count"] == 4 and snapshot["inference_cache_hit_count"] == 1
    assert snapshot["average_inference_time_ms"] == pytest.approx(32.0 / 4)
    assert snapshot["average_inference_time_ms_excluding_cache_hits"] == pytest.approx(10.0)
    clock.now += 2.0  # period 1 starts at start + 60
    stats.record_inference(4.0, cache_hit=False)
    snapshot = stats.snapshot()
    assert snapshot["throughput_last_minute"] == 4
    assert snapshot["inference_cache_hit_count_last_minute"] == 1
    assert snapshot["average_inference_time_ms_last_minute"] == pytest.approx(32.0 / 4)
    assert snapshot["peak_throughput_per_minute"] == 4
    clock.now += 60.0  # period 2: period 1 had one inference
    assert stats.snapshot()["throughput_last_minute"] == 1
    assert stats.snapshot()["peak_throughput_per_minute"] == 4
    clock.now += 300.0  # idle periods in between: the last complete one was empty
    snapshot = stats.snapshot()
    assert (
        snapshot["throughput_last_minute"] == 0 and snapshot["average_inference_time_ms_last_minute"] is None
    )
    assert snapshot["peak_throughput_per_minute"] == 4


def test_error_counters_and_load_samples() -> None:
    clock = Clock()
    stats = DeploymentStats(period_s=1.0, clock=clock)
    assert stats.snapshot()["average_inference_time_ms"] is None
    stats.record_rejected(3)
    stats.record_timeout(2)
    stats.record_error(1)
    stats.record_queued(5)
    stats.record_batch(0.25, completed=4)
    clock.now += 2.0
    sample = stats.take_load_sample()
    assert (sample.interval_s, sample.demand, sample.completed, sample.busy_s) == (2.0, 8, 4, 0.25)
    assert stats.take_load_sample().demand == 0
    snapshot = stats.snapshot()
    assert (snapshot["rejected_execution_count"], snapshot["timeout_count"], snapshot["error_count"]) == (
        3,
        2,
        1,
    )
    stats.record_inference(1.0, cache_hit=False, wall_time=1234.5)
    assert stats.snapshot()["last_access"] == 1_234_500


# -- cache -------------------------------------------------------------------------------------------


def outputs(values: float, length: int = 4) -> list[tuple[np.ndarray, ...]]:
    return [(np.full(length, values, dtype=np.float32),)]


def test_cache_is_lru_bounded_by_bytes_and_copies() -> None:
    entry_size = ENTRY_OVERHEAD_BYTES + 16
    cache = InferenceCache(max_bytes=2 * entry_size)
    cache.put("a", outputs(1.0))
    cache.put("b", outputs(2.0))
    assert cache.size_bytes == 2 * entry_size
    got = cache.get("a")  # "a" becomes the most recently used
    assert got is not None
    got[0][0][:] = 99.0  # a caller changing its copy changes nothing in the cache
    cache.put("c", outputs(3.0))  # evicts "b", the least recently used
    assert cache.get("b") is None
    np.testing.assert_array_equal(cache.get("a")[0][0], np.full(4, 1.0, np.float32))
    assert len(cache) == 2
    cache.put("huge", outputs(0.0, length=10_000))  # bigger than the whole cache: not stored
    assert cache.get("huge") is None and len(cache) == 2
    cache.put("a", outputs(5.0))  # replacing keeps the byte count right
    assert cache.size_bytes == 2 * entry_size
    cache.clear()
    assert len(cache) == 0 and cache.size_bytes == 0
    with pytest.raises(ValueError):
        InferenceCache(0)


def test_cache_key_covers_ids_token_types_and_config() -> None:
    def windows(ids: list[int], types: list[int]) -> list[Window]:
        return [Window(np.array(ids, np.int64), np.array(types, np.int64))]

    base = cache_key(windows([1, 5, 2], [0, 0, 0]), ("cfg", 1))
    assert base == cache_key(windows([1, 5, 2], [0, 0, 0]), ("cfg", 1))
    assert base != cache_key(windows([1, 6, 2], [0, 0, 0]), ("cfg", 1))
    assert base != cache_key(windows([1, 5, 2], [0, 1, 1]), ("cfg", 1))
    assert base != cache_key(windows([1, 5, 2], [0, 0, 0]), ("cfg", 2))
    split = [
        Window(np.array([1, 5], np.int64), np.zeros(2, np.int64)),
        Window(np.array([2], np.int64), np.zeros(1, np.int64)),
    ]
    assert base != cache_key(split, ("cfg", 1))  # same ids, other windows


@pytest.mark.parametrize(
    ("value", "size"),
    [(0, 0), ("0b", 0), ("512kb", 512 * 1024), ("1.5gb", 3 << 29), (" 10MB ", 10 << 20), (123, 123)],
)
def test_parse_byte_size(value: int | str, size: int) -> None:
    assert parse_byte_size(value) == size


@pytest.mark.parametrize("value", [-1, "ten", "10 parsecs", True, 1.5])
def test_parse_byte_size_rejects(value: object) -> None:
    with pytest.raises(InvalidInput):
        parse_byte_size(value)  # type: ignore[arg-type]


# -- session -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_graph(tmp_path_factory.mktemp("session") / "model.onnx", with_types=False)


def test_session_threads_spinning_and_affinity(graph: Path) -> None:
    session = create_session(graph, threads=3, cores=(4, 5, 6))
    options = session.get_session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.intra_op_thread_affinities") == "6;7"
    single = create_session(graph, threads=1, cores=(0,)).get_session_options()
    assert single.intra_op_num_threads == 1
    assert single.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    feeds = {"input_ids": np.array([[1, 2, 0]], np.int64), "attention_mask": np.array([[1, 1, 0]], np.int64)}
    embedding, tokens = session.run(None, feeds)
    assert embedding.shape == (1, 4) and tokens.shape == (1, 3, 4)


def test_session_options_are_checked(graph: Path) -> None:
    session = create_session(
        graph, threads=1, options={"graph_optimization_level": "basic", "enable_mem_pattern": False}
    )
    assert session.get_session_options().enable_mem_pattern is False
    assert set(EXPOSED_OPTIONS) >= {"graph_optimization_level", "enable_cpu_mem_arena"}
    with pytest.raises(InvalidInput, match=r"unknown session options \['intra_op_num_threads'\]"):
        create_session(graph, threads=1, options={"intra_op_num_threads": 8})
    with pytest.raises(InvalidInput, match="must be a bool"):
        create_session(graph, threads=1, options={"enable_cpu_mem_arena": "yes"})
    with pytest.raises(InvalidInput, match="graph_optimization_level"):
        create_session(graph, threads=1, options={"graph_optimization_level": "max"})
    with pytest.raises(InvalidInput, match="threads"):
        create_session(graph, threads=0)
    with pytest.raises(ValueError, match="need 2 cores"):
        create_session(graph, threads=2, cores=(0,))


def test_priming_shapes_are_the_scheduler_bounds_largest_batches() -> None:
    assert arena_priming_shapes(2048, 32, 512) == [(4, 512), (32, 64)]
    assert arena_priming_shapes(256, 32, 512) == [(1, 512), (32, 8)]  # one row may exceed the budget
    assert arena_priming_shapes(4096, 4, 128) == [(32, 128), (4, 128)]
    assert arena_priming_shapes(512, 1, 512) == [(1, 512)]


def test_prime_arena_runs_each_shape_on_ort_sessions_only(graph: Path) -> None:
    class Recording:
        def __init__(self, session: object) -> None:
            self.shapes: list[tuple[int, int]] = []
            self._session = session

        def run(self, names: object, feeds: dict[str, np.ndarray]) -> object:
            self.shapes.append(feeds["input_ids"].shape)
            assert (feeds["input_ids"] == 0).all() and (feeds["attention_mask"] == 1).all()
            return self._session.run(names, feeds)

    session = create_session(graph, threads=1)
    recorded = Recording(session)
    prime_arena(recorded, ["input_ids", "attention_mask"], 0, [(2, 3)])
    assert recorded.shapes == []  # not an ORT session: a test double has no arena
    calls: list[tuple[int, ...]] = []
    original = session.run
    session.run = lambda names, feeds: calls.append(feeds["input_ids"].shape) or original(names, feeds)  # type: ignore[method-assign]
    prime_arena(session, ["input_ids", "attention_mask"], 0, [(2, 3), (1, 7)])
    assert calls == [(2, 3), (1, 7)]


def test_memory_pattern_is_off_by_default(graph: Path) -> None:
    assert create_session(graph, threads=1).get_session_options().enable_mem_pattern is False
    on = create_session(graph, threads=1, options={"enable_mem_pattern": True})
    assert on.get_session_options().enable_mem_pattern is True


def test_profile_file_prefix_writes_an_operator_trace(graph: Path, tmp_path: Path) -> None:
    session = create_session(graph, threads=1, options={"profile_file_prefix": str(tmp_path / "trace")})
    feeds = {"input_ids": np.array([[1, 2, 0]], np.int64), "attention_mask": np.array([[1, 1, 0]], np.int64)}
    session.run(None, feeds)
    trace = Path(session.end_profiling())
    assert trace.parent == tmp_path and trace.name.startswith("trace")
    assert any(event.get("cat") == "Node" for event in json.loads(trace.read_text()))
    assert create_session(graph, threads=1).get_session_options().enable_profiling is False


def _residual_layernorm_graph(path: Path) -> Path:
    """``LayerNormalization(x + skip)``: the pattern ORT's load-time SkipLayerNormFusion rewrites."""
    from onnx import TensorProto, helper, numpy_helper, save

    width = 8
    nodes = [
        helper.make_node("Add", ["x", "skip"], ["sum"]),
        helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3, width]) for name in ("x", "skip")]
    weights = [numpy_helper.from_array(np.full(width, value, np.float32), name)
               for name, value in (("gamma", 1.0), ("beta", 0.0))]
    graph = helper.make_graph(nodes, "residual", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              weights)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_sessions_keep_the_residual_layernorm_unfused(tmp_path: Path) -> None:
    # ORT would fuse Add + LayerNormalization into SkipLayerNormalization, whose CPU kernel is the slow
    # one (engine.session.DISABLED_OPTIMIZERS): the operators that actually ran say whether it did.
    graph = _residual_layernorm_graph(tmp_path / "residual.onnx")
    session = create_session(graph, threads=1, options={"profile_file_prefix": str(tmp_path / "trace")})
    x = np.arange(24, dtype=np.float32).reshape(1, 3, 8)
    (y,) = session.run(None, {"x": x, "skip": x})
    ran = {event["args"]["op_name"] for event in json.loads(Path(session.end_profiling()).read_text())
           if event.get("cat") == "Node" and "op_name" in event.get("args", {})}
    assert {"Add", "LayerNormalization"} <= ran and "SkipLayerNormalization" not in ran
    total = 2 * x
    expected = (total - total.mean(-1, keepdims=True)) / np.sqrt(total.var(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_session_on_a_broken_graph_is_a_model_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(ModelError, match="cannot load ONNX graph"):
        create_session(broken, threads=1)
