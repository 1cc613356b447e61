"""``engine.run`` end to end: export → package → deployment → task results, against PyTorch.

Every (architecture, task) pair the exporters support runs through ``engine.run`` on a tiny random model
and must give the results that the same task logic gives on PyTorch outputs; the real models check the
numbers that matter to users.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from engine.errors import EngineError, InvalidInput, ModelError, PackageError
from tests.tolerances import DOCUMENTED_COSINE_INT8_ABS, RESULT_VS_TORCH, SAME_GRAPH_DERIVED_ABS

torch = pytest.importorskip("torch")
exporters = pytest.importorskip("exporters")
accuracy = pytest.importorskip("bench.accuracy")

SENTENCES = [
    "Angela Merkel met Emmanuel Macron in Paris on Tuesday.",
    "The quick brown fox jumps over the lazy dog.",
    "Is this the best pizza in New York City?",
]


@pytest.fixture(scope="module", autouse=True)
def engine_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not os.environ.get("ENGINE_HOME"):
        os.environ["ENGINE_HOME"] = str(tmp_path_factory.mktemp("engine-home"))


def task_inputs(task: str, package: Path) -> tuple[list[str], dict[str, Any]]:
    """Texts and config that exercise a task, built from the package's own tokens."""
    manifest = json.loads((package / "engine.json").read_text())
    if task == "fill_mask":
        mask = manifest["special_tokens"]["mask"][0]
        return [f"The capital of France is {mask}.", f"{mask} is a city."], {"num_top_classes": 3}
    if task == "question_answering":
        return ["Angela Merkel met Emmanuel Macron in Paris on Tuesday."], {"question": "Where did they meet?",
                                                                            "num_top_classes": 2}
    if task == "text_similarity":
        return SENTENCES, {"text": "Where is the fox?"}
    if task == "zero_shot_classification":
        return SENTENCES, {"labels": ["politics", "animals", "food"]}
    if task in ("text_classification", "ner"):
        return SENTENCES, {"num_top_classes": -1} if task == "text_classification" else {}
    return SENTENCES, {}


def assert_close(actual: Any, expected: Any, path: str = "result") -> None:
    """Same structure and strings; numbers within RESULT_VS_TORCH (fp32 graph vs PyTorch, both fp32)."""
    if isinstance(expected, dict):
        # Key sets, not key order: random tiny models have near-tied sparse weights whose order may swap.
        assert isinstance(actual, dict), f"{path}: {type(actual).__name__} is not a dict"
        assert set(actual) == set(expected), f"{path}: keys differ: {sorted(set(actual) ^ set(expected))[:10]}"
        for key in expected:
            assert_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: length differs"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, f"{path}[{index}]")
    elif isinstance(expected, float):
        close = math.isclose(actual, expected, rel_tol=RESULT_VS_TORCH, abs_tol=RESULT_VS_TORCH)
        assert close, f"{path}: {actual} vs {expected}"
    else:
        assert actual == expected, f"{path}: {actual!r} vs {expected!r}"


def _pairs() -> list[tuple[str, str]]:
    from exporters.registry import supported_pairs

    # The tiny-model builders name DPR's two encoders apart; the registry knows them as one model type.
    expanded = {"dpr": ("dpr_question", "dpr_context")}
    return [(name, task) for architecture, task in supported_pairs()
            for name in expanded.get(architecture, (architecture,))]


@pytest.mark.parametrize(("architecture", "task"), _pairs())
def test_every_supported_pair_runs_and_matches_pytorch(architecture: str, task: str,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    tiny_models = pytest.importorskip("tests.tiny_models")
    source = tiny_models.build_tiny_model(architecture, task, tmp_path_factory.mktemp("src"))
    package = tmp_path_factory.mktemp("pkg") / "package"
    exporters.export(str(source), task=task, out=package, quantize="none")
    texts, config = task_inputs(task, package)
    results = engine.run(task, texts, model=package, **config)
    expected = accuracy.reference_infer(package, source)(texts, **config)
    assert len(results) == len(texts)
    assert_close(results, expected)


@pytest.fixture(scope="module")
def minilm_package(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("minilm") / "int8"
    exporters.export(str(minilm_dir), task="text_embedding", out=out, quantize="int8")
    return out


def test_default_embedding_model_matches_sentence_transformers(minilm_dir: Path, minilm_package: Path) -> None:
    from sentence_transformers import SentenceTransformer

    pair = ["A man is eating food.", "A man is eating a piece of bread."]
    results = engine.run("text_embedding", pair, model=minilm_package)
    vectors = np.array([r["predicted_value"] for r in results])
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(pair)
    cosines = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.97
    # The sentence-transformers docs give 0.755 for this pair with all-MiniLM-L6-v2.
    assert float(vectors[0] @ vectors[1]) == pytest.approx(0.755, abs=DOCUMENTED_COSINE_INT8_ABS)


def test_batch_equals_single_and_keeps_order(minilm_package: Path) -> None:
    texts = ["short", "a much longer sentence about many different things " * 4, "medium length text here"]
    batch = engine.run("text_embedding", texts, model=minilm_package)
    single = [engine.run("text_embedding", text, model=minilm_package)[0] for text in texts]
    for b, s in zip(batch, single, strict=True):
        np.testing.assert_allclose(b["predicted_value"], s["predicted_value"], atol=SAME_GRAPH_DERIVED_ABS)


def test_errors_are_engine_errors(minilm_package: Path, tmp_path: Path) -> None:
    assert engine.run("text_embedding", [], model=minilm_package) == []
    with pytest.raises(InvalidInput):
        engine.run("text_embedding", ["ok", "   "], model=minilm_package)
    with pytest.raises(ModelError, match="exported for task"):
        engine.run("ner", ["Waldo is in Paris"], model=minilm_package)
    with pytest.raises(InvalidInput, match="unknown task"):
        engine.run("summarization", ["x"], model=minilm_package)
    with pytest.raises(InvalidInput, match="no default model"):
        engine.run("ner", ["Waldo is in Paris"])
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for file in minilm_package.iterdir():
        (corrupt / file.name).write_bytes(file.read_bytes())
    graph = json.loads((corrupt / "engine.json").read_text())["graph"]
    (corrupt / graph).write_bytes((corrupt / graph).read_bytes()[:-7] + b"garbage")
    with pytest.raises(PackageError, match="sha256"):
        engine.run("text_embedding", ["x"], model=corrupt)
    assert issubclass(PackageError, EngineError)


def test_cli_run_prints_json_lines(minilm_package: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "text_embedding", "--model", str(minilm_package), "one", "two"],
        capture_output=True, text=True, check=True,
    )
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 2
    assert len(json.loads(lines[0])["predicted_value"]) == 384
    failed = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", "ner", "--model", str(minilm_package), "x"],
        capture_output=True, text=True, check=False,
    )
    assert failed.returncode == ModelError.exit_code
    assert "exported for task" in failed.stderr and "Traceback" not in failed.stderr


def test_splade_expansion_and_fill_mask(splade_dir: Path, tmp_path: Path) -> None:
    expansion = tmp_path / "splade-exp"
    exporters.export(str(splade_dir), task="text_expansion", out=expansion, quantize="none")
    result = engine.run("text_expansion", ["What is the capital of France?"], model=expansion)[0]
    weights = list(result["predicted_value"].values())
    assert weights and weights == sorted(weights, reverse=True) and min(weights) > 0
    assert not any("." in token for token in result["predicted_value"])
    reference = accuracy.reference_infer(expansion, splade_dir)(["What is the capital of France?"])[0]
    assert list(result["predicted_value"])[:10] == list(reference["predicted_value"])[:10]
    fill = tmp_path / "splade-fill"
    exporters.export(str(splade_dir), task="fill_mask", out=fill, quantize="none")
    result = engine.run("fill_mask", ["The capital of France is [MASK]."], model=fill)[0]
    assert result["predicted_value_sequence"] == f"The capital of France is {result['predicted_value']}."
    assert len(result["top_classes"]) == 5
