"""A bounded load test on loopback, and graceful shutdown of a real server process."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

import engine
from tests.tolerances import SAME_GRAPH_ABS

from .conftest import API_KEY, ServerProcess, start_server, stop_server

CLIENTS = 32
REQUESTS_PER_CLIENT = 3
DOCS_PER_REQUEST = 3
POOL = [f"sentence number {i} about {topic}" for i, topic in
        enumerate(["search", "vectors", "cats", "the weather", "databases", "music", "rivers", "trains"])]


def test_bounded_load_every_request_answered(server: ServerProcess, minilm_package: Path) -> None:
    """32 clients fire at once at a deployment with a 4-text queue: each request gets its embeddings or
    a 429, none is lost, results equal engine.run's, and the server stays healthy."""
    expected = {text: np.array(result["predicted_value"])
                for text, result in zip(POOL, engine.run("text_embedding", POOL, model=minilm_package),
                                        strict=True)}
    with server.client() as http:
        started = http.post("/_ml/trained_models/minilm/deployment/_start",
                            params={"deployment_id": "minilm-load", "queue_capacity": "4", "cache_size": "0b"})
        assert started.status_code == 200, started.text
    barrier = threading.Barrier(CLIENTS)

    def client(number: int) -> list[tuple[int, list[str], dict]]:
        answers = []
        with httpx.Client(base_url=server.url, headers={"Authorization": f"ApiKey {API_KEY}"},
                          timeout=60.0) as http:
            barrier.wait(timeout=60)
            for request in range(REQUESTS_PER_CLIENT):
                texts = [POOL[(number + request + k) % len(POOL)] for k in range(DOCS_PER_REQUEST)]
                response = http.post("/_ml/trained_models/minilm-load/_infer",
                                     json={"docs": [{"text_field": text} for text in texts]})
                answers.append((response.status_code, texts, response.json()))
        return answers

    try:
        began = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [answer for answers in pool.map(client, range(CLIENTS)) for answer in answers]
        elapsed = time.monotonic() - began
        assert len(results) == CLIENTS * REQUESTS_PER_CLIENT
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(200) > 0 and statuses.count(429) > 0
        for status, texts, body in results:
            if status == 429:
                assert body["error"]["type"] == "es_rejected_execution_exception"
                continue
            got = [item["predicted_value"] for item in body["inference_results"]]
            np.testing.assert_allclose(got, [expected[text] for text in texts], atol=SAME_GRAPH_ABS)
        assert elapsed < 300
        with server.client() as http:
            assert http.get("/health").json()["status"] == "ok"
            metrics = http.get("/metrics").text
        ok = f'engine_inference_requests_total{{deployment="minilm-load",outcome="ok"}} {statuses.count(200)}'
        rejected = (f'engine_inference_requests_total{{deployment="minilm-load",outcome="rejected"}} '
                    f"{statuses.count(429)}")
        assert ok in metrics and rejected in metrics
    finally:
        with server.client() as http:
            http.post("/_ml/trained_models/minilm-load/deployment/_stop", params={"force": "true"})


def test_graceful_shutdown_finishes_open_requests(splade_package: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    running = start_server(["--model", f"splade={splade_package}", "--log-level", "info"], log_path)
    try:
        answer: dict[str, httpx.Response] = {}

        def request() -> None:
            answer["response"] = httpx.post(f"{running.url}/embed_sparse", timeout=60.0,
                                            json={"inputs": [f"text {i} about shutting down" for i in range(48)]})

        worker = threading.Thread(target=request)
        worker.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "engine_inference_documents_total{" not in httpx.get(
                f"{running.url}/metrics", timeout=5).text:
            time.sleep(0.01)
        code = stop_server(running)
        worker.join(timeout=60)
    finally:
        stop_server(running, graceful=False)
    # uvicorn re-raises the signal once its graceful shutdown is done, so the status is "killed by SIGTERM".
    assert code in (0, -signal.SIGTERM), running.log()
    assert "Application shutdown complete" in running.log()
    assert "deployments drained" in running.log()
    assert answer["response"].status_code == 200
    assert len(answer["response"].json()) == 48
    lines = [json.loads(line) for line in running.log().splitlines() if line.startswith("{")]
    assert any(line["path"] == "/embed_sparse" and line["status"] == 200 for line in lines)
    assert all({"ts", "method", "path", "status", "duration_ms"} <= set(line) for line in lines)
