"""The scheduler with real threads and a real (tiny) ONNX graph.

The graph is built here with onnx.helper: ``tokens = E[input_ids] + token_type_ids`` (``[batch,
sequence, dim]``) and ``embedding`` = the masked mean of ``tokens`` (``[batch, dim]``), so every
result can be recomputed in numpy from the text alone. A fake task implements the Task protocol
with a word-hash tokenizer. Tests that need the queue to fill wrap the real session in a *gate*
that holds ``run`` until the test opens it: ordering is then decided by the test, not by timing.
Nothing here asserts speed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engine.config import DeploymentConfig
from engine.deployment import INLINE_CHARS, Deployment
from engine.errors import (
    DeploymentStopped,
    InferenceFailed,
    InferenceTimeout,
    InvalidInput,
    ModelError,
    NotDeployed,
    QueueFull,
)
from engine.manifest import Manifest, TokenizationConfig
from engine.scheduler import Entry, Request, RequestQueue
from engine.session import create_session
from engine.units import format_time_value
from tests.tolerances import FAKE_GRAPH_ABS, FAKE_GRAPH_REL

VOCAB = 64
DIM = 4
PAD_ID = 0
POISON_WORD = "poison"
WAIT_S = 20.0  # the longest any wait_until may take before the test fails (a hang, not a speed check)


# -- the tiny graph ------------------------------------------------------------------------------


def embedding_table() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((VOCAB, DIM)).astype(np.float32)


def build_graph(path: Path, with_types: bool, table: np.ndarray | None = None) -> Path:
    """``tokens = E[ids] (+ types)``, ``embedding = sum(tokens * mask) / sum(mask)`` over the sequence."""
    table = embedding_table() if table is None else table
    vocab, dim = table.shape
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
    ]
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["gathered"], axis=0)]
    if with_types:
        inputs.append(
            helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "sequence"])
        )
        nodes += [
            helper.make_node("Cast", ["token_type_ids"], ["types_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["types_f", "axis2"], ["types_3d"]),
            helper.make_node("Add", ["gathered", "types_3d"], ["tokens"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["gathered"], ["tokens"]))
    nodes += [
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask_3d"]),
        helper.make_node("Mul", ["tokens", "mask_3d"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask_f", "axis1"], ["count"], keepdims=1),
        helper.make_node("Div", ["summed", "count"], ["embedding"]),
    ]
    initializers = [
        helper.make_tensor("table", TensorProto.FLOAT, [vocab, dim], table.ravel()),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
    ]
    outputs = [
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim]),
        helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "sequence", dim]),
    ]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


# -- a fake task that honours the Task protocol -----------------------------------------------------


@dataclasses.dataclass
class Window:
    input_ids: np.ndarray
    token_type_ids: np.ndarray


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    window: int = 0  # body tokens per window; 0 = one window
    tag: str = ""  # changes nothing but the cache key

    def cache_key(self) -> tuple[Any, ...]:
        return ("fake", self.window, self.tag)


@dataclasses.dataclass
class FakePrepared:
    text: str
    windows: list[Window]
    is_truncated: bool = False


POISON_ID = VOCAB - 1  # no other word maps here


def word_id(word: str) -> int:
    if word == POISON_WORD:
        return POISON_ID
    return 3 + sum(word.encode()) % (VOCAB - 4)


def rows_for(text: str, cfg: FakeConfig) -> list[Window]:
    body = [word_id(word) for word in text.split()]
    size = cfg.window or len(body)
    chunks = [body[start : start + size] for start in range(0, len(body), size)]
    windows = []
    for number, chunk in enumerate(chunks):
        ids = np.array([1, *chunk, 2], dtype=np.int64)
        windows.append(Window(ids, np.full(len(ids), number % 2, dtype=np.int64)))
    return windows


class FakeRunner:
    """A task runner (engine.tasks.TaskRunner's three calls) over the fake graph's outputs."""

    name = "text_embedding"

    def parse_config(self, config: Mapping[str, Any]) -> FakeConfig:
        unknown = set(config) - {"window", "tag"}
        if unknown:
            raise InvalidInput(f"unknown field {sorted(unknown)}")
        return FakeConfig(**config)

    def prepare(self, text: str, cfg: FakeConfig) -> FakePrepared:
        if not text.strip():
            raise InvalidInput("text must not be empty")
        return FakePrepared(text, rows_for(text, cfg))

    def finish(self, prepared: FakePrepared, outputs: list[tuple[np.ndarray, ...]], cfg: FakeConfig) -> dict:
        return {
            "text": prepared.text,
            "embeddings": [row[0] for row in outputs],
            "tokens": [row[1] for row in outputs],
        }


def expected(text: str, cfg: FakeConfig = FakeConfig(), with_types: bool = True) -> dict:
    table = embedding_table()
    embeddings, tokens = [], []
    for window in rows_for(text, cfg):
        rows = table[window.input_ids] + (window.token_type_ids[:, None] if with_types else 0)
        tokens.append(rows)
        embeddings.append(rows.mean(axis=0))
    return {"text": text, "embeddings": embeddings, "tokens": tokens}


def assert_result(result: dict, text: str, cfg: FakeConfig = FakeConfig()) -> None:
    want = expected(text, cfg)
    assert result["text"] == text
    assert len(result["embeddings"]) == len(want["embeddings"])
    for got, ref in zip(result["embeddings"], want["embeddings"], strict=True):
        np.testing.assert_allclose(got, ref, rtol=FAKE_GRAPH_REL, atol=FAKE_GRAPH_ABS)
    for got, ref in zip(result["tokens"], want["tokens"], strict=True):
        assert got.shape == ref.shape  # the sequence axis is trimmed to the window's own length
        np.testing.assert_allclose(got, ref, rtol=FAKE_GRAPH_REL, atol=FAKE_GRAPH_ABS)


@dataclasses.dataclass(frozen=True)
class FakeTokenizer:
    pad_token_id: int = PAD_ID


@dataclasses.dataclass(frozen=True)
class FakePackage:
    path: Path
    manifest: Manifest
    tokenizer: FakeTokenizer
    runner: FakeRunner

    @property
    def graph_path(self) -> Path:
        return self.path / self.manifest.graph

    @property
    def size_bytes(self) -> int:
        return self.graph_path.stat().st_size


def make_package(directory: Path, with_types: bool = True) -> FakePackage:
    directory.mkdir(parents=True, exist_ok=True)
    build_graph(directory / "model.onnx", with_types)
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
    manifest = Manifest(
        task="text_embedding",
        architecture="bert",
        graph="model.onnx",
        inputs=inputs,
        outputs=[
            {"name": "embedding", "axes": ["batch", "hidden"], "meaning": "mean of tokens"},
            {"name": "tokens", "axes": ["batch", "sequence", "hidden"], "meaning": "token vectors"},
        ],
        tokenizer="tokenizer.json",
        tokenization=TokenizationConfig(),
    )
    return FakePackage(directory, manifest, FakeTokenizer(), FakeRunner())


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> FakePackage:
    return make_package(tmp_path_factory.mktemp("tiny"))


# -- a gate in front of the real session -----------------------------------------------------------


class Gate:
    """Records every batch and holds ``run`` while closed; rows holding the poison word raise."""

    def __init__(self, open_: bool = True) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.threads: list[int] = []  # the thread that ran each batch
        self.cores: list[set[int]] = []  # and the cores it was allowed at the time
        self._open = threading.Event()
        if open_:
            self._open.set()
        self._lock = threading.Lock()
        self.entered = threading.Semaphore(0)

    def open(self) -> None:
        self._open.set()

    def factory(self) -> Callable[..., Any]:
        def build(path: Path, threads: int, cores: Any, options: Any) -> GatedSession:
            return GatedSession(create_session(path, threads, cores, options), self)

        return build

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=WAIT_S), "no batch reached the session"


class GatedSession:
    def __init__(self, session: Any, gate: Gate) -> None:
        self._session = session
        self._gate = gate

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        rows = [
            tuple(int(i) for i, m in zip(ids, mask, strict=True) if m)
            for ids, mask in zip(feeds["input_ids"], feeds["attention_mask"], strict=True)
        ]
        with self._gate._lock:
            self._gate.batches.append(rows)
            self._gate.threads.append(threading.get_ident())
            self._gate.cores.append(os.sched_getaffinity(0))
        self._gate.entered.release()
        assert self._gate._open.wait(WAIT_S), "the test never opened the gate"
        if any(POISON_ID in row for row in rows):
            raise RuntimeError("poisoned row")
        return self._session.run(names, feeds)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.005)


def pending(deployment: Deployment) -> int:
    return deployment.stats()["number_of_pending_requests"]


@pytest.fixture
def pool() -> concurrent.futures.ThreadPoolExecutor:
    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as executor:
        yield executor


def one_cpu() -> tuple[int, ...]:
    return (min(os.sched_getaffinity(0)),)


def gated(package: FakePackage, gate: Gate, **config: Any) -> Deployment:
    config.setdefault("cpus", one_cpu())
    config.setdefault("cache_size", 0)
    return Deployment(package, DeploymentConfig(**config), session_factory=gate.factory())


def submit_and_wait_queued(
    deployment: Deployment, pool: concurrent.futures.Executor, texts: list[str], **kwargs: Any
) -> concurrent.futures.Future:
    """Start an infer call in the pool and return once its texts count as pending."""
    before = pending(deployment)
    future = pool.submit(deployment.infer, texts, **kwargs)
    wait_until(lambda: pending(deployment) >= before + len(texts) or future.done())
    return future


# -- correctness under concurrency -------------------------------------------------------------------

TEXTS = [
    "alpha",
    "beta gamma",
    "delta epsilon zeta eta theta",
    "iota kappa lambda mu nu xi omicron pi rho",
    "sigma",
    "tau upsilon phi",
    "chi psi omega a b c d e f g h i j k l",
    "m n",
]


def test_many_concurrent_callers_get_their_own_results_in_order(package: FakePackage, pool) -> None:
    cpus = tuple(sorted(os.sched_getaffinity(0)))[:2]
    config = DeploymentConfig(number_of_allocations=len(cpus), cpus=cpus, max_batch_tokens=40, cache_size=0)
    with Deployment(package, config) as deployment:
        calls = []
        for caller in range(24):
            texts = [TEXTS[(caller + offset) % len(TEXTS)] for offset in range(1 + caller % 5)]
            cfg = FakeConfig(window=3 if caller % 3 == 0 else 0)
            kwargs = {"window": cfg.window} if cfg.window else {}
            calls.append((texts, cfg, pool.submit(deployment.infer, texts, **kwargs)))
        for texts, cfg, future in calls:
            results = future.result(timeout=WAIT_S)
            assert len(results) == len(texts)
            for result, text in zip(results, texts, strict=True):
                assert_result(result, text, cfg)
        stats = deployment.stats()
        assert stats["inference_count"] == sum(len(texts) for texts, _, _ in calls)
        assert stats["number_of_pending_requests"] == 0
        assert stats["error_count"] == stats["timeout_count"] == stats["rejected_execution_count"] == 0


def test_graph_without_token_types_gets_no_token_type_input(tmp_path: Path) -> None:
    package = make_package(tmp_path / "plain", with_types=False)
    with Deployment(package, DeploymentConfig(cpus=one_cpu(), cache_size=0)) as deployment:
        result = deployment.infer(["one two three four"], window=2)[0]
    want = expected("one two three four", FakeConfig(window=2), with_types=False)
    np.testing.assert_allclose(result["embeddings"][1], want["embeddings"][1], rtol=FAKE_GRAPH_REL)


def test_a_text_too_big_for_one_batch_is_split_and_reassembled(package: FakePackage) -> None:
    gate = Gate()
    text = " ".join(f"w{number}" for number in range(12))
    with gated(package, gate, max_batch_tokens=10) as deployment:
        result = deployment.infer(text, window=2)[0]  # 6 windows of 4 tokens; 2 fit a batch
    assert_result(result, text, FakeConfig(window=2))
    assert [len(batch) for batch in gate.batches] == [2, 2, 2]


def test_invalid_text_fails_the_whole_call_before_anything_is_queued(package: FakePackage) -> None:
    gate = Gate()
    with gated(package, gate) as deployment:
        with pytest.raises(InvalidInput):
            deployment.infer(["fine", "   "])
        with pytest.raises(InvalidInput):
            deployment.infer(["fine"], unknown_key=1)
        with pytest.raises(InvalidInput, match="priority"):
            deployment.infer(["fine"], priority="urgent")
        with pytest.raises(InvalidInput, match="must be a string"):
            deployment.infer(["fine", 3])
        assert gate.batches == []
        assert deployment.stats()["inference_count"] == 0
        assert deployment.infer([]) == []


def test_ainfer_serves_concurrent_coroutines_and_times_out(package: FakePackage) -> None:
    gate = Gate()
    with gated(package, gate) as deployment:

        async def main() -> list[list[dict]]:
            return await asyncio.gather(*(deployment.ainfer([text]) for text in TEXTS))

        for results, text in zip(asyncio.run(main()), TEXTS, strict=True):
            assert_result(results[0], text)

        gate._open.clear()

        async def late() -> None:
            await deployment.ainfer(["slow"], timeout=0.05)

        with pytest.raises(InferenceTimeout, match=r"timeout \[50ms\] waiting for inference result"):
            asyncio.run(late())
        gate.open()
        assert deployment.stats()["timeout_count"] == 1


class ThreadRecordingRunner(FakeRunner):
    """The fake task, noting which thread tokenises and which post-processes."""

    def __init__(self) -> None:
        self.threads: dict[str, set[int]] = {"prepare": set(), "finish": set()}

    def prepare(self, text: str, cfg: FakeConfig) -> FakePrepared:
        self.threads["prepare"].add(threading.get_ident())
        return super().prepare(text, cfg)

    def finish(self, prepared: FakePrepared, outputs: list[tuple[np.ndarray, ...]], cfg: FakeConfig) -> dict:
        self.threads["finish"].add(threading.get_ident())
        return super().finish(prepared, outputs, cfg)


def test_ainfer_prepares_short_requests_on_the_loop_and_long_ones_in_the_executor(package: FakePackage) -> None:
    runner = ThreadRecordingRunner()
    short = "delta epsilon zeta"
    long = " ".join(["omega"] * (INLINE_CHARS // len("omega") + 1))
    with gated(dataclasses.replace(package, runner=runner), Gate()) as deployment:

        async def run(text: str) -> tuple[list[dict], int]:
            return await deployment.ainfer([text]), threading.get_ident()

        result, loop_thread = asyncio.run(run(short))
        assert_result(result[0], short)
        assert runner.threads == {"prepare": {loop_thread}, "finish": {loop_thread}}
        runner.threads = {"prepare": set(), "finish": set()}
        result, loop_thread = asyncio.run(run(long))
        assert_result(result[0], long)
        assert runner.threads["prepare"] and loop_thread not in runner.threads["prepare"]
        assert runner.threads["finish"] and loop_thread not in runner.threads["finish"]


def test_ainfer_with_usage_counts_every_row_of_every_text(package: FakePackage) -> None:
    texts = ["alpha beta gamma delta epsilon", "zeta"]
    with gated(package, Gate()) as deployment:
        results, counts = asyncio.run(deployment.ainfer_with_usage(texts, window=2))
    for result, text in zip(results, texts, strict=True):
        assert_result(result, text, FakeConfig(window=2))
    # windows of 2 body tokens, each with its two special tokens: 5 words -> 3 rows, 1 word -> 1 row
    assert counts == [sum(len(row.input_ids) for row in rows_for(text, FakeConfig(window=2))) for text in texts]
    assert counts == [3 * 2 + 5, 3]


def test_cancelling_ainfer_withdraws_its_queued_texts(package: FakePackage) -> None:
    gate = Gate(open_=False)
    with gated(package, gate) as deployment:

        async def main() -> None:
            running = asyncio.ensure_future(deployment.ainfer(["first"]))
            await asyncio.to_thread(gate.wait_entered)  # "first" holds the only allocation
            queued = asyncio.ensure_future(deployment.ainfer(["second", "third"]))
            while pending(deployment) < 3:
                await asyncio.sleep(0.005)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert pending(deployment) == 1
            gate.open()
            assert_result((await running)[0], "first")

        asyncio.run(main())
        assert [row for batch in gate.batches for row in batch] == [(1, word_id("first"), 2)]


def test_a_lone_call_without_timeout_runs_on_the_callers_thread(package: FakePackage) -> None:
    gate = Gate()
    with gated(package, gate, pin_threads=True) as deployment:
        own_cores = os.sched_getaffinity(0)
        assert_result(deployment.infer(["alpha beta"])[0], "alpha beta")
        assert gate.threads == [threading.get_ident()]  # no hand-off to the worker and back
        assert gate.cores == [own_cores]  # a one-thread run stays where the caller is (no migration)
        assert_result(deployment.infer(["gamma"], timeout=WAIT_S)[0], "gamma")
        assert gate.threads[1] != threading.get_ident()  # with a timeout the worker runs it (408 stays possible)
        stats = deployment.stats()
        assert stats["inference_count"] == 2 and stats["number_of_pending_requests"] == 0
    low = Gate()
    with gated(package, low, priority="low") as deployment:
        deployment.infer(["alpha"])
        assert low.threads and low.threads[0] != threading.get_ident()  # the worker's nice value applies


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a two-thread allocation needs two allowed CPUs")
def test_a_caller_borrowing_a_multi_thread_allocation_is_pinned_to_its_cores_for_the_run(
        package: FakePackage) -> None:
    gate = Gate()
    two = tuple(sorted(os.sched_getaffinity(0))[:2])
    own_cores = os.sched_getaffinity(0)
    with gated(package, gate, pin_threads=True, cpus=two, threads_per_allocation=2) as deployment:
        os.sched_setaffinity(0, {two[0]})  # the caller on one core; the allocation has two
        try:
            assert_result(deployment.infer(["alpha beta"])[0], "alpha beta")
            assert gate.threads == [threading.get_ident()]
            assert gate.cores == [set(two)]  # beside the session's pool thread on the other core
            assert os.sched_getaffinity(0) == {two[0]}  # for the run only
        finally:
            os.sched_setaffinity(0, own_cores)


def test_while_a_caller_runs_its_batch_the_worker_takes_nothing_and_then_serves_the_queue(
        package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    with gated(package, gate) as deployment:
        first = pool.submit(deployment.infer, ["alpha"])
        gate.wait_entered()
        second = submit_and_wait_queued(deployment, pool, ["beta gamma"])
        time.sleep(0.05)
        assert len(gate.batches) == 1  # the allocation is lent: one batch at a time on its cores
        gate.open()
        assert_result(first.result(WAIT_S)[0], "alpha")
        assert_result(second.result(WAIT_S)[0], "beta gamma")
        assert len(set(gate.threads)) == 2  # the first on its caller's thread, the second on the worker


def test_stop_waits_for_a_batch_a_caller_runs(package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    deployment = gated(package, gate)
    running = pool.submit(deployment.infer, ["alpha"])
    gate.wait_entered()
    stopping = pool.submit(deployment.stop)
    time.sleep(0.05)
    assert not stopping.done()  # a running batch finishes, whoever runs it
    gate.open()
    assert_result(running.result(WAIT_S)[0], "alpha")
    stopping.result(WAIT_S)
    assert deployment.state == "stopped"


# -- the queue ---------------------------------------------------------------------------------------


def test_full_queue_rejects_with_elasticsearch_message(package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    with gated(package, gate, queue_capacity=3) as deployment:
        running = submit_and_wait_queued(deployment, pool, ["first"])
        gate.wait_entered()
        queued = submit_and_wait_queued(deployment, pool, ["a", "b", "c"])
        with pytest.raises(QueueFull, match=r"^inference process queue is full. Unable to execute command$"):
            deployment.infer(["one too many"])
        assert deployment.stats()["rejected_execution_count"] == 1
        gate.open()
        assert_result(running.result(WAIT_S)[0], "first")
        assert [r["text"] for r in queued.result(WAIT_S)] == ["a", "b", "c"]


def test_four_times_capacity_every_caller_gets_a_result_or_queue_full(package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    capacity, callers = 4, 16
    with gated(package, gate, queue_capacity=capacity) as deployment:
        texts = [TEXTS[number % len(TEXTS)] + f" n{number}" for number in range(callers)]
        futures = [pool.submit(deployment.infer, [text]) for text in texts]
        wait_until(lambda: (pending(deployment) + deployment.stats()["rejected_execution_count"]) == callers)
        gate.open()
        answered = rejected = 0
        for text, future in zip(texts, futures, strict=True):
            try:
                assert_result(future.result(WAIT_S)[0], text)
                answered += 1
            except QueueFull:
                rejected += 1
        stats = deployment.stats()
        assert answered + rejected == callers
        assert rejected >= callers - capacity - len(gate.batches[0])
        assert stats["rejected_execution_count"] == rejected
        assert stats["inference_count"] == answered
        assert stats["number_of_pending_requests"] == 0


def test_priorities_are_served_high_normal_low_fifo_within_each(package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    with gated(package, gate, max_batch_tokens=4) as deployment:  # one 3-token text per batch
        first = submit_and_wait_queued(deployment, pool, ["first"])
        gate.wait_entered()
        order = [
            ("low", "l1"),
            ("normal", "n1"),
            ("high", "h1"),
            ("normal", "n2"),
            ("low", "l2"),
            ("high", "h2"),
        ]
        futures = [
            submit_and_wait_queued(deployment, pool, [text], priority=priority) for priority, text in order
        ]
        gate.open()
        first.result(WAIT_S)
        for future in futures:
            future.result(WAIT_S)
    served = [batch[0][1] for batch in gate.batches[1:]]
    assert served == [word_id(text) for text in ("h1", "h2", "n1", "n2", "l1", "l2")]


def test_batcher_groups_similar_lengths_within_the_token_budget() -> None:
    queue = RequestQueue(capacity=10, max_batch_tokens=40, grouping_window=8)
    request = Request(5, None)
    entries = [
        Entry(request, index, [Window(np.zeros(length, np.int64), np.zeros(length, np.int64))], 1, None)
        for index, length in enumerate([10, 50, 11, 49, 12])
    ]
    assert queue.offer(entries)
    lengths = [[len(entry.windows[row].input_ids) for entry, row in queue.take_batch()] for _ in range(3)]
    assert lengths == [[10, 11, 12], [50], [49]]
    assert queue.take_batch() == [] and queue.live == 0


def test_batcher_caps_rows_so_other_allocations_get_work() -> None:
    queue = RequestQueue(capacity=20, max_batch_tokens=10_000, grouping_window=32, max_batch_rows=4)
    request = Request(10, None)
    entries = [
        Entry(request, index, [Window(np.zeros(5, np.int64), np.zeros(5, np.int64))], 1, None)
        for index in range(10)
    ]
    assert queue.offer(entries)
    sizes = [len(queue.take_batch()) for _ in range(4)]
    assert sizes == [4, 4, 2, 0]


def test_two_allocations_both_run_a_batch_of_one_shallow_request(package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    deployment = gated(package, gate, number_of_allocations=2, cpus=(0, 1), pin_threads=False, max_batch_rows=4)
    with deployment:
        texts = [f"w{index} x{index} y{index}" for index in range(8)]
        future = pool.submit(deployment.infer, texts)
        gate.wait_entered()
        gate.wait_entered()  # both workers hold a batch before either finishes
        assert [len(batch) for batch in gate.batches] == [4, 4]
        assert len(set(gate.threads)) == 2
        gate.open()
        for result, text in zip(future.result(WAIT_S), texts, strict=True):
            assert_result(result, text)


def test_batcher_splits_an_oversize_head_and_never_mixes_priorities() -> None:
    queue = RequestQueue(capacity=10, max_batch_tokens=25, grouping_window=8)
    request = Request(3, None)

    def entry(index: int, rows: int, rank: int) -> Entry:
        return Entry(
            request, index, [Window(np.ones(10, np.int64), np.zeros(10, np.int64))] * rows, rank, None
        )

    big, low, other = entry(0, 5, 1), entry(1, 1, 2), entry(2, 1, 1)
    assert queue.offer([big, low, other])
    assert not queue.offer([entry(3, 1, 1)] * 8)  # all or nothing: 3 + 8 > 10
    batches = [[(e.index, row) for e, row in queue.take_batch()] for _ in range(4)]
    assert batches == [[(0, 0), (0, 1)], [(0, 2), (0, 3)], [(0, 4), (2, 0)], [(1, 0)]]
    assert queue.live == 0


def test_timeout_in_queue_is_counted_and_the_entry_skipped(package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    with gated(package, gate) as deployment:
        running = submit_and_wait_queued(deployment, pool, ["first"])
        gate.wait_entered()
        with pytest.raises(InferenceTimeout, match=r"^timeout \[200ms\] waiting for inference result$"):
            deployment.infer(["never runs"], timeout=0.2)
        stats = deployment.stats()
        assert stats["timeout_count"] == 1 and stats["number_of_pending_requests"] == 1
        gate.open()
        assert_result(running.result(WAIT_S)[0], "first")
        assert_result(deployment.infer(["after"])[0], "after")
    assert all(word_id("never") not in row for batch in gate.batches for row in batch)


def test_late_result_is_dropped_and_not_counted(package: FakePackage) -> None:
    gate = Gate(open_=False)
    with gated(package, gate) as deployment:
        with pytest.raises(InferenceTimeout):
            deployment.infer(["too slow"], timeout=0.1)
        assert len(gate.batches) == 1  # it was running when the timer fired
        gate.open()
        wait_until(lambda: deployment.stats()["number_of_pending_requests"] == 0)
        assert_result(deployment.infer(["next"])[0], "next")
        stats = deployment.stats()
    assert stats["timeout_count"] == 1
    assert stats["inference_count"] == 1


# -- failures and stopping ---------------------------------------------------------------------------


def test_failed_batch_fails_only_its_requests(package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    with gated(package, gate) as deployment:
        running = submit_and_wait_queued(deployment, pool, ["first"])
        gate.wait_entered()
        poisoned = submit_and_wait_queued(deployment, pool, [POISON_WORD])
        neighbour = submit_and_wait_queued(deployment, pool, ["shares the batch"])
        gate.open()
        assert_result(running.result(WAIT_S)[0], "first")
        for future in (poisoned, neighbour):
            with pytest.raises(InferenceFailed, match=r"^Error in inference process: \[poisoned row\]$"):
                future.result(WAIT_S)
        assert deployment.stats()["error_count"] == 2

    gate = Gate()
    with gated(package, gate, max_batch_tokens=4) as deployment:  # one text per batch
        futures = {
            text: pool.submit(deployment.infer, [text]) for text in [*TEXTS[:4], POISON_WORD, *TEXTS[4:]]
        }
        for text, future in futures.items():
            if text == POISON_WORD:
                with pytest.raises(InferenceFailed):
                    future.result(WAIT_S)
            else:
                assert_result(future.result(WAIT_S)[0], text)
        assert deployment.stats()["error_count"] == 1


def test_stop_without_drain_cancels_queued_requests(package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    deployment = gated(package, gate, max_batch_tokens=4)
    running = submit_and_wait_queued(deployment, pool, ["first"])
    gate.wait_entered()
    queued = [submit_and_wait_queued(deployment, pool, [text]) for text in ("b", "c")]
    stopping = pool.submit(deployment.stop, drain=False)
    for future in queued:
        with pytest.raises(DeploymentStopped, match=r"^inference canceled as process is stopping$"):
            future.result(WAIT_S)
    with pytest.raises(DeploymentStopped):
        deployment.infer(["while stopping"])
    gate.open()
    assert_result(running.result(WAIT_S)[0], "first")
    stopping.result(WAIT_S)
    assert deployment.stats()["state"] == "stopped"
    with pytest.raises(NotDeployed):
        deployment.infer(["after"])
    assert len(gate.batches) == 1


def test_stop_with_drain_answers_everything_queued(package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    deployment = gated(package, gate, max_batch_tokens=4)
    futures = {"first": submit_and_wait_queued(deployment, pool, ["first"])}
    gate.wait_entered()
    for text in ("b", "c", "d"):
        futures[text] = submit_and_wait_queued(deployment, pool, [text])
    stopping = pool.submit(deployment.stop)
    wait_until(lambda: deployment.state == "stopping")
    gate.open()
    for text, future in futures.items():
        assert_result(future.result(WAIT_S)[0], text)
    stopping.result(WAIT_S)
    assert deployment.state == "stopped"


# -- allocations, stats, cache -----------------------------------------------------------------------


def test_live_update_up_and_down_while_requests_run(package: FakePackage, pool) -> None:
    config = DeploymentConfig(cpus=tuple(range(8)), pin_threads=False, cache_size=0, max_batch_tokens=20)
    with Deployment(package, config) as deployment:
        stop = threading.Event()

        def caller(number: int) -> int:
            done = 0
            while not stop.is_set():
                texts = [TEXTS[(number + done) % len(TEXTS)], TEXTS[(number + 3 * done) % len(TEXTS)]]
                for result, text in zip(deployment.infer(texts), texts, strict=True):
                    assert_result(result, text)
                done += 1
            return done

        callers = [pool.submit(caller, number) for number in range(6)]
        for count in (4, 2, 3, 1, 100):
            deployment.update(number_of_allocations=count)
            stats = deployment.stats()
            effective = min(count, 8)  # clamped to ceil(8 cpus / 1 thread)
            assert stats["allocation_status"] == {
                "allocation_count": effective,
                "target_allocation_count": effective,
                "state": "fully_allocated",
            }
            assert stats["number_of_allocations"] == effective
        stop.set()
        total = sum(future.result(WAIT_S) for future in callers)
        assert deployment.stats()["inference_count"] == 2 * total
        with pytest.raises(InvalidInput):
            deployment.update(number_of_allocations=0)


def test_stats_count_what_was_sent(package: FakePackage) -> None:
    config = DeploymentConfig(cpus=one_cpu(), cache_size=0, queue_capacity=50, deployment_id="tiny-dep")
    with Deployment(package, config) as deployment:
        for size in (2, 3, 4):
            deployment.infer(TEXTS[:size])
        stats = deployment.stats()
    assert stats["inference_count"] == 9
    assert stats["inference_cache_hit_count"] == 0
    assert stats["average_inference_time_ms"] > 0
    assert stats["average_inference_time_ms"] == pytest.approx(
        stats["average_inference_time_ms_excluding_cache_hits"]
    )
    assert stats["number_of_pending_requests"] == 0
    assert stats["deployment_id"] == "tiny-dep" and stats["model_id"] == package.path.name
    assert stats["queue_capacity"] == 50 and stats["priority"] == "normal" and stats["cache_size"] == 0
    assert stats["threads_per_allocation"] == 1 and stats["number_of_allocations"] == 1
    assert stats["state"] == "started"
    assert abs(stats["start_time"] - time.time() * 1000) < 600_000
    assert stats["thread_settings"]["cores"] == [list(one_cpu())]


def test_cache_hits_skip_the_graph_and_clear_cache_empties_it(package: FakePackage) -> None:
    gate = Gate()
    with gated(package, gate, cache_size="1mb") as deployment:
        first = deployment.infer(["cached text", "other"])
        runs = len(gate.batches)
        again = deployment.infer(["other", "cached text"])
        assert len(gate.batches) == runs
        assert_result(again[0], "other")
        assert_result(again[1], "cached text")
        np.testing.assert_array_equal(again[1]["embeddings"][0], first[0]["embeddings"][0])
        stats = deployment.stats()
        assert stats["inference_cache_hit_count"] == 2 and stats["inference_count"] == 4
        deployment.infer(["other"], tag="a different config")
        assert len(gate.batches) == runs + 1
        deployment.clear_cache()
        deployment.infer(["other"])
        assert len(gate.batches) == runs + 2
        assert deployment.stats()["inference_cache_hit_count"] == 2


def test_default_cache_size_is_the_model_size(package: FakePackage) -> None:
    with Deployment(package, DeploymentConfig(cpus=one_cpu())) as deployment:
        assert deployment.stats()["cache_size"] == package.size_bytes


def test_workers_pin_themselves_to_disjoint_cores(package: FakePackage) -> None:
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    if len(cpus) < 2:
        pytest.skip("needs two allowed CPUs")
    seen: list[set[int]] = []

    def factory(path: Path, threads: int, cores: Any, options: Any) -> Any:
        seen.append(os.sched_getaffinity(0))
        return create_session(path, threads, cores, options)

    before = os.sched_getaffinity(0)
    config = DeploymentConfig(number_of_allocations=2, cpus=cpus[:2], cache_size=0)
    with Deployment(package, config, session_factory=factory) as deployment:
        assert sorted(map(sorted, seen)) == [[cpus[0]], [cpus[1]]]
        assert sorted(deployment.stats()["thread_settings"]["cores"]) == [[cpus[0]], [cpus[1]]]
    assert os.sched_getaffinity(0) == before


def test_low_priority_workers_run_niced(package: FakePackage) -> None:
    niceness: list[int] = []
    caller_niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def factory(path: Path, threads: int, cores: Any, options: Any) -> Any:
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return create_session(path, threads, cores, options)

    config = DeploymentConfig(priority="low", cpus=one_cpu(), cache_size=0)
    with Deployment(package, config, session_factory=factory) as deployment:
        assert_result(deployment.infer("low priority")[0], "low priority")
    assert niceness == [19]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller_niceness


def test_clamping_reports_effective_thread_settings(package: FakePackage) -> None:
    config = DeploymentConfig(
        number_of_allocations=3,
        threads_per_allocation=4,
        cpus=(0, 1, 2, 3, 4),
        pin_threads=False,
        cache_size=0,
    )
    with Deployment(package, config) as deployment:
        stats = deployment.stats()
    # ml-cpp: allocations stay 3 (<= 5 cpus), threads clamp to ceil(5 / 3) = 2
    assert (stats["number_of_allocations"], stats["threads_per_allocation"]) == (3, 2)


def test_a_session_that_cannot_start_fails_the_deployment(package: FakePackage) -> None:
    def factory(path: Path, threads: int, cores: Any, options: Any) -> Any:
        raise RuntimeError("no memory for you")

    with pytest.raises(ModelError, match="could not start an allocation: no memory for you"):
        Deployment(package, DeploymentConfig(cpus=one_cpu()), session_factory=factory)


# -- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"threads_per_allocation": 3},
            r"\[threads_per_allocation\] must be a power of 2 less than or equal to 32",
        ),
        ({"threads_per_allocation": 64}, r"\[threads_per_allocation\] must be a power of 2"),
        ({"queue_capacity": 0}, r"\[queue_capacity\] must be a positive integer"),
        ({"queue_capacity": 100_001}, r"\[queue_capacity\] must be less than 100000"),
        ({"number_of_allocations": 0}, r"\[number_of_allocations\] must be a positive integer"),
        ({"priority": "high"}, r"\[priority\] must be one of"),
        (
            {"priority": "low", "number_of_allocations": 2},
            r"\[number_of_allocations\] must be 1 when \[priority\] is low",
        ),
        ({"priority": "low", "threads_per_allocation": 2}, r"\[threads_per_allocation\] must be 1 when"),
        (
            {"number_of_allocations": 2, "adaptive_allocations": {"enabled": True}},
            r"\[number_of_allocations\] cannot be set if adaptive allocations is enabled",
        ),
        (
            {"adaptive_allocations": {"enabled": True, "min_number_of_allocations": 0}},
            r"does not scale a deployment to zero",
        ),
        (
            {
                "adaptive_allocations": {
                    "enabled": True,
                    "min_number_of_allocations": 3,
                    "max_number_of_allocations": 2,
                }
            },
            r"must not be larger than",
        ),
        ({"adaptive_allocations": {"enabled": True, "bogus": 1}}, r"unknown keys \['bogus'\]"),
        ({"cache_size": "lots"}, r"failed to parse setting \[cache_size\]"),
        ({"max_batch_tokens": 0}, r"\[max_batch_tokens\] must be a positive integer"),
        ({"cpus": ()}, r"\[cpus\] must be a non-empty list"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        DeploymentConfig(**kwargs)


def test_config_defaults_and_cpus_outside_the_allowed_set(package: FakePackage) -> None:
    config = DeploymentConfig(adaptive_allocations={"enabled": True, "min_number_of_allocations": 2})
    assert config.initial_allocations == 2 and config.queue_capacity == 1024
    assert DeploymentConfig().initial_allocations == 1
    outside = (max(os.sched_getaffinity(0)) + 1,)
    with pytest.raises(InvalidInput, match="allowed CPU set"):
        Deployment(package, DeploymentConfig(cpus=outside))


@pytest.mark.parametrize(("seconds", "text"), [(10, "10s"), (1.5, "1.5s"), (90, "1.5m"), (0.2, "200ms"),
                                               (0.0015, "1.5ms"), (7200, "2h")])
def test_format_time_value(seconds: float, text: str) -> None:
    assert format_time_value(seconds) == text


def test_a_second_stop_without_drain_cuts_a_drain_short(package: FakePackage, pool) -> None:
    gate = Gate(open_=False)
    deployment = gated(package, gate, max_batch_tokens=4)
    running = submit_and_wait_queued(deployment, pool, ["first"])
    gate.wait_entered()
    queued = submit_and_wait_queued(deployment, pool, ["b"])
    draining = pool.submit(deployment.stop)
    wait_until(lambda: deployment.state == "stopping")
    cancelling = pool.submit(deployment.stop, drain=False)
    with pytest.raises(DeploymentStopped):
        queued.result(WAIT_S)
    gate.open()
    assert_result(running.result(WAIT_S)[0], "first")
    draining.result(WAIT_S)
    cancelling.result(WAIT_S)
    assert deployment.state == "stopped" and len(gate.batches) == 1
