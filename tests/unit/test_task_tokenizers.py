"""Every task end to end through ``prepare`` with real tokenizers, and ``finish`` on made-up logits.

The logits are built from the prepared windows (word ids, lengths), so each test knows the answer
it should get back: these check that prepare and finish agree about rows, offsets and text.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from engine.errors import InputTooLarge, InvalidInput, ModelError
from engine.manifest import Manifest, TokenizationConfig
from engine.tasks import TASK_NAMES, get_task
from engine.tokenization import Tokenizer
from tests.golden import es_reference
from tests.tolerances import GOLDEN

NLI_LABELS = ["contradiction", "entailment", "neutral"]
NER_LABELS = ["O", "B_MISC", "I_MISC", "B_PER", "I_PER", "B_ORG", "I_ORG", "B_LOC", "I_LOC"]


def bert_manifest(task: str, labels: list[str] | None = None, **tokenization: Any) -> Manifest:
    return Manifest(
        task=task,
        architecture="bert",
        graph="model.onnx",
        inputs=["input_ids", "attention_mask", "token_type_ids"],
        outputs=[{"name": "logits", "axes": [], "meaning": ""}],
        tokenizer="tokenizer.json",
        tokenization=TokenizationConfig(type="bert", do_lower_case=True, **tokenization),
        labels=labels,
    )


def load_tokenizer(model_dir: Path, manifest: Manifest) -> Tokenizer:
    return Tokenizer.from_file(model_dir / "tokenizer.json", manifest.tokenization, manifest.special_tokens)


def run(task_name: str, model_dir: Path, text: str, update: dict, logits_for, labels=None, **tokenization):
    """parse_config -> prepare -> finish, with ``logits_for(window) -> tuple of outputs``."""
    manifest = bert_manifest(task_name, labels, **tokenization)
    tokenizer = load_tokenizer(model_dir, manifest)
    task = get_task(task_name).bind(manifest, tokenizer)
    cfg = task.parse_config(update)
    prepared = task.prepare(text, cfg)
    outputs = [logits_for(window) for window in prepared.windows]
    return prepared, task.finish(prepared, outputs, cfg), tokenizer


def word_index(window, text: str, word: str) -> int:
    """The word id of the token whose offsets start at ``word``'s first occurrence in ``text``."""
    start = text.index(word)
    for position, (offset, word_id) in enumerate(zip(window.offsets[:, 0], window.word_ids, strict=True)):
        if offset == start and word_id >= 0 and window.sequence_ids[position] == window.sequence_ids.max():
            return int(word_id)
    raise AssertionError(f"{word} not in window")


# ----------------------------------------------------------------------------------- fill_mask


def test_fill_mask_end_to_end(splade_dir):
    text = "The capital of France is [MASK]."
    target = 3000  # "paris" in the uncased BERT vocabulary

    def logits_for(window):
        logits = np.zeros((len(window.input_ids), 30522), np.float32)
        logits[:, 0] = 4.0
        logits[window.input_ids == 103, target] = 9.0
        return (logits,)

    prepared, result, tokenizer = run("fill_mask", splade_dir, text, {"num_top_classes": 2}, logits_for)
    assert prepared.windows[0].input_ids[prepared.mask_position] == tokenizer.mask_token_id
    assert list(result) == [
        "predicted_value",
        "top_classes",
        "prediction_probability",
        "predicted_value_sequence",
    ]
    assert result["predicted_value"] == tokenizer.decode_token(target) == "paris"
    assert result["predicted_value_sequence"] == "The capital of France is paris."
    assert [entry["class_name"] for entry in result["top_classes"]] == ["paris", "[PAD]"]
    assert result["prediction_probability"] == result["top_classes"][0]["class_probability"]
    expected = np.exp(9.0) / (np.exp(9.0) + np.exp(4.0) + 30520)
    assert result["prediction_probability"] == pytest.approx(expected, rel=GOLDEN)
    assert "is_truncated" not in result


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no mask here", "no [MASK] token could be found in the input"),
        ("", "no [MASK] token could be found in the input"),
        ("[MASK] and [MASK]", "only one [MASK] token should exist in the input"),
    ],
)
def test_fill_mask_needs_exactly_one_mask(splade_dir, text, message):
    manifest = bert_manifest("fill_mask")
    task = get_task("fill_mask").bind(manifest, load_tokenizer(splade_dir, manifest))
    with pytest.raises(InvalidInput) as error:
        task.prepare(text, task.parse_config({}))
    assert error.value.message == message


def test_fill_mask_truncated_away(splade_dir):
    manifest = bert_manifest("fill_mask", max_sequence_length=6)
    task = get_task("fill_mask").bind(manifest, load_tokenizer(splade_dir, manifest))
    with pytest.raises(InvalidInput) as error:
        task.prepare("one two three four five [MASK]", task.parse_config({}))
    assert error.value.message == (
        "the [MASK] token fell past [max_sequence_length] [6] and was truncated away; "
        "put it earlier in the text or shorten the text before it"
    )
    assert error.value.status == 400


def test_fill_mask_needs_a_mask_token_in_the_vocabulary():
    no_mask: Any = SimpleNamespace(mask_token="[MASK]", mask_token_id=-1)
    task = get_task("fill_mask").bind(bert_manifest("fill_mask"), no_mask)
    with pytest.raises(ModelError) as error:
        task.prepare("The [MASK] sat.", task.parse_config({}))
    assert error.value.message == "[fill_mask] the model's vocabulary has no mask token [[MASK]]"
    assert error.value.status == 409


# ----------------------------------------------------------------------------------------- ner


def test_ner_entities_offsets_and_lower_case(minilm_dir):
    text = "Yesterday Waldo Unbelievably visited New York"

    def logits_for(window):
        logits = np.zeros((len(window.input_ids), 9), np.float32)
        logits[:, 0] = 5.0
        waldo, unbelievably = word_index(window, text, "Waldo"), word_index(window, text, "Unbelievably")
        new, york = word_index(window, text, "New"), word_index(window, text, "York")
        for tag, words in ((3, [waldo]), (4, [unbelievably]), (7, [new]), (8, [york])):
            logits[np.isin(window.word_ids, words), tag] = 10.0
        return (logits,)

    prepared, result, _ = run("ner", minilm_dir, text, {}, logits_for, labels=NER_LABELS)
    assert len(prepared.windows) == 1
    assert result["predicted_value"] == (
        "Yesterday [Waldo Unbelievably](PER&Waldo+Unbelievably) visited [New York](LOC&New+York)"
    )
    people, place = result["entities"]
    assert (people["entity"], people["class_name"], people["start_pos"], people["end_pos"]) == (
        "waldo unbelievably",
        "PER",
        10,
        28,
    )
    assert (place["entity"], place["start_pos"], place["end_pos"]) == ("new york", 37, 45)
    assert all(type(entity["class_probability"]) is float for entity in result["entities"])


def test_ner_truncates_instead_of_windowing(minilm_dir):
    text = " ".join(["word"] * 40)
    prepared, result, _ = run(
        "ner",
        minilm_dir,
        text,
        {},
        lambda w: (np.zeros((len(w.input_ids), 9), np.float32),),
        max_sequence_length=16,
    )
    assert len(prepared.windows) == 1 and len(prepared.windows[0].input_ids) == 16
    assert result["is_truncated"] is True and result["entities"] == [] and result["predicted_value"] == text


def test_ner_rejects_empty_text(minilm_dir):
    with pytest.raises(InvalidInput):
        run("ner", minilm_dir, "   ", {}, lambda w: (np.zeros((len(w.input_ids), 9), np.float32),))


# --------------------------------------------------------------------------- question_answering


def test_question_answering_over_windows(minilm_dir):
    context = "The old harbour of Rotterdam was rebuilt after the war, and its unbelievably large cranes " * 2
    answer_start = context.index("unbelievably", 60)

    def logits_for(window):
        n = len(window.input_ids)
        start = np.zeros(n, np.float32)
        end = np.zeros(n, np.float32)
        hits = np.flatnonzero((window.sequence_ids == 1) & (window.offsets[:, 0] == answer_start))
        if hits.size:
            # start on the word's first piece, end on its first piece too: the answer must still
            # reach the end of the word (ES gives every piece its whole word's offsets).
            start[hits[0]] = 12.0
            end[hits[0]] = 12.0
        return (start, end)

    prepared, result, _ = run(
        "question_answering",
        minilm_dir,
        context,
        {"question": "What was large?", "num_top_classes": 2},
        logits_for,
        max_sequence_length=24,
        truncate="none",
        span=4,
    )
    assert len(prepared.windows) > 2
    assert all(window.seq2_start == 6 for window in prepared.windows)  # [CLS] what was large ? [SEP]
    assert result["predicted_value"] == "unbelievably"
    assert (result["start_offset"], result["end_offset"]) == (
        answer_start,
        answer_start + len("unbelievably"),
    )
    assert list(result) == [
        "predicted_value",
        "start_offset",
        "end_offset",
        "top_classes",
        "prediction_probability",
    ]
    assert len(result["top_classes"]) == 2 and result["top_classes"][0]["answer"] == "unbelievably"
    assert result["top_classes"][0]["score"] == result["prediction_probability"]
    assert result["top_classes"][1]["score"] <= result["prediction_probability"]


def test_question_answering_too_long_without_span(minilm_dir):
    manifest = bert_manifest("question_answering", max_sequence_length=12, truncate="none")
    task = get_task("question_answering").bind(manifest, load_tokenizer(minilm_dir, manifest))
    cfg = task.parse_config({"question": "Who?"})
    with pytest.raises(InputTooLarge):
        task.prepare("a context that is much too long for twelve tokens", cfg)


# ------------------------------------------------------------------------- text_classification


def test_text_classification_mean_over_windows(minilm_dir):
    text = "a long review that goes on and on about the film and its many flaws " * 2
    rng = np.random.default_rng(7)
    rows = []

    def logits_for(window):
        rows.append(rng.normal(size=3).astype(np.float32))
        return (rows[-1],)

    prepared, result, _ = run(
        "text_classification",
        minilm_dir,
        text,
        {"num_top_classes": -1},
        logits_for,
        labels=["neg", "neu", "pos"],
        max_sequence_length=16,
        truncate="none",
        span=4,
    )
    assert len(prepared.windows) > 2
    expected = es_reference.text_classification([row.tolist() for row in rows], ["neg", "neu", "pos"], -1)
    assert result["predicted_value"] == expected["predicted_value"]
    assert [c["class_name"] for c in result["top_classes"]] == [
        c["class_name"] for c in expected["top_classes"]
    ]
    assert result["prediction_probability"] == pytest.approx(expected["prediction_probability"], abs=GOLDEN)


def test_text_classification_truncation_flag(minilm_dir):
    _, result, _ = run(
        "text_classification",
        minilm_dir,
        "word " * 30,
        {},
        lambda w: (np.array([0.0, 1.0], np.float32),),
        labels=["a", "b"],
        max_sequence_length=8,
    )
    assert result == {
        "predicted_value": "b",
        "prediction_probability": pytest.approx(np.e / (1 + np.e)),
        "is_truncated": True,
    }


# ------------------------------------------------------------------- text_similarity, zero-shot


def test_text_similarity_pairs_query_with_document_windows(minilm_dir):
    document = "the first part is dull but the second part of this document answers the question " * 2
    scores = iter([0.5, -2.0, 3.25, 1.0, 0.0, -1.0, 2.0, 0.25])
    seen = []

    def logits_for(window):
        assert window.seq2_start == 5  # [CLS] how many ? [SEP]
        seen.append(next(scores))
        return (np.array([seen[-1]], np.float32),)

    update = {"text": "how many?", "span_score_combination_function": "mean"}
    prepared, result, _ = run(
        "text_similarity",
        minilm_dir,
        document,
        update,
        logits_for,
        max_sequence_length=20,
        truncate="none",
        span=3,
    )
    assert len(prepared.windows) == len(seen) > 1
    assert result == {"predicted_value": pytest.approx(sum(seen) / len(seen))}


def test_zero_shot_one_row_per_label(minilm_dir):
    labels = ["sports", "politics", "cooking"]
    manifest = bert_manifest("zero_shot_classification", NLI_LABELS, max_sequence_length=12)
    manifest.task_options = {"hypothesis_template": "About {}."}
    tokenizer = load_tokenizer(minilm_dir, manifest)
    task = get_task("zero_shot_classification").bind(manifest, tokenizer)
    cfg = task.parse_config({"labels": labels})
    prepared = task.prepare("The match went to extra time and penalties", cfg)
    assert len(prepared.windows) == 3 and prepared.is_truncated
    for window, label in zip(prepared.windows, labels, strict=True):
        hypothesis = window.input_ids[window.seq2_start : -1]
        assert (
            hypothesis.tolist()
            == tokenizer.single(f"About {label}.", "first", -1).windows[0].input_ids[1:-1].tolist()
        )
    logits = [
        np.array([0.0, 2.0, 0.0], np.float32),
        np.array([1.0, 0.5, 0.0], np.float32),
        np.zeros(3, np.float32),
    ]
    result = task.finish(prepared, [(row,) for row in logits], cfg)
    assert result["predicted_value"] == "sports" and result["is_truncated"] is True
    assert [c["class_name"] for c in result["top_classes"]] == ["sports", "politics", "cooking"]


# ------------------------------------------------------------- embedding, expansion, pass_through


def test_text_embedding_and_pass_through(minilm_dir):
    _, result, _ = run(
        "text_embedding", minilm_dir, "hello world", {}, lambda w: (np.full(4, 0.5, np.float32),)
    )
    assert result == {"predicted_value": [0.5, 0.5, 0.5, 0.5]}
    prepared, result, _ = run(
        "pass_through",
        minilm_dir,
        "hello world " * 10,
        {"tokenization": {"truncate": "none", "span": 2}},
        lambda w: (np.ones((len(w.input_ids), 2), np.float32),),
        max_sequence_length=8,
    )
    assert len(prepared.windows) == 1  # ES reads R[0] only: later windows are not run
    assert result == {"predicted_value": [[1.0, 1.0]] * 8}


def test_text_expansion_tokens(splade_dir):
    def logits_for(window):
        weights = np.zeros(30522, np.float32)
        weights[1012] = 0.75  # "."
        weights[3000] = 2.5  # "paris"
        weights[5] = -1.0
        return (weights,)

    _, result, _ = run("text_expansion", splade_dir, "Paris.", {"results_field": "tokens"}, logits_for)
    assert result == {"tokens": {"paris": 2.5, "__": 0.75}}
    assert list(result["tokens"]) == ["paris", "__"]


# ------------------------------------------------------------------------------- bad input, all tasks

UPDATES = {
    "question_answering": {"question": "Who?"},
    "text_similarity": {"text": "query"},
    "zero_shot_classification": {"labels": ["a", "b"]},
}
LABELS = {"text_classification": ["a", "b"], "zero_shot_classification": NLI_LABELS}


@pytest.mark.parametrize("task_name", TASK_NAMES)
@pytest.mark.parametrize("text", [None, 42, "", "  \n"])
def test_every_task_rejects_non_text_and_empty_input(minilm_dir, task_name, text):
    manifest = bert_manifest(task_name, LABELS.get(task_name))
    task = get_task(task_name).bind(manifest, load_tokenizer(minilm_dir, manifest))
    cfg = task.parse_config(UPDATES.get(task_name, {}))
    with pytest.raises(InvalidInput) as error:
        task.prepare(text, cfg)
    if not isinstance(text, str):
        assert error.value.message == f"Input value [{text}] for field [text_field] must be a string"
