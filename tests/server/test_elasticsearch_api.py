"""The official Elasticsearch client against ``engine serve``: product check, trained-model and
inference APIs, results equal to ``engine.run``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from elasticsearch import ApiError, BadRequestError, ConflictError, Elasticsearch, NotFoundError

import engine
from tests.tolerances import SAME_GRAPH_ABS

from .conftest import API_KEY, ServerProcess


@pytest.fixture(scope="module")
def es(server: ServerProcess) -> Elasticsearch:
    client = Elasticsearch(server.url, api_key=API_KEY, request_timeout=60)
    yield client
    client.close()


def test_product_check_and_info(es: Elasticsearch) -> None:
    info = es.info()
    assert info["tagline"] == "You Know, for Search"
    assert info["version"]["number"].startswith("9.")
    assert info.meta.headers["x-elastic-product"] == "Elasticsearch"


def test_get_trained_models_config(es: Elasticsearch) -> None:
    answer = es.ml.get_trained_models(model_id="minilm")
    assert answer["count"] == 1
    config = answer["trained_model_configs"][0]
    assert config["model_id"] == "minilm" and config["model_type"] == "pytorch"
    assert config["input"] == {"field_names": ["text_field"]}
    embedding = config["inference_config"]["text_embedding"]
    assert embedding["embedding_size"] == 384
    assert embedding["tokenization"]["bert"]["max_sequence_length"] > 0
    everything = es.ml.get_trained_models()
    assert {item["model_id"] for item in everything["trained_model_configs"]} >= {"minilm", "splade", "sts"}
    assert "text_similarity" in es.ml.get_trained_models(model_id="sts")["trained_model_configs"][0][
        "inference_config"]
    with pytest.raises(NotFoundError):
        es.ml.get_trained_models(model_id="does-not-exist")


def test_infer_matches_engine_run(es: Elasticsearch, minilm_package: Path) -> None:
    texts = ["The quick brown fox.", "Elasticsearch runs NLP models on ML nodes."]
    answer = es.ml.infer_trained_model(model_id="minilm", docs=[{"text_field": text} for text in texts],
                                       timeout="30s")
    expected = engine.run("text_embedding", texts, model=minilm_package)
    got = [item["predicted_value"] for item in answer["inference_results"]]
    np.testing.assert_allclose(np.array(got), np.array([item["predicted_value"] for item in expected]), atol=SAME_GRAPH_ABS)


def test_infer_with_inference_config_update(es: Elasticsearch, sts_package: Path) -> None:
    answer = es.ml.infer_trained_model(
        model_id="sts", docs=[{"text_field": "A man is eating food."}],
        inference_config={"text_similarity": {"text": "A man is eating a piece of bread."}})
    expected = engine.run("text_similarity", ["A man is eating food."], model=sts_package,
                          text="A man is eating a piece of bread.")
    assert answer["inference_results"][0]["predicted_value"] == pytest.approx(expected[0]["predicted_value"],
                                                                               abs=SAME_GRAPH_ABS)
    with pytest.raises(BadRequestError) as caught:
        es.ml.infer_trained_model(model_id="sts", docs=[{"text_field": "x"}],
                                  inference_config={"ner": {}})
    assert "can not be updated with a inference request of type [ner]" in str(caught.value.body)


def test_register_start_stats_update_stop(es: Elasticsearch, splade_package: Path) -> None:
    es.ml.put_trained_model(model_id="splade-copy", body={"location": str(splade_package),
                                                          "description": "a second registration"})
    with pytest.raises(ConflictError, match="status_exception"):
        es.ml.infer_trained_model(model_id="splade-copy", docs=[{"text_field": "hello"}])
    started = es.ml.start_trained_model_deployment(model_id="splade-copy", deployment_id="splade-copy-a",
                                                   threads_per_allocation=1, queue_capacity=64, cache_size="0b")
    assignment = started["assignment"]
    assert assignment["task_parameters"]["deployment_id"] == "splade-copy-a"
    assert assignment["task_parameters"]["queue_capacity"] == 64
    assert assignment["assignment_state"] == "started"
    result = es.ml.infer_trained_model(model_id="splade-copy-a", docs=[{"text_field": "the capital of france"}])
    weights = result["inference_results"][0]["predicted_value"]
    assert weights and all(value > 0 for value in weights.values())
    assert list(weights.values()) == sorted(weights.values(), reverse=True)
    stats = es.ml.get_trained_models_stats(model_id="splade-copy")
    entry = stats["trained_model_stats"][0]
    assert entry["deployment_stats"]["deployment_id"] == "splade-copy-a"
    assert entry["deployment_stats"]["inference_count"] >= 1
    node = entry["deployment_stats"]["nodes"][0]
    assert node["routing_state"]["routing_state"] == "started" and node["inference_count"] >= 1
    assert node["number_of_pending_requests"] == 0 and "last_access_string" in node
    assert entry["inference_stats"]["inference_count"] >= 1
    assert entry["model_size_stats"]["model_size_bytes"] > 0
    updated = es.ml.update_trained_model_deployment(model_id="splade-copy-a", number_of_allocations=1)
    assert updated["assignment"]["task_parameters"]["number_of_allocations"] == 1
    assert es.ml.clear_trained_model_deployment_cache(model_id="splade-copy-a")["cleared"] is True
    with pytest.raises(BadRequestError, match="illegal_argument_exception"):
        es.ml.start_trained_model_deployment(model_id="splade-copy", deployment_id="splade-copy-a")
    assert es.ml.stop_trained_model_deployment(model_id="splade-copy-a")["stopped"] is True
    with pytest.raises(ConflictError):
        es.ml.infer_trained_model(model_id="splade-copy", docs=[{"text_field": "hello"}])
    assert es.ml.delete_trained_model(model_id="splade-copy")["acknowledged"] is True


def test_start_validation_errors(es: Elasticsearch) -> None:
    with pytest.raises(BadRequestError) as caught:
        es.ml.start_trained_model_deployment(model_id="sts", deployment_id="sts-bad", threads_per_allocation=3)
    assert caught.value.body["error"]["reason"] == (
        "[threads_per_allocation] must be a power of 2 less than or equal to 32")
    with pytest.raises(BadRequestError, match="illegal_argument_exception"):
        es.ml.start_trained_model_deployment(
            model_id="sts", deployment_id="sts-bad", number_of_allocations=2,
            adaptive_allocations={"enabled": True, "min_number_of_allocations": 1})
    with pytest.raises(NotFoundError):
        es.ml.start_trained_model_deployment(model_id="nope")


def test_inference_api_text_embedding_and_rerank(es: Elasticsearch, minilm_package: Path,
                                                 sts_package: Path) -> None:
    created = es.inference.put(task_type="text_embedding", inference_id="minilm-endpoint", inference_config={
        "service": "elasticsearch",
        "service_settings": {"model_id": "minilm", "num_allocations": 1, "num_threads": 1}})
    assert created["inference_id"] == "minilm-endpoint" and created["service"] == "elasticsearch"
    texts = ["first text", "second, longer text about search"]
    answer = es.inference.text_embedding(inference_id="minilm-endpoint", input=texts)
    expected = engine.run("text_embedding", texts, model=minilm_package)
    np.testing.assert_allclose([item["embedding"] for item in answer["text_embedding"]],
                               [item["predicted_value"] for item in expected], atol=SAME_GRAPH_ABS)
    listed = es.inference.get(task_type="text_embedding")
    assert [item["inference_id"] for item in listed["endpoints"]] == ["minilm-endpoint"]

    es.inference.put(task_type="rerank", inference_id="sts-rerank", inference_config={
        "service": "elasticsearch",
        "service_settings": {"model_id": "sts", "num_allocations": 1, "num_threads": 1},
        "task_settings": {"return_documents": True}})
    docs = ["A man is playing a guitar.", "A man is eating food.", "The stock market fell."]
    ranked = es.inference.rerank(inference_id="sts-rerank", input=docs, query="A man is eating a meal.",
                                 top_n=2)["rerank"]
    scores = engine.run("text_similarity", docs, model=sts_package, text="A man is eating a meal.")
    order = sorted(range(3), key=lambda i: -scores[i]["predicted_value"])[:2]
    assert [item["index"] for item in ranked] == order
    assert ranked[0]["text"] == docs[order[0]]
    assert ranked[0]["relevance_score"] == pytest.approx(scores[order[0]]["predicted_value"], abs=SAME_GRAPH_ABS)

    with pytest.raises(ApiError) as caught:
        es.inference.put(task_type="rerank", inference_id="wrong-task", inference_config={
            "service": "elasticsearch",
            "service_settings": {"model_id": "minilm", "num_allocations": 1, "num_threads": 1}})
    assert caught.value.meta.status == 400
    assert es.inference.delete(inference_id="sts-rerank")["acknowledged"] is True
    assert es.inference.delete(task_type="text_embedding", inference_id="minilm-endpoint")["acknowledged"] is True
    with pytest.raises(NotFoundError):
        es.inference.get(inference_id="minilm-endpoint")


def test_inference_api_sparse_embedding(es: Elasticsearch, splade_package: Path) -> None:
    es.inference.put(task_type="sparse_embedding", inference_id="splade-endpoint", inference_config={
        "service": "elasticsearch",
        "service_settings": {"model_id": "splade", "num_allocations": 1, "num_threads": 1}})
    try:
        answer = es.inference.inference(inference_id="splade-endpoint", input="what is the capital of france")
        item = answer["sparse_embedding"][0]
        assert item["is_truncated"] is False
        expected = engine.run("text_expansion", ["what is the capital of france"], model=splade_package)
        assert list(item["embedding"]) == list(expected[0]["predicted_value"])
    finally:
        es.inference.delete(inference_id="splade-endpoint")


def test_start_with_adaptive_allocations_body(es: Elasticsearch) -> None:
    started = es.ml.start_trained_model_deployment(
        model_id="splade", deployment_id="splade-adaptive",
        adaptive_allocations={"enabled": True, "min_number_of_allocations": 1, "max_number_of_allocations": 2})
    try:
        assert started["assignment"]["adaptive_allocations"]["max_number_of_allocations"] == 2
        stats = es.ml.get_trained_models_stats(model_id="splade")["trained_model_stats"]
        adaptive = [entry["deployment_stats"] for entry in stats
                    if entry["deployment_stats"]["deployment_id"] == "splade-adaptive"][0]
        assert adaptive["adaptive_allocations"]["enabled"] is True
        with pytest.raises(BadRequestError, match="illegal_argument_exception"):
            es.ml.update_trained_model_deployment(model_id="splade-adaptive", number_of_allocations=2)
        updated = es.ml.update_trained_model_deployment(
            model_id="splade-adaptive", adaptive_allocations={"enabled": False})
        assert updated["assignment"]["task_parameters"]["deployment_id"] == "splade-adaptive"
    finally:
        es.ml.stop_trained_model_deployment(model_id="splade-adaptive")
