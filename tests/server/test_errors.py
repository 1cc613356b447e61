"""Every error path over plain HTTP: status codes and Elasticsearch-shaped bodies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import API_KEY, ServerProcess


def es_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert body["error"]["root_cause"][0]["type"] == body["error"]["type"]
    assert response.headers["x-elastic-product"] == "Elasticsearch"
    return body["error"]


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def test_401_without_or_with_a_wrong_key(server: ServerProcess) -> None:
    bare = httpx.post(f"{server.url}/_ml/trained_models/minilm/_infer", json={"docs": [{"text_field": "x"}]})
    error = es_error(bare, 401)
    assert error["type"] == "security_exception"
    assert "ApiKey" in bare.headers["www-authenticate"]
    wrong = httpx.get(f"{server.url}/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_404_unknown_model_and_endpoint(http: httpx.Client) -> None:
    error = es_error(http.post("/_ml/trained_models/nope/_infer", json={"docs": [{"text_field": "x"}]}), 404)
    assert error["type"] == "resource_not_found_exception"
    assert error["reason"] == "Could not find trained model [nope]"
    assert es_error(http.post("/_inference/text_embedding/nope", json={"input": "x"}), 404)["reason"] == (
        "Inference endpoint not found [nope]")
    assert es_error(http.get("/_ml/trained_models/nope/_stats"), 404)
    unknown_route = es_error(http.get("/_nothing_here"), 400)
    assert "no handler found for uri [/_nothing_here]" in unknown_route["reason"]
    wrong_method = es_error(http.delete("/_ml/trained_models/minilm/_infer"), 405)
    assert "Incorrect HTTP method" in wrong_method["reason"]


def test_400_malformed_bodies(http: httpx.Client) -> None:
    url = "/_ml/trained_models/minilm/_infer"
    assert es_error(http.post(url, content=b"{not json", headers={"Content-Type": "application/json"}),
                    400)["type"] == "x_content_parse_exception"
    assert es_error(http.post(url, content=b"\xff\xfe\x00"), 400)
    assert es_error(http.post(url, content=b""), 400)["reason"] == "request body is required"
    assert es_error(http.post(url, json=[1, 2]), 400)
    assert es_error(http.post(url, json={"docs": "text"}), 400)
    assert es_error(http.post(url, json={"docs": [{"text": "x"}]}), 400)["reason"] == (
        "Input field [text_field] does not exist in the source document")
    assert es_error(http.post(url, json={"docs": [{"text_field": ""}]}), 400)
    assert es_error(http.post(url, params={"timeout": "soon"}, json={"docs": [{"text_field": "x"}]}), 400)
    assert es_error(http.post(url, params={"bogus": "1"}, json={"docs": [{"text_field": "x"}]}), 400)
    tei = http.post("/embed", content=b"[[[")
    assert tei.status_code == 400 and tei.json()["error_type"] == "Validation"
    openai = http.post("/v1/embeddings", json={"input": 5})
    assert openai.status_code == 400 and openai.json()["error"]["type"] == "invalid_request_error"


def test_400_too_many_docs(http: httpx.Client) -> None:
    docs = [{"text_field": f"doc {i}"} for i in range(65)]
    error = es_error(http.post("/_ml/trained_models/minilm/_infer", json={"docs": docs}), 400)
    assert "at most [64] per request" in error["reason"]
    assert http.post("/embed", json={"inputs": ["x"] * 65}).status_code == 400


def test_413_body_limit(http: httpx.Client) -> None:
    big = {"docs": [{"text_field": "x" * 250_000}]}
    assert es_error(http.post("/_ml/trained_models/minilm/_infer", json=big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"docs": [{"text_field": "'
        for _ in range(30):
            yield b"y" * 10_000
        yield b'"}]}'

    assert es_error(http.post("/_ml/trained_models/minilm/_infer", content=chunks()), 413)


def test_409_not_deployed(http: httpx.Client, minilm_package: Path) -> None:
    registered = http.put("/_ml/trained_models/minilm-idle", json={"location": str(minilm_package)})
    assert registered.status_code == 200, registered.text
    try:
        error = es_error(http.post("/_ml/trained_models/minilm-idle/_infer",
                                   json={"docs": [{"text_field": "x"}]}), 409)
        assert error["reason"] == "Trained model [minilm-idle] is not deployed"
        again = http.put("/_ml/trained_models/minilm-idle", json={"location": str(minilm_package)})
        assert es_error(again, 400)["reason"] == "Trained machine learning model [minilm-idle] already exists"
        bad = es_error(http.put("/_ml/trained_models/bad-pkg", json={"location": "/nonexistent"}), 400)
        assert bad["reason"] == "model location [/nonexistent] is not a directory on the server"  # the request's fault
        assert es_error(http.put("/_ml/trained_models/bad-pkg", json={"definition": {}}), 400)
    finally:
        http.delete("/_ml/trained_models/minilm-idle")


def test_429_queue_full_and_408_timeout(http: httpx.Client) -> None:
    started = http.post("/_ml/trained_models/minilm/deployment/_start",
                        params={"deployment_id": "minilm-tiny-queue", "queue_capacity": "2", "cache_size": "0b"})
    assert started.status_code == 200, started.text
    try:
        docs = [{"text_field": f"text number {i}"} for i in range(5)]
        error = es_error(http.post("/_ml/trained_models/minilm-tiny-queue/_infer", json={"docs": docs}), 429)
        assert error["type"] == "es_rejected_execution_exception"
        assert error["reason"] == "inference process queue is full. Unable to execute command"
        late = http.post("/_ml/trained_models/minilm-tiny-queue/_infer", params={"timeout": "1nanos"},
                         json={"docs": [{"text_field": "a text that is not cached"}]})
        assert es_error(late, 408)["reason"].startswith("timeout [")
        tei = http.post("/embed", json={"inputs": [f"t{i}" for i in range(5)], "model": "minilm-tiny-queue"})
        assert tei.status_code == 429 and tei.json()["error_type"] == "Overloaded"
        stop = http.post("/_ml/trained_models/minilm-tiny-queue/deployment/_stop")
        assert stop.status_code == 200 and stop.json() == {"stopped": True}
    finally:
        http.post("/_ml/trained_models/minilm-tiny-queue/deployment/_stop", params={"force": "true"})
    metrics = http.get("/metrics").text
    assert 'engine_inference_requests_total{deployment="minilm-tiny-queue",outcome="rejected"} 2' in metrics
    assert 'engine_inference_requests_total{deployment="minilm-tiny-queue",outcome="timeout"} 1' in metrics
    assert "# TYPE engine_inference_duration_seconds histogram" in metrics
    assert 'engine_deployment_queue_depth{deployment="minilm"} 0' in metrics


def test_legacy_deployment_infer_answers_unwrapped(http: httpx.Client) -> None:
    answer = http.post("/_ml/trained_models/sts/deployment/_infer",
                       json={"docs": [{"text_field": "a cat"}], "inference_config": {"text_similarity": {"text": "a dog"}}})
    assert answer.status_code == 200 and isinstance(answer.json()["predicted_value"], float)


def test_several_deployments_need_a_name(http: httpx.Client) -> None:
    started = http.post("/_ml/trained_models/minilm/deployment/_start", params={"deployment_id": "minilm-second"})
    assert started.status_code == 200
    try:
        chosen = http.post("/v1/embeddings", json={"input": "x"})
        assert chosen.status_code == 200 and chosen.json()["model"] == "minilm"  # --default-model
        named = http.post("/v1/embeddings", json={"input": "x", "model": "minilm-second"})
        assert named.status_code == 200 and named.json()["model"] == "minilm-second"
        wrong_task = http.post("/v1/embeddings", json={"input": "x", "model": "sts"})
        assert wrong_task.status_code == 409
    finally:
        http.post("/_ml/trained_models/minilm-second/deployment/_stop")


ODD_BODIES = [b"", b"null", b"[]", b"1", b'"text"', b"{}", b'{"inputs": {}}', b'{"inputs": [[1]]}',
              b'{"inputs": [["a", "b", "c"]]}', b'{"docs": [null]}', b'{"docs": [{"text_field": null}]}',
              b'{"input": [null]}', b'{"input": ""}', b'{"query": 1, "texts": "x"}',
              b'{"inputs": "x", "normalize": "maybe", "dimensions": []}', b'{"query": "q", "texts": ["a"], "top_n": -1}',
              b'{"inputs": "x", "parameters": 3}', b'{"inference_config": 7, "docs": [{"text_field": "a"}]}',
              b'{"adaptive_allocations": {"enabled": "yes"}}', b'{"number_of_allocations": "many"}',
              b'{"service": "elasticsearch", "service_settings": {"model_id": 5}}',
              b'{"inputs": "x", "truncate": "sometimes"}', b'{"input": "x", "encoding_format": "hex"}']
POST_ROUTES = ["/_ml/trained_models/minilm/_infer", "/_ml/trained_models/sts/_infer",
               "/_ml/trained_models/minilm/deployment/_update", "/_inference/text_embedding/nope",
               "/_inference/rerank/odd-endpoint", "/embed", "/embed_sparse", "/rerank", "/predict", "/similarity",
               "/tokenize", "/", "/models/sst2", "/v1/embeddings"]


@pytest.mark.parametrize("route", POST_ROUTES)
def test_odd_bodies_never_give_500(http: httpx.Client, route: str) -> None:
    for body in ODD_BODIES:
        response = http.put(route, content=body) if route.startswith("/_inference/rerank") else http.post(
            route, content=body)
        assert response.status_code < 500, (route, body, response.text)
        assert response.headers["content-type"].startswith("application/json"), (route, body)
        if response.status_code >= 400:
            assert "error" in response.json(), (route, body)
