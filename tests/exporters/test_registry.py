"""The registry's rules as pure functions: eland's task detection (ELASTIC_REFERENCE.md §8.2), label
checks per task, the similarity suggestion, and the tokenization rules of §8.4."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ExportError
from exporters import registry
from exporters.tokenizer import max_sequence_length, prepare_tokenizer
from tests.tiny_models import build_tiny_model

NLI = {0: "Entailment", 1: "neutral", 2: "CONTRADICTION"}


@pytest.mark.parametrize(
    ("architectures", "id2label", "name", "st", "task"),
    [
        (["BertForMaskedLM"], None, "bert-base-uncased", False, "fill_mask"),
        (["BertForMaskedLM"], None, "sentence-transformers/foo", False, "text_embedding"),
        (["MPNetForMaskedLM"], None, "/models/local", True, "text_embedding"),
        (["BertModel"], None, "/models/minilm", True, "text_embedding"),
        (None, None, "sentence-transformers/bar", False, "text_embedding"),
        (["BertForTokenClassification"], {0: "O", 1: "B-PER"}, "x", False, "ner"),
        (["BertForQuestionAnswering"], None, "x", False, "question_answering"),
        (["DPRQuestionEncoder"], None, "x", False, "text_embedding"),
        (["BertForSequenceClassification"], {0: "LABEL_0"}, "x", False, "text_similarity"),
        (["RobertaForSequenceClassification"], NLI, "x", False, "zero_shot_classification"),
        (["BertForSequenceClassification"], {0: "NEG", 1: "POS"}, "x", False, "text_classification"),
        (["BertForSequenceClassification"], {0: "entailment", 1: "other"}, "x", False, "text_classification"),
    ],
)
def test_detect_task_follows_eland(
    architectures: list[str] | None, id2label: dict[int, str] | None, name: str, st: bool, task: str
) -> None:
    assert registry.detect_task(architectures, id2label, name, st) == task


def test_detect_task_refuses_what_eland_refuses() -> None:
    with pytest.raises(ExportError, match=r"cannot tell which task \[x\] is for .* pass --task"):
        registry.detect_task(["BertModel"], None, "x", False)
    with pytest.raises(ExportError, match="cannot tell which task"):
        registry.detect_task(None, None, "x", False)


def test_labels_per_task() -> None:
    labels = {1: "B-PER", 0: "O", 2: "I-PER"}
    assert registry.labels_for_task("ner", labels, "m") == ["O", "B_PER", "I_PER"]
    assert registry.labels_for_task("text_classification", {1: "b", 0: "a"}, "m") == ["a", "b"]
    assert registry.labels_for_task("zero_shot_classification", NLI, "m") == [
        "Entailment",
        "neutral",
        "CONTRADICTION",
    ]
    assert registry.labels_for_task("text_similarity", {0: "LABEL_0"}, "m") is None
    assert registry.labels_for_task("fill_mask", {0: "LABEL_0", 1: "LABEL_1"}, "m") is None
    with pytest.raises(ExportError, match="needs IOB labels"):
        registry.labels_for_task("ner", {0: "PER", 1: "LOC"}, "m")
    with pytest.raises(ExportError, match="needs IOB labels"):
        registry.labels_for_task("ner", {0: "B-PER", 1: "I-PER"}, "m")  # no O
    with pytest.raises(ExportError, match=r"requires at least 2 \[classification_labels\]"):
        registry.labels_for_task("text_classification", {0: "only"}, "m")
    with pytest.raises(ExportError, match="needs an NLI model"):
        registry.labels_for_task("zero_shot_classification", {0: "entailment", 1: "contradiction"}, "m")


def test_similarity_suggestions() -> None:
    suggest = registry.suggest_similarity
    assert suggest("sentence-transformers/all-mpnet-base-v2", "mpnet", False, None) == "cosine"
    assert (
        suggest("sentence-transformers/msmarco-distilbert-base-dot-prod-v3", "distilbert", False, None)
        == "dot_product"
    )
    assert suggest("/local/model", "bert", True, "dot") == "cosine"  # normalised output: cosine == dot
    assert suggest("/local/model", "bert", False, "dot") == "dot_product"
    assert suggest("/local/model", "bert", False, "euclidean") == "l2_norm"
    assert suggest("facebook/dpr-question_encoder-single-nq-base", "dpr", False, None) == "dot_product"
    assert suggest("/local/model", "roberta", False, None) == "cosine"


def test_supported_pairs_say_what_is_missing() -> None:
    pairs = set(registry.supported_pairs())
    assert ("bart", "ner") not in pairs and ("bart", "fill_mask") in pairs
    assert {task for arch, task in pairs if arch in ("dpr", "retribert")} == {"text_embedding"}
    assert len(pairs) == 9 * 8 + 8 + 1 + 1
    with pytest.raises(
        ExportError, match=r"\[retribert\] cannot serve \[ner\]: RetriBERT is a pair of retrieval towers"
    ):
        registry.check_task(registry.SUPPORTED["retribert"], "ner")


def test_deberta_v3_graph_has_no_token_types() -> None:
    spec = registry.SUPPORTED["deberta-v2"]
    assert registry.graph_inputs(spec, 0) == ("input_ids", "attention_mask")
    assert registry.graph_inputs(spec, 2) == ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


def test_tokenization_rules_per_task(tiny_root: Path) -> None:
    bert = build_tiny_model("bert", "question_answering", tiny_root)
    qa = prepare_tokenizer(bert, "bert", "question_answering", None, False).tokenization
    assert (qa.max_sequence_length, qa.span, qa.truncate, qa.do_lower_case) == (386, 128, "none", True)
    similarity = prepare_tokenizer(bert, "bert", "text_similarity", None, False).tokenization
    assert (similarity.max_sequence_length, similarity.truncate, similarity.span) == (512, "second", -1)
    assert prepare_tokenizer(bert, "bert", "fill_mask", 128, False).tokenization.max_sequence_length == 128
    with pytest.raises(ExportError, match=r"must be greater than 128; got \[100\]"):
        prepare_tokenizer(bert, "bert", "question_answering", 100, False)
    roberta = prepare_tokenizer(
        build_tiny_model("roberta", "fill_mask", tiny_root), "roberta", "fill_mask", None, False
    )
    assert roberta.tokenization.add_prefix_space is False and roberta.tokenization.do_lower_case is False
    assert roberta.special_tokens == {
        "cls": ["<s>", 0],
        "sep": ["</s>", 2],
        "pad": ["<pad>", 1],
        "unk": ["<unk>", 3],
        "mask": ["<mask>", 4],
    }


class _Tokenizer:
    def __init__(self, model_max_length: object) -> None:
        self.model_max_length = model_max_length


UNSET = _Tokenizer(int(1e30))  # transformers' "not set" sentinel
TABLE_512 = registry.PositionTable(512, model_type="bert")


def test_max_sequence_length_from_the_tokenizer_or_the_flag() -> None:
    length = max_sequence_length(_Tokenizer(256), "roberta", None, "fill_mask", TABLE_512)
    assert (length.value, length.origin) == (256, "tokenizer")
    length = max_sequence_length(UNSET, "roberta", 128, "fill_mask", TABLE_512)
    assert (length.value, length.origin) == (128, "flag")
    with pytest.raises(ExportError, match=r"must be greater than 0; got \[0\]"):
        max_sequence_length(UNSET, "bert", 0, "fill_mask", TABLE_512)
    with pytest.raises(
        ExportError,
        match=r"\[max_sequence_length\] \[600\] exceeds the model's 512 positions \(max_position_embeddings 514 "
        r"minus roberta's position offset 2\)",
    ):
        max_sequence_length(
            _Tokenizer(1024), "roberta", 600, "fill_mask", registry.PositionTable(512, 2, True, "roberta")
        )
    qa = max_sequence_length(_Tokenizer(512), "bert", None, "question_answering", TABLE_512)
    assert (qa.value, qa.origin) == (386, "question_answering")


@pytest.mark.parametrize("unset", [int(1e30), None, 0, 1e30, True])
def test_max_sequence_length_from_the_config_when_the_tokenizer_says_nothing(unset: object) -> None:
    table = registry.position_table(
        {"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}
    )
    length = max_sequence_length(_Tokenizer(unset), "roberta", None, "fill_mask", table)
    assert (length.value, length.origin) == (512, "config")
    assert length.reason == (
        "the tokenizer sets no model_max_length; max_position_embeddings 514 minus roberta's position offset 2"
    )
    assert length.to_json() == {"value": 512, "origin": "config", "reason": length.reason}


def test_max_sequence_length_caps_and_lowers() -> None:
    long_table = registry.PositionTable(32768, model_type="bert")
    capped = max_sequence_length(UNSET, "bert", None, "fill_mask", long_table)
    assert (capped.value, capped.origin) == (8192, "config")
    assert capped.reason.endswith("capped at 8192 as eland caps")
    # A tokenizer that promises more than the table holds is lowered to the table.
    lowered = max_sequence_length(_Tokenizer(1024), "roberta", None, "fill_mask", TABLE_512)
    assert (lowered.value, lowered.origin) == (512, "config")
    assert "model_max_length 1024, lowered to the model's max_position_embeddings 512" in lowered.reason
    # Relative positions (DeBERTa-v3) bound nothing: the tokenizer's longer length stands, and without
    # one the length it was trained at is used.
    relative = registry.PositionTable(512, 0, False, "deberta-v2")
    assert max_sequence_length(_Tokenizer(1024), "deberta_v2", None, "fill_mask", relative).value == 1024
    assert max_sequence_length(UNSET, "deberta_v2", None, "fill_mask", relative).value == 512
    assert max_sequence_length(UNSET, "deberta_v2", 2048, "fill_mask", relative).value == 2048


def test_max_sequence_length_without_tokenizer_or_config() -> None:
    unknown = registry.PositionTable(None)
    bert = max_sequence_length(UNSET, "bert", None, "fill_mask", unknown)
    assert (bert.value, bert.origin) == (512, "bert_default")
    with pytest.raises(ExportError, match=r"config no max_position_embeddings\); pass --max-sequence-length"):
        max_sequence_length(UNSET, "roberta", None, "fill_mask", unknown)


@pytest.mark.parametrize(
    ("config", "limit", "positions"),
    [
        ({"model_type": "bert", "max_position_embeddings": 512}, 512, 512),
        ({"model_type": "distilbert", "max_position_embeddings": 512}, 512, 512),
        ({"model_type": "electra", "max_position_embeddings": 512}, 512, 512),
        ({"model_type": "mobilebert", "max_position_embeddings": 512}, 512, 512),
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512, 512),
        ({"model_type": "xlm-roberta", "max_position_embeddings": 514, "pad_token_id": 1}, 512, 512),
        # RoBERTa's padding_idx is the pad id; MPNet's is always 1, whatever the pad id says.
        ({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 3}, 510, 510),
        ({"model_type": "mpnet", "max_position_embeddings": 514, "pad_token_id": 1}, 512, 512),
        ({"model_type": "mpnet", "max_position_embeddings": 514, "pad_token_id": 30526}, 512, 512),
        # BART's table holds max_position_embeddings + 2 rows: its offset costs no position.
        ({"model_type": "bart", "max_position_embeddings": 1024, "pad_token_id": 1}, 1024, 1024),
        (
            {"model_type": "deberta-v2", "max_position_embeddings": 512, "position_biased_input": True},
            512,
            512,
        ),
        (
            {"model_type": "deberta-v2", "max_position_embeddings": 512, "position_biased_input": False},
            None,
            512,
        ),
        ({"model_type": "bert"}, None, None),
    ],
)
def test_position_tables(config: dict[str, object], limit: int | None, positions: int | None) -> None:
    table = registry.position_table(config)
    assert (table.limit, table.positions) == (limit, positions)
