"""``Deployment.infer(wait_for_room=True)``: inputs of any length stream through the bounded queue.

The blocking mode is what ``engine.run`` and batch callers use: texts wait for room instead of failing
with QueueFull, are tokenised a window at a time (memory bounded by the queue, not by the input), and
come back in input order; a caller of the default mode that finds the queue full still gets QueueFull.
Runs on the fake package of test_deployment.py (a real ONNX graph, a toy tokenizer).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from engine.config import DeploymentConfig
from engine.deployment import Deployment
from engine.errors import InvalidInput, QueueFull
from tests.unit.test_deployment import (
    TEXTS,
    WAIT_S,
    FakeConfig,
    FakePackage,
    FakePrepared,
    FakeRunner,
    Gate,
    assert_result,
    gated,
    make_package,
    one_cpu,
    pending,
    pool,  # noqa: F401 - a fixture
    wait_until,
)


class CountingRunner(FakeRunner):
    """Counts texts prepared but not yet finished, and the most there ever were at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outstanding = 0
        self.most_outstanding = 0

    def prepare(self, text: str, cfg: FakeConfig) -> FakePrepared:
        prepared = super().prepare(text, cfg)
        with self.lock:
            self.outstanding += 1
            self.most_outstanding = max(self.most_outstanding, self.outstanding)
        return prepared

    def finish(self, prepared: FakePrepared, outputs: list, cfg: FakeConfig) -> dict:
        with self.lock:
            self.outstanding -= 1
        return super().finish(prepared, outputs, cfg)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> FakePackage:
    return make_package(tmp_path_factory.mktemp("tiny"))


def texts_of(n: int) -> list[str]:
    return [f"{TEXTS[number % len(TEXTS)]} n{number}" for number in range(n)]


def test_ten_thousand_texts_through_a_queue_of_eight_come_back_in_order(package: FakePackage) -> None:
    runner = CountingRunner()
    counted = dataclasses.replace(package, runner=runner)
    texts = texts_of(10_000)
    with Deployment(counted, DeploymentConfig(queue_capacity=8, cpus=one_cpu(), cache_size=0)) as deployment:
        with pytest.raises(QueueFull):
            deployment.infer(texts)  # the default mode keeps Elasticsearch's all-or-nothing 429
        runner.outstanding = runner.most_outstanding = 0  # that call tokenised everything, then was refused
        results = deployment.infer(texts, wait_for_room=True)
        assert deployment.stats()["rejected_execution_count"] == len(texts)  # that call only, counted per text
    assert [result["text"] for result in results] == texts
    for index in (0, 1, 4_999, 9_999):
        assert_result(results[index], texts[index])
    # two windows of half the capacity in flight, never the whole input tokenised at once
    assert runner.most_outstanding <= 8
    assert runner.outstanding == 0


def test_other_callers_still_get_queue_full_while_a_blocking_call_fills_the_queue(
        package: FakePackage, pool: Any) -> None:  # noqa: F811 - the fixture
    gate = Gate(open_=False)
    with gated(package, gate, queue_capacity=4) as deployment:
        running = pool.submit(deployment.infer, ["first"])
        gate.wait_entered()  # "first" holds the only allocation; the queue itself is empty
        texts = texts_of(20)
        blocking = pool.submit(deployment.infer, texts, wait_for_room=True)
        wait_until(lambda: pending(deployment) == 1 + 4)  # two windows of two: the queue is full
        with pytest.raises(QueueFull):
            deployment.infer(["a caller arriving while the queue is full"])
        assert not blocking.done()
        gate.open()
        assert [result["text"] for result in blocking.result(WAIT_S)] == texts
        assert_result(running.result(WAIT_S)[0], "first")
        assert pending(deployment) == 0


def test_a_bad_text_in_a_later_window_fails_the_call_and_withdraws_what_was_queued(package: FakePackage) -> None:
    texts = texts_of(30)
    texts[25] = "   "
    with Deployment(package, DeploymentConfig(queue_capacity=8, cpus=one_cpu(), cache_size=0)) as deployment:
        with pytest.raises(InvalidInput, match="text must not be empty"):
            deployment.infer(texts, wait_for_room=True)
        wait_until(lambda: pending(deployment) == 0)
        assert [result["text"] for result in deployment.infer(texts_of(3), wait_for_room=True)] == texts_of(3)
