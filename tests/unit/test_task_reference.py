"""The task layer against Elasticsearch's semantics on real models and real sentences.

For each small fine-tuned model in ../shared/models (and SPLADE-tiny as a masked LM), PyTorch runs
the fp32 model on exactly the windows ``prepare`` built; its logits go through ``finish`` and
through the plain-Python oracle in ``tests/golden/es_reference.py``; labels, spans and entities must
be identical and scores within tests.tolerances.TASK_ORACLE. A few dozen sentences per task keep this
to seconds.

Without ../shared the same comparisons run hermetically: a tiny random BERT with the same head, built
now (the oracle must agree for any weights; the fine-tuned ones make the outputs meaningful), on the
built-in corpora (English prose from the standard library's docstrings, bench/corpus.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.manifest import Manifest, TokenizationConfig
from engine.tasks import Prepared, get_task
from engine.tokenization import Tokenizer, Window
from tests.conftest import SHARED
from tests.golden import es_reference
from tests.golden.loader import assert_matches
from tests.tolerances import TASK_ORACLE

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOLERANCE = TASK_ORACLE
N_SENTENCES = 30


def manifest_for(task: str, model_dir: Path, **tokenization: Any) -> Manifest:
    config = json.loads((model_dir / "config.json").read_text())
    id2label = config.get("id2label") or {}
    labels = (
        [id2label[str(i)].replace("-", "_") for i in range(len(id2label))]
        if task != "text_similarity"
        else None
    )
    return Manifest(
        task=task,
        architecture="bert",
        graph="model.onnx",
        inputs=["input_ids", "attention_mask", "token_type_ids"],
        outputs=[{"name": "logits", "axes": [], "meaning": ""}],
        tokenizer="tokenizer.json",
        tokenization=TokenizationConfig(type="bert", do_lower_case=True, **tokenization),
        labels=labels or None,
    )


def forward(model: Any, window: Window) -> Any:
    with torch.no_grad():
        return model(
            input_ids=torch.from_numpy(window.input_ids)[None],
            attention_mask=torch.ones(1, len(window.input_ids), dtype=torch.int64),
            token_type_ids=torch.from_numpy(window.token_type_ids)[None],
        )


def run_model(
    task_name: str,
    model_dir: Path,
    model: Any,
    texts: list[str],
    update: dict,
    outputs_of: Callable[[Any], tuple[np.ndarray, ...]],
    **tokenization: Any,
) -> Iterator[tuple[Prepared, list[tuple[np.ndarray, ...]], dict, Any]]:
    """For each text: the prepared windows, PyTorch's outputs on them, and finish's result."""
    manifest = manifest_for(task_name, model_dir, **tokenization)
    tokenizer = Tokenizer.from_file(model_dir / "tokenizer.json", manifest.tokenization)
    runner = get_task(task_name).bind(manifest, tokenizer)
    cfg = runner.parse_config(update)
    for text in texts:
        prepared = runner.prepare(text, cfg)
        outputs = [outputs_of(forward(model, window)) for window in prepared.windows]
        yield prepared, outputs, runner.finish(prepared, outputs, cfg), tokenizer


def truncation(expected: dict, prepared: Prepared) -> dict:
    if prepared.is_truncated:
        expected["is_truncated"] = True
    return expected


def logits(output: Any) -> tuple[np.ndarray, ...]:
    return (output.logits[0].numpy(),)


def whole_word_span(window: Window, token: int) -> tuple[int, int]:
    """ES tokens carry their whole word's offsets: widen ``token`` to its run of equal word ids."""
    first = last = token
    while (
        first > 0
        and window.word_ids[first - 1] == window.word_ids[token]
        and window.sequence_ids[first - 1] == window.sequence_ids[token]
    ):
        first -= 1
    while (
        last + 1 < len(window.word_ids)
        and window.word_ids[last + 1] == window.word_ids[token]
        and window.sequence_ids[last + 1] == window.sequence_ids[token]
    ):
        last += 1
    return int(window.offsets[first][0]), int(window.offsets[last][1])


# ------------------------------------------------------------------------------------- data


def conll_sentences(path: Path) -> list[str]:
    sentences, words = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            if words:
                sentences.append(" ".join(words))
            words = []
        elif not line.startswith("-DOCSTART-"):
            words.append(line.split(" ")[0])
    return [s for s in sentences if len(s.split()) > 4][:N_SENTENCES]


def sst2_sentences(path: Path) -> list[str]:
    return [line.split("\t")[0].strip() for line in path.read_text().splitlines()[1 : N_SENTENCES + 1]]


def sts_pairs(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")[5:7]) for line in path.read_text().splitlines()[:N_SENTENCES]]


def masked_sentences(path: Path) -> list[str]:
    found = []
    for line in path.read_text().splitlines():
        for evidence in json.loads(line)["evidences"]:
            sentence = evidence["masked_sentence"]
            if sentence.count("[MASK]") == 1 and len(sentence) < 300:
                found.append(sentence)
                break
        if len(found) == N_SENTENCES:
            return found
    return found


def shared_data(*parts: str) -> Path | None:
    """A file of ../shared/data, or None on a machine without it."""
    path = SHARED.joinpath("data", *parts)
    return path if path.exists() else None


def builtin(name: str) -> list[str]:
    corpus = pytest.importorskip("bench.corpus")
    return corpus.load_corpus(name)


def builtin_masked() -> list[str]:
    """Built-in sentences with their middle word masked."""
    texts = []
    for sentence in builtin("builtin-sentences"):
        words = sentence.split()
        words[len(words) // 2] = "[MASK]"
        if len(" ".join(words)) < 300:
            texts.append(" ".join(words))
    return texts[:N_SENTENCES]


# ------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def model_for(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``(shared model name, task)`` → the fine-tuned model in ../shared/models, or a tiny BERT for the task."""

    def find(name: str, task: str) -> Path:
        real = SHARED / "models" / name
        if real.is_dir():
            return real
        tiny_models = pytest.importorskip("tests.tiny_models")
        return tiny_models.build_tiny_model("bert", task, tmp_path_factory.mktemp("tiny"))

    return find


@pytest.fixture(scope="module")
def model_loader():
    torch.set_num_threads(1)

    def load(kind: str, directory: Path) -> Any:
        model = getattr(transformers, kind).from_pretrained(directory)
        return model.eval()

    return load


def test_ner_matches_elasticsearch(model_for, model_loader):
    model_dir = model_for("tiny-ner-conll", "ner")
    model = model_loader("AutoModelForTokenClassification", model_dir)
    conll = shared_data("ner", "conll2003_test_a.txt")
    texts = conll_sentences(conll) if conll else builtin("builtin-sentences")[:N_SENTENCES]
    found = 0
    for prepared, outputs, result, _ in run_model("ner", model_dir, model, texts, {}, logits):
        window = prepared.windows[0]
        labels = [label.replace("-", "_") for label in model.config.id2label.values()]
        expected = es_reference.ner(
            outputs[0][0].tolist(),
            window.word_ids.tolist(),
            window.offsets.tolist(),
            labels,
            prepared.text,
            True,
        )
        assert_matches(result, truncation(expected, prepared), TOLERANCE)
        found += len(result["entities"])
    assert found > 10  # entities are found (in CoNLL news, or by the random head); the comparison is not vacuous


def test_text_classification_matches_elasticsearch(model_for, model_loader):
    model_dir = model_for("tiny-sst2", "text_classification")
    model = model_loader("AutoModelForSequenceClassification", model_dir)
    sst2 = shared_data("sentiment", "sst2_dev_a.tsv")
    texts = sst2_sentences(sst2) if sst2 else builtin("builtin-sentences")[:N_SENTENCES]
    windowed = 0
    # A short window with a span makes the longer reviews run as several windows (mean of softmax).
    for prepared, outputs, result, _ in run_model(
        "text_classification",
        model_dir,
        model,
        texts,
        {"num_top_classes": -1},
        logits,
        max_sequence_length=24,
        truncate="none",
        span=6,
    ):
        expected = es_reference.text_classification(
            [o[0].tolist() for o in outputs], ["NEGATIVE", "POSITIVE"], -1
        )
        assert_matches(result, truncation(expected, prepared), TOLERANCE)
        windowed += len(prepared.windows) > 1
    assert windowed > 5


def test_zero_shot_matches_elasticsearch(model_for, model_loader):
    model_dir = model_for("tiny-nli", "zero_shot_classification")
    model = model_loader("AutoModelForSequenceClassification", model_dir)
    mnli = shared_data("nli", "mnli_dev_matched_a.jsonl")
    if mnli:
        texts = [json.loads(line)["premise"] for line in mnli.read_text().splitlines()[:N_SENTENCES]]
    else:
        texts = builtin("builtin-sentences")[:N_SENTENCES]
    label_ids = {str(label).lower(): int(index) for index, label in model.config.id2label.items()}
    entailment, contradiction = label_ids.get("entailment", 1), label_ids.get("contradiction", 0)
    labels = ["politics", "travel", "fiction", "government"]
    for multi_label in (False, True):
        update = {"labels": labels, "multi_label": multi_label}
        for prepared, outputs, result, _ in run_model(
            "zero_shot_classification", model_dir, model, texts[:15], update, logits
        ):
            rows = [o[0].tolist() for o in outputs]
            expected = es_reference.zero_shot(
                rows, labels, entailment=entailment, contradiction=contradiction, multi_label=multi_label
            )
            assert_matches(result, truncation(expected, prepared), TOLERANCE)


def test_text_similarity_matches_elasticsearch(model_for, model_loader):
    model_dir = model_for("tiny-sts-crossencoder", "text_similarity")
    model = model_loader("AutoModelForSequenceClassification", model_dir)
    manifest = manifest_for("text_similarity", model_dir, truncate="none", max_sequence_length=24)
    tokenizer = Tokenizer.from_file(model_dir / "tokenizer.json", manifest.tokenization)
    task = get_task("text_similarity").bind(manifest, tokenizer)
    for combination in ("max", "mean"):
        sts = shared_data("sts", "sts-test_a.csv")
        # short queries (the query is not windowed, so it must fit the 24 tokens), sentence documents
        pairs = sts_pairs(sts) if sts else list(zip(builtin("builtin-queries"), builtin("builtin-sentences"),
                                                    strict=False))
        for query, document in pairs[:15]:
            update = {
                "text": query,
                "span_score_combination_function": combination,
                "tokenization": {"span": 4},
            }
            cfg = task.parse_config(update)
            prepared = task.prepare(document, cfg)
            outputs = [logits(forward(model, window)) for window in prepared.windows]
            expected = es_reference.text_similarity([float(o[0][0]) for o in outputs], combination)
            result = task.finish(prepared, outputs, cfg)
            assert_matches(result, truncation({"predicted_value": expected}, prepared), TOLERANCE)


def test_question_answering_matches_elasticsearch(model_for, model_loader):
    model_dir = model_for("tiny-squad", "question_answering")
    model = model_loader("AutoModelForQuestionAnswering", model_dir)
    manifest = manifest_for(
        "question_answering", model_dir, max_sequence_length=128, truncate="none", span=32
    )
    tokenizer = Tokenizer.from_file(model_dir / "tokenizer.json", manifest.tokenization)
    task = get_task("question_answering").bind(manifest, tokenizer)
    xquad = shared_data("qa", "xquad.en.json")
    if xquad:
        articles = json.loads(xquad.read_text())["data"]
        questions = [
            (qa["question"], p["context"])
            for a in articles[:3]
            for p in a["paragraphs"][:2]
            for qa in p["qas"][:2]
        ]
    else:
        questions = list(zip((f"{query}?" for query in builtin("builtin-queries")),
                             builtin("builtin-passages")[:12], strict=False))
    windowed = 0
    for question, context in questions:
        cfg = task.parse_config({"question": question, "num_top_classes": 3})
        prepared = task.prepare(context, cfg)
        outputs = []
        for window in prepared.windows:
            output = forward(model, window)
            outputs.append((output.start_logits[0].numpy(), output.end_logits[0].numpy()))
        result = task.finish(prepared, outputs, cfg)
        spans = es_reference.qa_spans(
            [o[0].tolist() for o in outputs],
            [o[1].tolist() for o in outputs],
            [w.seq2_start for w in prepared.windows],
            [len(w.input_ids) for w in prepared.windows],
            15,
            3,
        )
        answers = []
        for window_index, start, end, score in spans:
            window = prepared.windows[window_index]
            start_offset, end_offset = whole_word_span(window, start)[0], whole_word_span(window, end)[1]
            answers.append(
                {
                    "answer": context[start_offset:end_offset],
                    "start_offset": start_offset,
                    "end_offset": end_offset,
                    "score": score,
                }
            )
        expected = {
            "predicted_value": answers[0]["answer"],
            "start_offset": answers[0]["start_offset"],
            "end_offset": answers[0]["end_offset"],
            "top_classes": answers,
            "prediction_probability": answers[0]["score"],
        }
        assert_matches(result, truncation(expected, prepared), TOLERANCE)
        windowed += len(prepared.windows) > 1
    assert windowed > 3


def test_fill_mask_and_expansion_match_elasticsearch(splade_dir, model_loader):
    model = model_loader("AutoModelForMaskedLM", splade_dir)
    trex = shared_data("fillmask", "TREx_P19.jsonl")
    texts = masked_sentences(trex) if trex else builtin_masked()
    assert len(texts) == N_SENTENCES
    for prepared, outputs, result, tokenizer in run_model(
        "fill_mask", splade_dir, model, texts, {"num_top_classes": 5}, logits
    ):
        mask_row = outputs[0][0][prepared.mask_position].tolist()
        expected = es_reference.fill_mask(mask_row, 5, tokenizer.decode_token, prepared.text, "[MASK]")
        assert_matches(result, truncation(expected, prepared), TOLERANCE)

    def pooled(output: Any) -> tuple[np.ndarray, ...]:
        # The exported text_expansion graph's pooling (DESIGN.md): max over tokens of log(1 + relu(logits)).
        return (torch.log1p(torch.relu(output.logits[0])).max(dim=0).values.numpy(),)

    for prepared, outputs, result, tokenizer in run_model(
        "text_expansion", splade_dir, model, texts[:10], {}, pooled
    ):
        expected = es_reference.text_expansion(outputs[0][0].tolist(), tokenizer.id_to_token)
        assert_matches(result, truncation({"predicted_value": expected}, prepared), TOLERANCE)
        assert len(result["predicted_value"]) > 5
