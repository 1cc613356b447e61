"""The task layer without a tokenizer or a model: golden results, config parsing, output validation."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.errors import InvalidInput, ModelError, UnknownTask
from engine.manifest import TASKS, Manifest, TokenizationConfig
from engine.tasks import TASK_NAMES, Prepared, TaskRunner, get_task
from tests.golden.loader import DEFAULT_TOLERANCE, assert_matches, build_window, load_cases, run_case

CASES = load_cases()
NLI_LABELS = ["contradiction", "entailment", "neutral"]


def make_manifest(
    task: str, labels: list[str] | None = None, task_options: dict | None = None, **tokenization: Any
):
    return Manifest(
        task=task,
        architecture="bert",
        graph="model.onnx",
        inputs=["input_ids", "attention_mask", "token_type_ids"],
        outputs=[{"name": "logits", "axes": ["batch", "labels"], "meaning": "logits"}],
        tokenizer="tokenizer.json",
        tokenization=TokenizationConfig(**tokenization),
        labels=labels,
        task_options=task_options or {},
    )


# A config update that parse_config accepts for each task (the required keys).
REQUIRED = {
    "question_answering": {"question": "Who?"},
    "text_similarity": {"text": "query"},
    "zero_shot_classification": {"labels": ["a", "b"]},
}
LABELS = {
    "text_classification": ["NEGATIVE", "POSITIVE"],
    "zero_shot_classification": NLI_LABELS,
    "ner": None,
}


def manifest_for(task: str, **tokenization: Any) -> Manifest:
    return make_manifest(task, labels=LABELS.get(task), **tokenization)


def bound(manifest: Manifest) -> TaskRunner[Any, Any, Any]:
    """The manifest's task bound without a tokenizer: these tests never tokenize or decode."""
    return get_task(manifest.task).bind(manifest, None, package="test-package")  # type: ignore[arg-type]


def parse(task: str, update: dict | None = None, **tokenization: Any):
    config = {**REQUIRED.get(task, {}), **(update or {})}
    return bound(manifest_for(task, **tokenization)).parse_config(config)


def window(n: int = 3, seq2_start: int = -1):
    return build_window(
        {
            "input_ids": list(range(n)),
            "word_ids": list(range(n)),
            "offsets": [[0, 0]] * n,
            "seq2_start": seq2_start,
        }
    )


# ------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("case", CASES, ids=[f"{c['task']}:{c['name']}" for c in CASES])
def test_golden_case(case):
    assert_matches(run_case(case), case["expected"], case.get("tolerance", DEFAULT_TOLERANCE))


def test_golden_cases_cover_every_task():
    assert {case["task"] for case in CASES} == set(TASK_NAMES)


# ----------------------------------------------------------------------------------- registry


def test_registry_has_the_elasticsearch_tasks():
    assert set(TASK_NAMES) == set(TASKS)
    for name in TASK_NAMES:
        assert get_task(name).name == name


def test_unknown_task_lists_valid_names():
    with pytest.raises(UnknownTask) as error:
        get_task("sentiment")
    assert "[sentiment]" in error.value.message
    for name in TASK_NAMES:
        assert name in error.value.message
    assert error.value.status == 400


# ------------------------------------------------------------------------- config: shared rules


@pytest.mark.parametrize("task", TASK_NAMES)
def test_defaults_and_results_field(task):
    cfg = parse(task)
    assert cfg.results_field == "predicted_value"
    assert (cfg.truncate, cfg.span) == ("first", -1)
    assert parse(task, {"results_field": "out"}).results_field == "out"
    with pytest.raises(InvalidInput, match="results_field"):
        parse(task, {"results_field": ""})


@pytest.mark.parametrize("task", TASK_NAMES)
def test_unknown_update_key_is_named(task):
    with pytest.raises(InvalidInput, match=r"unknown field \[hypothesis_template\]"):
        parse(task, {"hypothesis_template": "x {}"})


@pytest.mark.parametrize("task", TASK_NAMES)
def test_nested_update_form(task):
    cfg = bound(manifest_for(task)).parse_config(
        {task: {**REQUIRED.get(task, {}), "results_field": "nested"}}
    )
    assert cfg.results_field == "nested"


def test_update_of_another_task_type_is_refused():
    with pytest.raises(InvalidInput) as error:
        bound(manifest_for("ner")).parse_config({"fill_mask": {}})
    assert error.value.message == (
        "Inference config of type [ner] can not be updated with a inference request of type [fill_mask]"
    )


def test_config_is_frozen_and_cache_key_tracks_values():
    first = parse("text_classification", {"num_top_classes": 1})
    same = parse("text_classification", {"num_top_classes": 1})
    other = parse("text_classification", {"num_top_classes": 2})
    assert first.cache_key() == same.cache_key() and hash(first.cache_key()) == hash(same.cache_key())
    assert first.cache_key() != other.cache_key()
    assert parse("fill_mask").cache_key() != parse("ner").cache_key()
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.num_top_classes = 3


@pytest.mark.parametrize(
    "update",
    [
        {"tokenization": {"bert": {"truncate": "none", "span": 16}}},
        {"tokenization": {"truncate": "none", "span": 16}},
    ],
)
def test_tokenization_update_nested_and_flat(update):
    cfg = parse("text_classification", update)
    assert (cfg.truncate, cfg.span) == ("none", 16)


def test_truncate_update_drops_a_stored_span():
    cfg = parse("question_answering", {"tokenization": {"truncate": "second"}}, truncate="none", span=128)
    assert (cfg.truncate, cfg.span) == ("second", -1)
    kept = parse("question_answering", {}, truncate="none", span=128)
    assert (kept.truncate, kept.span) == ("none", 128)


@pytest.mark.parametrize(
    ("tokenization", "message"),
    [
        ({"roberta": {"truncate": "first"}}, "can not be updated with a request of type [roberta]"),
        ({"bert": {"max_sequence_length": 10}}, "unknown field [max_sequence_length]"),
        ({"truncate": "middle"}, "[truncate] must be one of"),
        ({"truncate": "first", "span": 3}, "[span] must not be provided when [truncate] is [first]"),
        ({"truncate": "none", "span": -2}, "[span] must be non-negative"),
        (
            {"truncate": "none", "span": 600},
            "[span] provided [600] must not be greater than [max_sequence_length]",
        ),
        ({"truncate": "none", "span": "4"}, "[span] must be an integer"),
        ("first", "[tokenization] must be an object"),
    ],
)
def test_bad_tokenization_updates(tokenization, message):
    with pytest.raises(InvalidInput) as error:
        parse("text_classification", {"tokenization": tokenization})
    assert message in error.value.message


@pytest.mark.parametrize("task", ["fill_mask", "ner", "zero_shot_classification"])
def test_windowing_refused_with_configured_span(task):
    with pytest.raises(InvalidInput) as error:
        parse(task, {"tokenization": {"truncate": "none", "span": 8}})
    assert (
        error.value.message == f"[{task}] does not support windowing long text sequences; configured span [8]"
    )


def test_text_embedding_refuses_windowing():
    with pytest.raises(InvalidInput) as error:
        parse("text_embedding", {"tokenization": {"truncate": "none", "span": 8}})
    assert error.value.message == "[text_embedding] does not support windowing long text sequences"


@pytest.mark.parametrize("task", ["question_answering", "text_classification", "text_similarity"])
def test_windowing_allowed(task):
    assert parse(task, {"tokenization": {"truncate": "none", "span": 8}}).span == 8


# ---------------------------------------------------------------------------- config: per task


def test_fill_mask_num_top_classes():
    assert parse("fill_mask").num_top_classes == 5
    assert parse("fill_mask", {"num_top_classes": -1}).num_top_classes == -1
    for bad in (-2, "3", True):
        with pytest.raises(InvalidInput, match="num_top_classes"):
            parse("fill_mask", {"num_top_classes": bad})


def test_question_answering_config():
    cfg = parse("question_answering")
    assert (cfg.question, cfg.max_answer_length, cfg.num_top_classes) == ("Who?", 15, 0)
    with pytest.raises(InvalidInput) as error:
        bound(manifest_for("question_answering")).parse_config({})
    assert error.value.message == (
        "please provide configuration update for question_answering task including the desired [question]"
    )
    with pytest.raises(InvalidInput, match="max_answer_length"):
        parse("question_answering", {"max_answer_length": 0})
    with pytest.raises(InvalidInput, match="num_top_classes"):
        parse("question_answering", {"num_top_classes": -1})
    with pytest.raises(InvalidInput, match="question"):
        parse("question_answering", {"question": "  "})


def test_question_answering_finds_start_and_end_outputs_by_name():
    manifest = manifest_for("question_answering")
    manifest.outputs = [{"name": "end_logits"}, {"name": "start_logits"}]
    cfg = bound(manifest).parse_config({"question": "q"})
    assert (cfg.start_output, cfg.end_output) == (1, 0)


def test_text_classification_config():
    cfg = parse("text_classification")
    assert cfg.num_top_classes == 0 and cfg.labels == ("NEGATIVE", "POSITIVE")
    assert parse("text_classification", {"classification_labels": ["x", "y"]}).labels == ("x", "y")
    with pytest.raises(InvalidInput) as error:
        parse("text_classification", {"classification_labels": ["x"]})
    assert error.value.message == "[text_classification] requires at least 2 [classification_labels]"
    with pytest.raises(ModelError, match="requires at least 2"):
        bound(make_manifest("text_classification")).parse_config({})


def test_text_similarity_config():
    cfg = parse("text_similarity")
    assert (cfg.text, cfg.span_score_combination_function) == ("query", "max")
    assert (
        parse("text_similarity", {"span_score_combination_function": "MEAN"}).span_score_combination_function
        == "mean"
    )
    with pytest.raises(InvalidInput, match="span_score_combination_function"):
        parse("text_similarity", {"span_score_combination_function": "sum"})
    with pytest.raises(InvalidInput) as error:
        bound(manifest_for("text_similarity")).parse_config({})
    assert error.value.message == (
        "please provide configuration update for text_similarity task including the desired [text]"
    )


def test_zero_shot_labels_template_and_multi_label():
    with pytest.raises(InvalidInput) as error:
        bound(make_manifest("zero_shot_classification", labels=NLI_LABELS)).parse_config({})
    assert error.value.message == (
        "stored configuration has no [labels] defined, supplied inference_config update must supply [labels]"
    )
    with pytest.raises(InvalidInput, match=r"\[labels\] must not be empty"):
        parse("zero_shot_classification", {"labels": []})
    stored = make_manifest(
        "zero_shot_classification",
        labels=["Contradiction", "Entailment", "Neutral"],
        task_options={"labels": ["x", "y"], "hypothesis_template": "It is about {}.", "multi_label": True},
    )
    cfg = bound(stored).parse_config({})
    assert cfg.labels == ("x", "y") and cfg.hypothesis_template == "It is about {}." and cfg.multi_label
    assert (cfg.entailment_index, cfg.contradiction_index) == (1, 0)
    assert bound(stored).parse_config({"labels": ["z"], "multi_label": False}).labels == ("z",)
    assert parse("zero_shot_classification").hypothesis_template == "This example is {}."


@pytest.mark.parametrize("labels", [None, ["entailment", "neutral"], ["entailment", "neutral", "other"]])
def test_zero_shot_needs_nli_labels(labels):
    with pytest.raises(ModelError, match="must contain exactly the three values"):
        bound(make_manifest("zero_shot_classification", labels=labels)).parse_config({"labels": ["a"]})


def test_ner_labels():
    cfg = parse("ner")
    assert cfg.labels[:3] == ("O", "B_MISC", "I_MISC") and cfg.entity_names == ("MISC", "PER", "ORG", "LOC")
    custom = bound(make_manifest("ner", labels=["O", "B-DRUG", "I-DRUG", "I_dose"])).parse_config({})
    assert custom.entity_names == ("DRUG", "DOSE") and custom.tag_kinds == (0, 1, 2, 2)
    for bad in (["O", "X-PER"], ["B-PER", "I-PER"], ["O", "B-PER", "B-PER"]):
        with pytest.raises(ModelError, match="classification_labels"):
            bound(make_manifest("ner", labels=bad)).parse_config({})


# ------------------------------------------------------------------------- output validation


def finish(task: str, outputs: list[tuple[np.ndarray, ...]], windows: int = 1, update: dict | None = None):
    prepared = Prepared(text="some text", windows=[window() for _ in range(windows)], is_truncated=False)
    return bound(manifest_for(task)).finish(prepared, outputs, parse(task, update))


def test_text_similarity_wants_one_logit():
    with pytest.raises(ModelError) as error:
        finish("text_similarity", [(np.zeros(2, np.float32),)])
    assert error.value.message == "Expected exactly [1] value in text_similarity result; got [2]"
    assert error.value.status == 409


def test_text_classification_wants_one_value_per_label():
    with pytest.raises(ModelError) as error:
        finish("text_classification", [(np.zeros(3, np.float32),)])
    assert error.value.message == "Expected exactly [2] values in text classification result; got [3]"


def test_zero_shot_wants_one_row_per_label_of_three():
    with pytest.raises(ModelError) as error:
        finish("zero_shot_classification", [(np.zeros(3, np.float32),)])
    assert error.value.message == "Expected exactly [2] values in zero shot classification result; got [1]"
    with pytest.raises(ModelError) as error:
        finish("zero_shot_classification", [(np.zeros(2, np.float32),)] * 2, windows=2)
    assert (
        error.value.message == "Expected exactly [3] values in inner zero shot classification result; got [2]"
    )


@pytest.mark.parametrize(
    ("task", "output"),
    [
        ("ner", np.zeros((3, 4), np.float32)),
        ("ner", np.zeros((2, 9), np.float32)),
        ("text_embedding", np.zeros((3, 4), np.float32)),
        ("text_expansion", np.zeros((3, 4), np.float32)),
        ("pass_through", np.zeros((2, 3, 4), np.float32)),
    ],
)
def test_wrong_output_shapes(task, output):
    with pytest.raises(ModelError):
        finish(task, [(output,)])


def test_row_count_must_match_windows():
    with pytest.raises(ModelError, match="rows"):
        finish("text_classification", [(np.zeros(2, np.float32),)], windows=2)


def test_question_answering_needs_both_logit_outputs():
    with pytest.raises(ModelError, match="start and end"):
        finish("question_answering", [(np.zeros(3, np.float32),)])


def test_question_answering_with_no_scoring_span_answers_empty():
    # Context logits 2000 below CLS: every start probability underflows to exactly 0.
    win = build_window(
        {
            "input_ids": [0, 1, 2, 3, 4],
            "word_ids": [-1, 0, -1, 1, -1],
            "offsets": [[0, 0], [0, 1], [0, 0], [0, 4], [0, 0]],
            "seq2_start": 3,
        }
    )
    logits = np.array([0.0, 0.0, 0.0, -2000.0, 0.0], np.float32)
    prepared = Prepared(text="word", windows=[win], is_truncated=False)
    runner = bound(manifest_for("question_answering"))
    result = runner.finish(prepared, [(logits, logits)], parse("question_answering"))
    assert result == {
        "predicted_value": "",
        "start_offset": 0,
        "end_offset": 0,
        "prediction_probability": 0.0,
    }


def test_fill_mask_refuses_unusable_logits():
    from engine.tasks.fill_mask import FillMaskPrepared

    prepared = FillMaskPrepared(
        text="a [MASK]",
        windows=[window()],
        is_truncated=False,
        mask_token="[MASK]",
        mask_position=2,
    )
    with pytest.raises(ModelError, match="MLM logits"):
        bound(manifest_for("fill_mask")).finish(
            prepared, [(np.zeros((2, 5), np.float32),)], parse("fill_mask")
        )


def test_embedding_size_checked():
    manifest = manifest_for("text_embedding")
    manifest.embedding_size = 4
    runner = bound(manifest)
    cfg = runner.parse_config({})
    prepared = Prepared(text="x", windows=[window()], is_truncated=False)
    with pytest.raises(ModelError, match=r"\[4\]"):
        runner.finish(prepared, [(np.zeros(3, np.float32),)], cfg)


def test_kernel_shape_error_becomes_a_model_error_naming_the_package():
    # A config whose tag table no longer matches the labels gets past read() (the logits fit the
    # labels) and reaches iob_decode, which refuses it: the user sees a ModelError (409), not a 500.
    runner = bound(manifest_for("ner"))
    cfg = dataclasses.replace(runner.parse_config({}), tag_kinds=(0,))
    prepared = Prepared(text="abc", windows=[window()], is_truncated=False)
    with pytest.raises(ModelError) as error:
        runner.finish(prepared, [(np.zeros((3, 9), np.float32),)], cfg)
    assert "[ner]" in error.value.message and "[test-package]" in error.value.message
    assert error.value.status == 409


def test_a_runner_names_its_package_by_source_when_not_told():
    manifest = manifest_for("ner")
    manifest.source = {"id": "org/model"}
    assert get_task("ner").bind(manifest, None).package == "org/model"  # type: ignore[arg-type]


def test_task_layer_does_not_import_torch():
    code = "import sys, engine.tasks; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
