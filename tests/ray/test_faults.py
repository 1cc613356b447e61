"""Faults on a simulated cluster (``ray.cluster_utils.Cluster``: 2 nodes × 1 CPU, loopback).

Under load, a replica is killed, then the node of a replica: every request gets a result or an error
(none hangs: bounded waits everywhere), failures stay within the requests in flight at the kills,
and the deployment is back to its replica count. Then a batch job loses a node mid-way and still
gives every row exactly once, in order. The package is shipped through Ray (``ship_package``), as
on nodes that do not share a disk.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ray.conftest import LOOPBACK, corpus, poll_until, require_ray

require_ray()

import ray  # noqa: E402
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import engine.ray as engine_ray  # noqa: E402

WAIT_S = 120.0
REQUEST_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    simulated = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "node_ip_address": LOOPBACK})
    simulated.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    ray.init(address=simulated.address, _node_ip_address=LOOPBACK, log_to_driver=False)
    try:
        yield simulated
    finally:
        serve.shutdown()
        ray.shutdown()
        simulated.shutdown()


def wait_for(condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    return poll_until(condition, what, timeout)


class Load:
    """Client threads sending requests until stopped; counts outcomes and requests in flight."""

    def __init__(self, deployment: engine_ray.RayDeployment, threads: int = 4) -> None:
        self.deployment = deployment
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.in_flight = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.texts = corpus(4)

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.in_flight += 1
            try:
                self.deployment.infer(self.texts, timeout=REQUEST_TIMEOUT_S)
                outcome = "ok"
            except Exception as error:  # counted: the test bounds the failures
                outcome = type(error).__name__
            with self.lock:
                self.in_flight -= 1
                self.outcomes[outcome] += 1

    def snapshot_in_flight(self) -> int:
        with self.lock:
            return self.in_flight

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(REQUEST_TIMEOUT_S + 10)


def replicas(deployment: engine_ray.RayDeployment) -> dict[str, str]:
    return {node["replica_id"]: node["node_id"] for node in deployment.stats()["nodes"]}


def test_a_lost_replica_and_a_lost_node_under_load(cluster: Cluster, minilm_package: Path) -> None:
    deployment = engine_ray.deploy(minilm_package, name="faults", number_of_allocations=2, ship_package=True)
    try:
        before = wait_for(lambda: (found := replicas(deployment)) and len(found) == 2 and found, "2 replicas")
        assert len(set(before.values())) == 2  # one replica per node: each node has 1 CPU
        worker = next(iter(cluster.worker_nodes))
        with Load(deployment) as load:
            wait_for(lambda: load.outcomes["ok"] >= 10, "traffic")
            # 1. kill the head node's replica actor
            on_head = next(replica for replica, node in before.items() if node != worker.node_id)
            actor = ray.get_actor(f"SERVE_REPLICA::faults#allocation#{on_head}", namespace="serve")
            in_flight = load.snapshot_in_flight()
            ray.kill(actor, no_restart=True)
            after_replica = wait_for(lambda: (found := replicas(deployment)) and len(found) == 2
                                     and on_head not in found and found, "a replacement replica")
            # 2. lose the worker node with its replica; a new node joins
            on_worker = next(replica for replica, node in after_replica.items() if node == worker.node_id)
            in_flight += load.snapshot_in_flight()
            lost_at = time.monotonic()
            cluster.remove_node(worker, allow_graceful=False)
            cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
            recovered = wait_for(lambda: (found := replicas(deployment)) and len(found) == 2
                                 and on_worker not in found and found, "a replica on the new node")
            recovery_s = time.monotonic() - lost_at
            ok_before = load.outcomes["ok"]
            wait_for(lambda: load.outcomes["ok"] >= ok_before + 10, "traffic after the recovery")
        assert not any(thread.is_alive() for thread in load.threads), "a request hung"
        failed = sum(count for outcome, count in load.outcomes.items() if outcome != "ok")
        assert failed <= in_flight, (dict(load.outcomes), in_flight)
        assert set(load.outcomes) <= {"ok", "InferenceFailed", "InferenceTimeout"}, dict(load.outcomes)
        assert len(set(recovered.values())) == 2
        assert deployment.stats()["allocation_status"]["allocation_count"] == 2
        print(f"recovery after the node loss: {recovery_s:.1f}s; outcomes {dict(load.outcomes)}; "
              f"in flight at the kills {in_flight}")
    finally:
        deployment.stop()


def test_a_batch_job_that_loses_a_node_gives_every_row_once(cluster: Cluster, minilm_package: Path) -> None:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    items = [{"id": i, "text": text} for i, text in enumerate(corpus(400))]
    dataset = ray.data.from_items(items, override_num_blocks=10)
    result = engine_ray.infer_dataset(dataset, minilm_package, "text_embedding", concurrency=2, batch_size=20)
    seen: list[int] = []
    killed = False
    for batch in result.iter_batches(batch_size=20, batch_format="pyarrow"):
        seen.extend(batch.column("id").to_pylist())
        assert batch.column("error").null_count == batch.num_rows
        if len(seen) >= 60 and not killed:
            cluster.remove_node(next(iter(cluster.worker_nodes)), allow_graceful=False)
            cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
            killed = True
    assert killed and seen == list(range(400))
