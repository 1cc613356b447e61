"""TEI-style and OpenAI-style routes, through the ``openai`` and ``huggingface_hub`` clients and what
Elasticsearch's ``hugging_face`` / ``openai`` inference services send."""

from __future__ import annotations

import base64
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import InferenceClient
from openai import BadRequestError, OpenAI

import engine
from engine.package import load_package
from tests.tolerances import SAME_GRAPH_ABS, SAME_GRAPH_DERIVED_ABS

from .conftest import API_KEY, ServerProcess

TEXTS = ["A man is eating food.", "A man is eating a piece of bread."]


@pytest.fixture(scope="module")
def expected_embeddings(minilm_package: Path) -> np.ndarray:
    return np.array([item["predicted_value"] for item in engine.run("text_embedding", TEXTS, model=minilm_package)])


def test_openai_client_embeddings(server: ServerProcess, expected_embeddings: np.ndarray) -> None:
    client = OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY)
    answer = client.embeddings.create(input=TEXTS, model="minilm")
    assert [item.index for item in answer.data] == [0, 1]
    np.testing.assert_allclose([item.embedding for item in answer.data], expected_embeddings, atol=SAME_GRAPH_ABS)
    assert answer.usage.prompt_tokens > len(TEXTS)
    # The client asks for base64 by default when numpy is around; check the raw wire format too.
    raw = client.embeddings.with_raw_response.create(input="hello", model="minilm", encoding_format="base64")
    payload = raw.http_response.json()["data"][0]["embedding"]
    decoded = struct.unpack(f"<{384}f", base64.b64decode(payload))
    assert len(decoded) == 384
    with pytest.raises(BadRequestError):
        client.embeddings.create(input="hello", model="minilm", dimensions=128)
    models = client.models.list()
    assert "minilm" in [item.id for item in models.data]


def test_openai_usage_is_the_tokens_embedded(server: ServerProcess, minilm_package: Path) -> None:
    """The count comes from the deployment's own tokenisation: it must be what the tokenizer makes of
    the texts under the package's truncation (special tokens included)."""
    package = load_package(minilm_package)
    truncate = package.manifest.tokenization.truncate
    long_text = " ".join(["bread"] * 600)  # truncated to the model's 512 positions
    texts = [*TEXTS, long_text]
    want = [sum(len(window.input_ids) for window in package.tokenizer.single(text, truncate, -1).windows)
            for text in texts]
    assert want[-1] == package.manifest.tokenization.max_sequence_length
    with server.client() as http:
        one = http.post("/v1/embeddings", json={"input": TEXTS[0], "model": "minilm"}).json()
        many = http.post("/v1/embeddings", json={"input": texts, "model": "minilm"}).json()
    assert one["usage"] == {"prompt_tokens": want[0], "total_tokens": want[0]}
    assert many["usage"] == {"prompt_tokens": sum(want), "total_tokens": sum(want)}


def test_what_elasticsearch_openai_service_sends(server: ServerProcess,
                                                 expected_embeddings: np.ndarray) -> None:
    with server.client() as http:
        answer = http.post("/v1/embeddings", json={"input": TEXTS, "model": "minilm", "user": "es",
                                                   "dimensions": 384})
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "list" and body["model"] == "minilm"
    np.testing.assert_allclose([item["embedding"] for item in body["data"]], expected_embeddings, atol=SAME_GRAPH_ABS)


def test_huggingface_inference_client(server: ServerProcess, expected_embeddings: np.ndarray) -> None:
    client = InferenceClient(model=f"{server.url}/embed", token=API_KEY)
    vector = client.feature_extraction(TEXTS[0])
    np.testing.assert_allclose(np.asarray(vector).reshape(-1), expected_embeddings[0], atol=SAME_GRAPH_ABS)
    root = InferenceClient(model=server.url, token=API_KEY)
    similarity = root.sentence_similarity(TEXTS[0], other_sentences=[TEXTS[1], TEXTS[0]])
    cosine = float(np.dot(expected_embeddings[0], expected_embeddings[1]) /
                   (np.linalg.norm(expected_embeddings[0]) * np.linalg.norm(expected_embeddings[1])))
    assert similarity[0] == pytest.approx(cosine, abs=SAME_GRAPH_DERIVED_ABS)
    assert similarity[1] == pytest.approx(1.0, abs=SAME_GRAPH_DERIVED_ABS)


def test_tei_embed_shapes(server: ServerProcess, expected_embeddings: np.ndarray) -> None:
    with server.client() as http:
        single = http.post("/embed", json={"inputs": TEXTS[0]}).json()
        batch = http.post("/embed", json={"inputs": TEXTS, "normalize": True, "truncate": True}).json()
        # Elasticsearch's hugging_face service posts {"inputs": [...]} and reads a list of vectors.
        from_es = http.post("/embed", json={"inputs": TEXTS}).json()
        info = http.get("/info").json()
        tokens = http.post("/tokenize", json={"inputs": "Hello world", "add_special_tokens": True}).json()
    assert np.asarray(single).shape == (1, 384)
    np.testing.assert_allclose(batch, expected_embeddings / np.linalg.norm(expected_embeddings, axis=1,
                                                                            keepdims=True), atol=SAME_GRAPH_ABS)
    assert np.asarray(from_es).shape == (2, 384)
    assert info["model_id"] == "minilm" and "embedding" in info["model_type"]
    assert info["max_client_batch_size"] == 64
    first = tokens[0]
    assert first[0]["special"] is True and first[0]["start"] is None
    assert [token["text"] for token in first if not token["special"]] == ["hello", "world"]
    assert first[1]["start"] == 0 and first[1]["stop"] == 5


def test_tei_sparse_and_rerank(server: ServerProcess, splade_package: Path, sts_package: Path) -> None:
    with server.client() as http:
        sparse = http.post("/embed_sparse", json={"inputs": ["paris is in france"], "model": "splade"}).json()
        tokens = http.post("/embed_sparse?format=tokens", json={"inputs": ["paris is in france"]}).json()
        docs = ["A man is playing a guitar.", "A man is eating food."]
        ranked = http.post("/rerank", json={"query": "Someone eats.", "texts": docs, "return_text": True}).json()
        raw = http.post("/rerank", json={"query": "Someone eats.", "texts": docs, "raw_scores": True}).json()
        predicted = http.post("/predict", json={"inputs": [["Someone eats.", docs[1]]], "model": "sts"}).json()
    expected = engine.run("text_expansion", ["paris is in france"], model=splade_package)[0]["predicted_value"]
    assert list(tokens[0]) == list(expected) and tokens[0] == pytest.approx(expected)
    assert len(sparse[0]) == len(expected)
    assert [item["value"] for item in sparse[0]] == pytest.approx(list(expected.values()))
    assert all(isinstance(item["index"], int) for item in sparse[0])
    logits = [item["predicted_value"] for item in engine.run("text_similarity", docs, model=sts_package,
                                                              text="Someone eats.")]
    best = int(np.argmax(logits))
    assert ranked[0]["index"] == best and ranked[0]["text"] == docs[best]
    assert ranked[0]["score"] == pytest.approx(1 / (1 + math.exp(-logits[best])), abs=SAME_GRAPH_ABS)
    assert raw[0]["score"] == pytest.approx(logits[best], abs=SAME_GRAPH_ABS) and "text" not in raw[0]
    assert predicted[0][0]["score"] == pytest.approx(1 / (1 + math.exp(-logits[1])), abs=SAME_GRAPH_ABS)


def test_tei_errors_are_tei_shaped(server: ServerProcess) -> None:
    with server.client() as http:
        wrong = http.post("/embed", json={"inputs": []})
        long_text = " ".join(["word"] * 2000)
        too_long = http.post("/embed", json={"inputs": long_text, "truncate": False})
        truncated = http.post("/embed", json={"inputs": long_text})
        left = http.post("/embed", json={"inputs": "x", "truncation_direction": "Left"})
    assert wrong.status_code == 400 and wrong.json()["error_type"] == "Validation"
    assert too_long.status_code == 400 and "error" in too_long.json()
    assert truncated.status_code == 200
    assert left.status_code == 400


def test_predict_text_classification(server: ServerProcess, sst2_package: Path) -> None:
    text = "a wonderful, moving film"
    expected = engine.run("text_classification", [text], model=sst2_package, num_top_classes=2)[0]["top_classes"]
    with server.client() as http:
        single = http.post("/predict", json={"inputs": text, "model": "sst2"}).json()
        batch = http.post("/predict", json={"inputs": [[text], ["a dull mess"]], "model": "sst2"}).json()
        pair = http.post("/predict", json={"inputs": [[text, "second"]], "model": "sst2"})
    assert [item["label"] for item in single] == [item["class_name"] for item in expected]
    assert [item["score"] for item in single] == pytest.approx([item["class_probability"] for item in expected],
                                                               abs=SAME_GRAPH_ABS)
    assert len(batch) == 2 and batch[0] == single
    assert pair.status_code == 400
    labels = InferenceClient(model=f"{server.url}/models/sst2", token=API_KEY).text_classification(text)
    assert labels[0].label == expected[0]["class_name"]
    assert labels[0].score == pytest.approx(expected[0]["class_probability"], abs=SAME_GRAPH_ABS)
