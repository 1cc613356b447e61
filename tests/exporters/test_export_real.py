"""Exports of real weights: all-MiniLM-L6-v2 against sentence-transformers, SPLADE-tiny as
text_expansion and fill_mask, and the five fine-tuned task models of ../shared/models with their task
detected from config.json the way eland does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from engine.manifest import read_manifest
from exporters import export
from tests.tolerances import DOCUMENTED_COSINE_ABS, GRAPH_VS_TORCH_REL, SAME_GRAPH_ABS

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome, and the soundtrack is even better.",
    "Paris is the capital of [MASK].",
]
PAIRS = [
    "Someone is having a meal.",
    "A woman is playing the violin.",
    "I did not like the film at all.",
    "France has a capital city.",
]


def _run_package(
    package: Path, texts: list[str], pairs: list[str] | None = None
) -> tuple[list[np.ndarray], dict]:
    """Run a package the way the engine will: its tokenizer.json and manifest only."""
    from tokenizers import Tokenizer

    manifest = read_manifest(package)
    tokenizer = Tokenizer.from_file(str(package / manifest.tokenizer))
    pad_token, pad_id = manifest.special_tokens["pad"]
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    encodings = tokenizer.encode_batch(list(zip(texts, pairs, strict=True)) if pairs else texts)
    columns = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    feeds = {
        name: np.array([getattr(encoding, columns[name]) for encoding in encodings], dtype=np.int64)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    }
    session = onnxruntime.InferenceSession(str(package / manifest.graph), providers=["CPUExecutionProvider"])
    outputs = session.run(manifest.output_names, {name: feeds[name] for name in manifest.inputs})
    return outputs, feeds


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-6))


@pytest.fixture(scope="module")
def minilm_package(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(minilm_dir, tmp_path_factory.mktemp("minilm") / "pkg", quantize="none", progress=False)


def test_minilm_text_embedding_matches_sentence_transformers(minilm_dir: Path, minilm_package: Path) -> None:
    from sentence_transformers import SentenceTransformer

    manifest = read_manifest(minilm_package)
    assert manifest.task == "text_embedding"  # detected: modules.json, BertModel architecture
    assert manifest.embedding_size == 384 and manifest.similarity == "cosine"
    assert manifest.tokenization.do_lower_case is True
    (embeddings,), _ = _run_package(minilm_package, SENTENCES)
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    assert _relative_error(embeddings, reference) <= GRAPH_VS_TORCH_REL
    # The documented sentence-transformers example pair (MODELS.md): cosine 0.755.
    assert float(embeddings[0] @ embeddings[1]) == pytest.approx(0.755, abs=DOCUMENTED_COSINE_ABS)


def test_minilm_package_uses_the_fused_graph(minilm_package: Path) -> None:
    """BERT is the fuser's home ground: the fused graph must pass the PyTorch check and ship."""
    pytest.importorskip("exporters.optimize")
    optimization = read_manifest(minilm_package).optimization
    assert optimization["fused"] is True, optimization
    assert optimization["fusions"].get("Attention", 0) == 6


def test_minilm_int8_package_agrees_with_fp32(minilm_dir: Path, minilm_package: Path, tmp_path: Path) -> None:
    pytest.importorskip(
        "exporters.calibration", reason="the quantiser's calibration sentences are not there yet"
    )
    package = export(minilm_dir, tmp_path / "int8", quantize="int8", progress=False)
    manifest = read_manifest(package)
    assert sorted(manifest.files) == ["model.onnx", "tokenizer.json"]  # no fp32 graph in the package
    (int8,), _ = _run_package(package, SENTENCES)
    (fp32,), _ = _run_package(minilm_package, SENTENCES)
    cosines = np.sum(int8 * fp32, axis=1) / (np.linalg.norm(int8, axis=1) * np.linalg.norm(fp32, axis=1))
    if manifest.quantization["mode"] == "int8":
        assert manifest.quantization["agreement"]["value"] >= 0.99
        assert float(np.mean(cosines)) >= 0.98
    else:  # the guard rejected int8: the fp32 graph ships, and the manifest says why
        assert "int8_rejected" in manifest.quantization
        np.testing.assert_allclose(int8, fp32, atol=SAME_GRAPH_ABS)


def _mlm_logits(model_dir: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        return model(**{name: torch.from_numpy(value) for name, value in feeds.items()}).logits.numpy()


def test_splade_text_expansion_is_max_pooled_log_relu(splade_dir: Path, tmp_path: Path) -> None:
    package = export(splade_dir, tmp_path / "pkg", task="text_expansion", quantize="none", progress=False)
    manifest = read_manifest(package)
    assert manifest.outputs[0]["axes"] == ["batch", "vocab"]
    (weights,), feeds = _run_package(package, SENTENCES)
    logits = _mlm_logits(splade_dir, feeds)
    expected = (np.log1p(np.maximum(logits, 0)) * feeds["attention_mask"][..., None]).max(axis=1)
    assert _relative_error(weights, expected) <= GRAPH_VS_TORCH_REL
    assert weights.shape == (len(SENTENCES), 30522) and (weights >= 0).all()
    # A real SPLADE model weights the words of the sentence: "bread" is among sentence 2's top terms.
    from transformers import AutoTokenizer

    bread = AutoTokenizer.from_pretrained(str(splade_dir)).convert_tokens_to_ids("bread")
    assert bread in np.argsort(weights[1])[-20:]


def test_splade_fill_mask_is_detected_and_matches(splade_dir: Path, tmp_path: Path) -> None:
    package = export(splade_dir, tmp_path / "pkg", quantize="none", progress=False)
    manifest = read_manifest(package)
    assert manifest.task == "fill_mask"  # BertForMaskedLM, not a sentence-transformers model
    assert manifest.special_tokens["mask"] == ["[MASK]", 103]
    (logits,), feeds = _run_package(package, SENTENCES)
    mask = feeds["attention_mask"].astype(bool)
    assert _relative_error(logits[mask], _mlm_logits(splade_dir, feeds)[mask]) <= GRAPH_VS_TORCH_REL


SHARED_MODELS = {
    "tiny-ner-conll": ("ner", "AutoModelForTokenClassification"),
    "tiny-sst2": ("text_classification", "AutoModelForSequenceClassification"),
    "tiny-nli": ("zero_shot_classification", "AutoModelForSequenceClassification"),
    "tiny-sts-crossencoder": ("text_similarity", "AutoModelForSequenceClassification"),
    "tiny-squad": ("question_answering", "AutoModelForQuestionAnswering"),
}


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(SHARED_MODELS))
def test_shared_model_task_is_detected_and_graph_matches(
    name: str, shared_models: Path, tmp_path: Path
) -> None:
    import transformers

    model_dir = shared_models / name
    if not model_dir.is_dir():
        pytest.skip(f"{model_dir} is missing")
    task, auto_class = SHARED_MODELS[name]
    package = export(model_dir, tmp_path / "pkg", quantize="none", progress=False)
    manifest = read_manifest(package)
    assert manifest.task == task
    pairs = PAIRS if task in ("question_answering", "text_similarity", "zero_shot_classification") else None
    outputs, feeds = _run_package(package, SENTENCES, pairs)
    model = getattr(transformers, auto_class).from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        reference = model(**{key: torch.from_numpy(value) for key, value in feeds.items()})
    mask = feeds["attention_mask"].astype(bool)
    if task == "question_answering":
        assert manifest.tokenization.max_sequence_length == 386
        assert (manifest.tokenization.span, manifest.tokenization.truncate) == (128, "none")
        expected = [reference.start_logits.numpy(), reference.end_logits.numpy()]
        assert all(_relative_error(a[mask], e[mask]) <= GRAPH_VS_TORCH_REL for a, e in zip(outputs, expected, strict=True))
        return
    logits = reference.logits.numpy()
    actual = outputs[0][mask] if task == "ner" else outputs[0]
    assert _relative_error(actual, logits[mask] if task == "ner" else logits) <= GRAPH_VS_TORCH_REL
    if task == "ner":
        assert manifest.labels == [
            "O",
            "B_MISC",
            "I_MISC",
            "B_PER",
            "I_PER",
            "B_ORG",
            "I_ORG",
            "B_LOC",
            "I_LOC",
        ]
    elif task == "zero_shot_classification":
        assert manifest.labels == ["contradiction", "entailment", "neutral"]
        assert manifest.task_options["hypothesis_template"] == "This example is {}."
    elif task == "text_similarity":
        assert manifest.labels is None and manifest.tokenization.truncate == "second"
    else:
        assert manifest.labels == ["NEGATIVE", "POSITIVE"]
