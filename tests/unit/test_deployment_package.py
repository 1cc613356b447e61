"""A deployment of a real model package: the real tokenizer, task and package loader around a tiny graph.

The package holds all-MiniLM-L6-v2's ``tokenizer.json`` and a graph built here (a random embedding
table over its vocabulary, masked mean pooling), so the expected embedding of any text can be
computed from the tokenizer's ids alone.
"""

from __future__ import annotations

import concurrent.futures
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer as RustTokenizer

from engine.deployment import Deployment, DeploymentConfig
from engine.errors import InvalidInput
from engine.manifest import Manifest, TokenizationConfig, write_manifest
from engine.package import load_package
from tests.tolerances import FAKE_GRAPH_ABS, FAKE_GRAPH_REL
from tests.unit.test_deployment import WAIT_S, build_graph

DIM = 4
TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "Hello",
         "The quick brown fox jumps over the lazy dog, twice, and then once more for good measure.",
         "Elasticsearch runs NLP models on ML nodes."]


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    directory = tmp_path_factory.mktemp("minilm-tiny")
    shutil.copy(minilm_dir / "tokenizer.json", directory / "tokenizer.json")
    vocab = RustTokenizer.from_file(str(minilm_dir / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    table = np.random.default_rng(3).standard_normal((vocab, DIM)).astype(np.float32)
    np.save(directory / "table.npy", table)
    build_graph(directory / "model.onnx", with_types=True, table=table)
    manifest = Manifest(
        task="text_embedding", architecture="bert", graph="model.onnx",
        inputs=["input_ids", "attention_mask", "token_type_ids"],
        outputs=[{"name": "embedding", "axes": ["batch", "hidden"], "meaning": "sentence embedding"},
                 {"name": "tokens", "axes": ["batch", "sequence", "hidden"], "meaning": "token vectors"}],
        tokenizer="tokenizer.json",
        tokenization=TokenizationConfig(type="bert", do_lower_case=True, max_sequence_length=16),
        embedding_size=DIM, similarity="cosine",
    )
    write_manifest(directory, manifest)
    return directory


def expected_embedding(package_dir: Path, text: str) -> np.ndarray:
    rust = RustTokenizer.from_file(str(package_dir / "tokenizer.json"))
    rust.no_padding()
    rust.enable_truncation(16)
    ids = rust.encode(text).ids
    return np.load(package_dir / "table.npy")[ids].mean(axis=0)


def test_real_package_through_the_scheduler(package_dir: Path) -> None:
    package = load_package(package_dir)
    config = DeploymentConfig(cache_size="64kb", max_batch_tokens=48)
    with Deployment(package, config) as deployment, concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [(texts, pool.submit(deployment.infer, texts))
                   for texts in ([TEXTS[i % 5], TEXTS[(i + 2) % 5]] for i in range(10))]
        for texts, future in futures:
            for result, text in zip(future.result(WAIT_S), texts, strict=True):
                np.testing.assert_allclose(result["predicted_value"], expected_embedding(package_dir, text),
                                           rtol=FAKE_GRAPH_REL, atol=FAKE_GRAPH_ABS)
        truncated = deployment.infer(TEXTS[3], results_field="vector")[0]
        assert truncated["is_truncated"] is True and len(truncated["vector"]) == DIM
        with pytest.raises(InvalidInput):
            deployment.infer(["fine", ""])
        stats = deployment.stats()
    assert stats["inference_count"] == 21
    assert stats["inference_cache_hit_count"] > 0  # the same five texts came back many times
