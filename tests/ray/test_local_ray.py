"""Deployments and batch jobs on one local Ray session (2 CPUs, loopback), shared by the whole module.

The tests run in file order and share the CPUs: each stops what it started, so the next one can place
its replicas.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ray.conftest import LOOPBACK, assert_same_results, corpus, poll_until, require_ray

require_ray()

import ray  # noqa: E402
from ray import serve  # noqa: E402

import engine  # noqa: E402
import engine.ray as engine_ray  # noqa: E402
from engine.errors import InferenceTimeout, InvalidInput, NotDeployed, QueueFull  # noqa: E402

WAIT_S = 90.0


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address=LOOPBACK, log_to_driver=False)
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


def wait_for(condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    return poll_until(condition, what, timeout)


def replica_ids(deployment: engine_ray.RayDeployment) -> list[str]:
    return [node["replica_id"] for node in deployment.stats()["nodes"]]


@pytest.fixture(scope="module")
def embedder(minilm_package: Path) -> Iterator[engine_ray.RayDeployment]:
    deployment = engine_ray.deploy(minilm_package, name="emb", number_of_allocations=1)
    try:
        yield deployment
    finally:
        deployment.stop()


def test_results_equal_a_local_deployment(embedder: engine_ray.RayDeployment, minilm_package: Path) -> None:
    texts = corpus(40)
    with engine.load(str(minilm_package), task="text_embedding", threads_per_allocation=1) as local:
        expected = local.infer(texts)
    assert_same_results(embedder.infer(texts), expected)
    assert_same_results(asyncio.run(embedder.ainfer(texts[:5])), expected[:5])
    assert embedder.infer([]) == []
    assert embedder.package.manifest.task == "text_embedding" and embedder.state == "started"


def test_errors_keep_their_type_and_status(embedder: engine_ray.RayDeployment) -> None:
    with pytest.raises(InvalidInput) as refused:
        embedder.infer(["fine", "  "])
    assert type(refused.value) is InvalidInput and refused.value.status == 400
    with pytest.raises(InvalidInput, match="priority"):
        embedder.infer(["x"], priority="urgent")
    with pytest.raises(InferenceTimeout, match=r"timeout \[1ms\]") as late:
        embedder.infer(corpus(200), timeout=0.001)
    assert late.value.status == 408


def test_overflow_is_429_from_the_replica_queue_and_from_serve(minilm_package: Path) -> None:
    tight = engine_ray.deploy(minilm_package, name="tight", queue_capacity=4, max_batch_rows=1)
    try:
        with pytest.raises(QueueFull) as replica_full:  # 5 texts do not fit the replica's 4-text queue
            tight.infer(corpus(5))
        assert replica_full.value.status == 429
        # one request at a time per replica (max_batch_rows 1), 4 waiting in Serve's queue: the rest bounce
        outcomes: list[str] = []
        long_text = " ".join(corpus(60))

        def call() -> None:
            try:
                tight.infer([long_text], timeout=60)
                outcomes.append("ok")
            except QueueFull as error:
                outcomes.append(f"{type(error).__name__}:{error.status}")

        threads = [threading.Thread(target=call) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
        assert not any(thread.is_alive() for thread in threads)
        assert len(outcomes) == 16 and "ok" in outcomes and "QueueFull:429" in outcomes
        assert tight.stats()["rejected_execution_count"] >= outcomes.count("QueueFull:429")
    finally:
        tight.stop()
    with pytest.raises(NotDeployed) as stopped:
        tight.infer(["after the stop"])
    assert stopped.value.status == 409


def test_update_resizes_in_place_and_stats_sum_over_replicas(embedder: engine_ray.RayDeployment) -> None:
    first = replica_ids(embedder)
    assert len(first) == 1
    embedder.update(number_of_allocations=2)
    both = wait_for(lambda: (ids := replica_ids(embedder)) and len(ids) == 2 and ids, "2 replicas")
    assert set(first) <= set(both)  # resized in place: the first replica was not replaced
    before = embedder.stats()["inference_count"]
    texts = corpus(30)
    threads = [threading.Thread(target=embedder.infer, args=([text],)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    stats = embedder.stats()
    assert stats["inference_count"] - before == len(texts)
    assert stats["inference_count"] == sum(node["inference_count"] for node in stats["nodes"])
    assert all(node["inference_count"] > 0 for node in stats["nodes"])  # both replicas served
    assert stats["number_of_allocations"] == 2
    assert stats["allocation_status"] == {"allocation_count": 2, "target_allocation_count": 2,
                                          "state": "fully_allocated"}
    assert {node["node_id"] for node in stats["nodes"]} == {ray.get_runtime_context().get_node_id()}
    with pytest.raises(InvalidInput, match="cannot be set if adaptive"):
        embedder.update(number_of_allocations=2, adaptive_allocations={"enabled": True})
    embedder.update(number_of_allocations=1)
    one = wait_for(lambda: (ids := replica_ids(embedder)) and len(ids) == 1 and ids, "1 replica")
    assert set(one) <= set(both)
    embedder.clear_cache()


def test_engine_serve_on_ray_answers_like_a_local_deployment(embedder: engine_ray.RayDeployment,
                                                            minilm_package: Path, tmp_path: Path) -> None:
    from tests.server.conftest import API_KEY, start_server, stop_server

    embedder.stop()  # the server's replicas need the CPUs
    texts = corpus(6)
    with engine.load(str(minilm_package), task="text_embedding", threads_per_allocation=1) as local:
        expected = local.infer(texts)
        truncate = local.package.manifest.tokenization.truncate
        tokens = sum(len(window.input_ids) for text in texts
                     for window in local.package.tokenizer.single(text, truncate, -1).windows)
    vectors = [result["predicted_value"] for result in expected]
    server = start_server(["--ray", "--ray-address", ray.get_runtime_context().gcs_address, "--model",
                           f"minilm={minilm_package}", "--api-key", API_KEY], tmp_path / "server.log")
    try:
        with server.client() as client:
            answer = client.post("/_ml/trained_models/minilm/_infer",
                                 json={"docs": [{"text_field": text} for text in texts]})
            assert answer.status_code == 200, answer.text
            assert_same_results(answer.json()["inference_results"], expected)
            tei = client.post("/embed", json={"inputs": texts, "normalize": False})
            assert tei.status_code == 200, tei.text
            assert_same_results(tei.json(), vectors)
            openai = client.post("/v1/embeddings", json={"input": texts, "model": "minilm"})
            assert openai.status_code == 200, openai.text
            assert_same_results([item["embedding"] for item in openai.json()["data"]], vectors)
            assert openai.json()["usage"]["prompt_tokens"] == tokens  # counted by the server: Ray reports none
            # errors keep their status and type across Ray and HTTP
            missing = client.post("/_ml/trained_models/nope/_infer", json={"docs": [{"text_field": "x"}]})
            assert missing.status_code == 404 and missing.json()["error"]["type"] == "resource_not_found_exception"
            empty = client.post("/_ml/trained_models/minilm/_infer", json={"docs": [{"text_field": " "}]})
            assert empty.status_code == 400 and empty.json()["error"]["type"] == "illegal_argument_exception"
            late = client.post("/_ml/trained_models/minilm/_infer?timeout=1ms",
                               json={"docs": [{"text_field": text} for text in corpus(300)]})
            assert late.status_code == 408, late.text
            # a deployment of its own with a 2-text queue on Ray: 5 docs do not fit, a 429 in each dialect
            tight = client.post("/_ml/trained_models/minilm/deployment/_start",
                                params={"deployment_id": "minilm-tight", "queue_capacity": "2", "cache_size": "0b"})
            assert tight.status_code == 200, tight.text
            try:
                full = client.post("/_ml/trained_models/minilm-tight/_infer",
                                   json={"docs": [{"text_field": text} for text in texts[:5]]})
                assert full.status_code == 429, full.text
                assert full.json()["error"]["type"] == "es_rejected_execution_exception"
                tei_full = client.post("/embed", json={"inputs": texts[:5], "model": "minilm-tight"})
                assert tei_full.status_code == 429 and tei_full.json()["error_type"] == "Overloaded"
            finally:
                stopped = client.post("/_ml/trained_models/minilm-tight/deployment/_stop")
                assert stopped.status_code == 200, stopped.text  # its CPU back for the _update below
            # _update 1 -> 2 -> 1 resizes the Serve application; _stats has one nodes[] entry per replica
            for count in (2, 1):
                update = client.post("/_ml/trained_models/minilm/deployment/_update",
                                     json={"number_of_allocations": count})
                assert update.status_code == 200, update.text

                def stats(count: int = count) -> dict | None:
                    found = client.get("/_ml/trained_models/minilm/_stats").json()["trained_model_stats"][0]
                    deployment = found["deployment_stats"]
                    return deployment if len(deployment["nodes"]) == count else None

                deployment = wait_for(stats, f"{count} replicas in _stats")
                assert deployment["number_of_allocations"] == count
                assert deployment.get("inference_count", 0) == sum(node["inference_count"]
                                                                   for node in deployment["nodes"])
    finally:
        stop_server(server)  # SIGTERM: uvicorn drains, then re-raises it to Ray's handler (exit 15)
    assert "Deleting app ['minilm']" in server.log()  # the graceful shutdown deleted its application
    assert "minilm" not in serve.status().applications


def test_a_1000_row_batch_job_gives_every_row_once_in_order(embedder: engine_ray.RayDeployment,
                                                            minilm_package: Path) -> None:
    embedder.stop()  # its CPU goes to the batch actors
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    texts = corpus(1000)
    items: list[dict[str, Any]] = [{"id": i, "text": text} for i, text in enumerate(texts)]
    items[3]["text"] = ""
    items[998]["text"] = "   "
    dataset = ray.data.from_items(items, override_num_blocks=8)
    result = engine_ray.infer_dataset(dataset, minilm_package, "text_embedding", concurrency=2, batch_size=50)
    rows = result.take_all()
    assert [row["id"] for row in rows] == list(range(1000))
    assert json.loads(rows[3]["error"])["status"] == 400 and rows[3]["result"] is None
    assert json.loads(rows[998]["error"])["type"] == "illegal_argument_exception"
    good = [i for i in range(1000) if i not in (3, 998)]
    assert all(rows[i]["error"] is None for i in good)
    sample = good[::25]
    expected = engine.run("text_embedding", [texts[i] for i in sample], model=str(minilm_package))
    assert_same_results([json.loads(rows[i]["result"]) for i in sample], expected)


def test_engine_batch_on_ray_writes_what_the_local_job_writes(minilm_package: Path, tmp_path: Path) -> None:
    from engine.cli import main

    records = [{"id": i, "text": text} for i, text in enumerate(corpus(120))]
    records[7]["text"] = ""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(record) + "\n" for record in records))
    common = ["batch", "--task", "text_embedding", "--model", str(minilm_package), "--input", str(source),
              "--batch-size", "16", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "ray.jsonl"), "--ray", "--number-of-allocations", "2"]) == 0
    assert main([*common, "--output", str(tmp_path / "local.jsonl")]) == 0
    on_ray = [json.loads(line) for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert [row["id"] for row in on_ray] == list(range(120))
    assert on_ray[7]["error"] == local[7]["error"] and on_ray[7]["error"]["status"] == 400
    assert_same_results(on_ray, local)


def test_adaptive_allocations_scale_up_under_load_and_down_to_zero(minilm_package: Path) -> None:
    deployment = engine_ray.deploy(minilm_package, name="auto", adaptive_allocations={
        "enabled": True, "min_number_of_allocations": 0, "max_number_of_allocations": 2,
        "evaluation_interval_s": 1.0, "scale_up_cooldown_s": 0.0, "scale_down_cooldown_s": 2.0})
    try:
        assert deployment.stats()["adaptive_allocations"] == {
            "enabled": True, "min_number_of_allocations": 0, "max_number_of_allocations": 2}
        stop = threading.Event()
        failures: list[BaseException] = []

        def load() -> None:
            while not stop.is_set():
                try:
                    deployment.infer(corpus(8), timeout=60)
                except Exception as error:  # collected: the test fails on any below
                    failures.append(error)

        threads = [threading.Thread(target=load) for _ in range(6)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: deployment.number_of_allocations == 2, "a scale-up to 2 replicas")
        finally:
            stop.set()
            for thread in threads:
                thread.join(WAIT_S)
        assert not failures and not any(thread.is_alive() for thread in threads)
        wait_for(lambda: deployment.number_of_allocations == 0 and not deployment.stats()["nodes"],
                 "a scale-down to zero")
        # scaled to zero: the next request waits for a cold start, then is answered
        assert len(deployment.infer(["wake up"], timeout=WAIT_S)) == 1
        assert deployment.number_of_allocations == 1
    finally:
        deployment.stop()
