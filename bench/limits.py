"""The machine's limit for a model: ONNX Runtime's own GEMM rate at the model's shapes, on the benchmark's cores.

Machines differ by 4-10× in int8 GEMM rate (AVX2 without VNNI, AVX-512 VNNI, AMX), so a throughput
is only comparable across machines as a share of what the same runtime can do on the same cores. The
limit here is measured, not looked up: for every weight GEMM shape ``[K, N]`` the graph holds
(:func:`bench.flops.graph_flops`), a one-node graph ``[tokens, K] × [K, N]`` (``MatMulInteger`` u8 × s8
for int8, ``MatMul`` for fp32) runs through :func:`engine.session.create_session` with the
configuration's threads, one session per allocation at once, each pinned to its own cores as the
engine pins them; a shape's time is the median of its runs over a quarter second, so a run the host
preempts does not lower the rate. The model's int8 rate is its total GEMM work over the time those
shapes take, weighted by how often each occurs. A run reads the rates at each of its configurations and
prices every row (engine and baselines alike) at the best configuration's median reading: what these
cores sustain.

``limit_share`` of a throughput = achieved operations per second ÷ the int8 rate (every counted
operation at int8 speed: the issue's "share of the int8 limit"); ``ideal_share`` prices the package's
fp32 nodes and attention products at the fp32 rate instead (what this exact package could reach).
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .flops import GraphFlops, corpus_flops, corpus_lengths, graph_flops

DEFAULT_TOKENS = 1024      # rows × padded length of a typical batch under the engine's 2048-token budget
SECONDS_PER_SHAPE = 0.25


@dataclasses.dataclass(frozen=True)
class Limit:
    """GEMM rates (operations per second, all allocations together) at one configuration."""

    allocations: int
    threads: int
    tokens: int
    int8_ops_per_s: float
    fp32_ops_per_s: float

    def share(self, ops_per_s: float) -> float:
        return ops_per_s / self.int8_ops_per_s if self.int8_ops_per_s else float("nan")

    def ideal_seconds(self, int8_ops: float, fp32_ops: float) -> float:
        return int8_ops / self.int8_ops_per_s + fp32_ops / self.fp32_ops_per_s

    def to_json(self) -> dict[str, Any]:
        return {"allocations": self.allocations, "threads": self.threads, "tokens": self.tokens,
                "int8_gops": round(self.int8_ops_per_s / 1e9, 1), "fp32_gflops": round(self.fp32_ops_per_s / 1e9, 1)}


def _gemm_graph(path: Path, k: int, n: int, int8: bool) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        weight = numpy_helper.from_array(rng.integers(-64, 64, (k, n), dtype=np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", a_type, ["T", k])],
                              [helper.make_tensor_value_info("Y", y_type, ["T", n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _rate(path: Path, k: int, tokens: int, int8: bool, allocations: int, threads: int,
          cpus: tuple[int, ...]) -> float:
    """Seconds per run of one GEMM graph, with ``allocations`` sessions running at once (the slowest's)."""
    from engine.cores import pin_current_thread
    from engine.session import create_session

    feed = (np.random.default_rng(1).integers(0, 255, (tokens, k), dtype=np.uint8) if int8
            else np.random.default_rng(1).standard_normal((tokens, k), dtype=np.float32))
    barrier = threading.Barrier(allocations)
    seconds: list[float] = []
    errors: list[BaseException] = []

    def worker(number: int) -> None:
        try:
            cores = cpus[number * threads:(number + 1) * threads]
            pinned = cores if len(cores) == threads else None
            if pinned:
                pin_current_thread(pinned)
            session = create_session(path, threads, pinned)
            session.run(None, {"A": feed})
            barrier.wait()
            times: list[float] = []
            started = time.perf_counter()
            while time.perf_counter() - started < SECONDS_PER_SHAPE or len(times) < 5:
                began = time.perf_counter()
                session.run(None, {"A": feed})
                times.append(time.perf_counter() - began)
            seconds.append(float(np.median(times)))
        except BaseException as error:  # re-raised in the caller: a limit must not silently be wrong
            errors.append(error)
            barrier.abort()

    workers = [threading.Thread(target=worker, args=(number,)) for number in range(allocations)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        raise RuntimeError(f"GEMM limit measurement failed: {errors[0]!r}") from errors[0]
    return max(seconds)


def measure_limit(flops: GraphFlops, allocations: int, threads: int, tokens: int = DEFAULT_TOKENS) -> Limit:
    """ORT's int8 and fp32 GEMM rates at the graph's weight shapes, ``allocations`` × ``threads``."""
    from engine.cores import allowed_cpus

    cpus = allowed_cpus()
    counts: dict[tuple[int, int], int] = {}
    for (k, n, _), count in flops.shapes.items():
        counts[(k, n)] = counts.get((k, n), 0) + count
    rates = {}
    with tempfile.TemporaryDirectory(prefix="engine-limit-") as scratch:
        for int8 in (True, False):
            work = seconds = 0.0
            for (k, n), count in sorted(counts.items()):
                path = Path(scratch, f"gemm-{k}-{n}-{int(int8)}.onnx")
                _gemm_graph(path, k, n, int8)
                work += count * 2.0 * tokens * k * n
                seconds += count * _rate(path, k, tokens, int8, allocations, threads, cpus)
            rates[int8] = allocations * work / seconds if seconds else 0.0
    return Limit(allocations, threads, tokens, rates[True], rates[False])


def limit_columns(limit: Limit, docs_per_s: float, n_docs: int, int8_ops: float, fp32_ops: float) -> dict[str, Any]:
    """What a benchmark row adds: its operations per second and its shares of the limit."""
    ops_per_doc = (int8_ops + fp32_ops) / n_docs
    achieved = docs_per_s * ops_per_doc
    ideal_docs_per_s = n_docs / limit.ideal_seconds(int8_ops, fp32_ops)
    return {"gops": round(achieved / 1e9, 2), "gop_per_doc": round(ops_per_doc / 1e9, 4),
            "limit_share": round(limit.share(achieved), 4),
            "ideal_share": round(docs_per_s / ideal_docs_per_s, 4), "limit": limit.to_json()}


def sustained_limit(readings: list[Limit]) -> Limit:
    """The limit a run is priced at: each configuration's median reading, then the best configuration
    (int8 and fp32 apart). Medians, not the single best reading: on a shared host one reading can be far
    off the others of the same minute (one core read 970 GOPS, then 491-568 in the five readings that
    followed within 25 s; in another run 1,183 then 590), and a benchmark's throughput is sustained work
    that such a moment does not speed up."""
    by_config: dict[tuple[int, int], list[Limit]] = {}
    for reading in readings:
        by_config.setdefault((reading.allocations, reading.threads), []).append(reading)
    medians = [Limit(allocations, threads, group[0].tokens,
                     float(np.median([reading.int8_ops_per_s for reading in group])),
                     float(np.median([reading.fp32_ops_per_s for reading in group])))
               for (allocations, threads), group in by_config.items()]
    best = max(medians, key=lambda reading: reading.int8_ops_per_s)
    return dataclasses.replace(best, fp32_ops_per_s=max(reading.fp32_ops_per_s for reading in medians))


def attach_limits(rows: list[dict[str, Any]], package: str, texts: list[str], task_config: dict[str, Any],
                  threads_of: dict[str, tuple[int, int]], tokens: int = DEFAULT_TOKENS,
                  progress: Any = print) -> dict[str, Any]:
    """Add the limit columns to every benchmark row, in place; returns what the run's metadata records.

    The rates are read at every ``(allocations, threads)`` the run used (``threads_of`` maps an engine
    row's ``config`` label to it; the baselines are one process on every allowed core), twice each,
    alternating; the limit every row is priced at is the best configuration's median int8 and fp32 rates
    (:func:`sustained_limit`): what these cores sustain, whichever way they are split, so one system's
    share is comparable with another's in the same table.
    """
    from engine.cores import allowed_cpus
    from engine.package import load_package

    flops = graph_flops(load_package(package, verify=False).graph_path)
    int8_ops, fp32_ops = corpus_flops(flops, corpus_lengths(package, texts, task_config))
    every_core = (1, len(allowed_cpus()))
    wanted = sorted({threads_of.get(row["config"], every_core) if row["system"] == "engine" else every_core
                     for row in rows})
    readings = [measure_limit(flops, allocations, threads, tokens)
                for _ in range(2) for allocations, threads in wanted]
    limit = sustained_limit(readings)
    for reading in readings:
        progress(f"  limit reading {reading.allocations}x{reading.threads}: int8 {reading.int8_ops_per_s / 1e9:.1f} "
                 f"GOPS, fp32 {reading.fp32_ops_per_s / 1e9:.1f} GFLOP/s at [{tokens}, K] x [K, N]")
    for row in rows:
        row.update(limit_columns(limit, row["docs_per_s"], len(texts), int8_ops, fp32_ops))
    return {"flops": flops.to_json(), "gop_per_doc": round((int8_ops + fp32_ops) / len(texts) / 1e9, 4),
            "int8_share_of_ops": round(int8_ops / (int8_ops + fp32_ops), 4),
            "limits": [limit.to_json()], "readings": [reading.to_json() for reading in readings]}
