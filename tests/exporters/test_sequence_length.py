"""``max_sequence_length`` for tokenizers that set no ``model_max_length``: taken from the model config's
position table (less the architecture's offset), recorded with its origin, printed, and right: every
architecture exports, and its graph matches transformers on rows of exactly that many tokens, while the
PyTorch model itself fails one token later where the table is absolute."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engine.manifest import read_manifest
from exporters import export
from exporters.registry import ALL_TASKS, OUTPUTS, PAIR_TASKS
from tests.exporters.oracles import graph_outputs, torch_outputs
from tests.tiny_models import ARCHITECTURES, CORPUS, build_tiny_model, save_library_sentence_transformer
from tests.tolerances import GRAPH_VS_TORCH_REL

POSITIONS = 160  # usable positions of the tiny models here (question answering needs > 128)
FAST = {"quantize": "none", "fuse": False, "progress": False}
# One task per architecture, spread so that every architecture and every task meets an unset tokenizer
# (question_answering also shows eland's 386 lowered to the table).
TASK_OF = {
    "bert": "ner",
    "bart": "text_classification",
    "dpr_question": "text_embedding",
    "dpr_context": "text_embedding",
    "deberta-v2": "text_expansion",
    "distilbert": "question_answering",
    "electra": "text_similarity",
    "mobilebert": "pass_through",
    "mpnet": "text_embedding",
    "roberta": "fill_mask",
    "retribert": "text_embedding",
    "xlm-roberta": "zero_shot_classification",
}
# Architectures whose position ids start after padding_idx: one token more than the limit fails.
OFFSET_ARCHITECTURES = ("roberta", "xlm-roberta", "mpnet")
LONG_TEXT = " ".join(CORPUS.read_text().split()[:200])
TEXTS = [LONG_TEXT, "Short one.", LONG_TEXT[::-1]]
PAIRS = ["A map shows the way.", LONG_TEXT, "Trains leave every hour."]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models-unset-length")


def _unset(architecture: str, tiny_root: Path) -> Path:
    return build_tiny_model(
        architecture, TASK_OF[architecture], tiny_root, model_max_length=None, positions=POSITIONS
    )


def _feeds(model_dir: Path, task: str, length: int) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    assert tokenizer.model_max_length > 10**20  # the "unset" sentinel
    pairs = PAIRS if task in PAIR_TASKS else None
    encoded = tokenizer(TEXTS, pairs, padding=True, truncation=True, max_length=length, return_tensors="np")
    return {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}


def _torch(architecture: str, task: str, model_dir: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return torch_outputs(architecture, task, model_dir, feeds, TEXTS)


def _assert_matches(
    task: str, actual: list[np.ndarray], expected: list[np.ndarray], mask: np.ndarray
) -> None:
    for spec, got, want in zip(OUTPUTS[task], actual, expected, strict=True):
        assert got.shape == want.shape, spec.name
        if "sequence" in spec.axes:
            got, want = got[mask.astype(bool)], want[mask.astype(bool)]
        error = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-6)
        assert error <= GRAPH_VS_TORCH_REL, f"{spec.name}: relative error {error:.2e}"


def test_unset_lengths_cover_every_architecture_and_task() -> None:
    assert set(TASK_OF) == set(ARCHITECTURES)
    assert set(TASK_OF.values()) == ALL_TASKS


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_unset_tokenizer_length_comes_from_the_config(
    architecture: str, tiny_root: Path, tmp_path: Path
) -> None:
    task = TASK_OF[architecture]
    model_dir = _unset(architecture, tiny_root)
    package = export(model_dir, tmp_path / "pkg", task=task, **FAST)
    manifest = read_manifest(package)
    length = manifest.tokenization.max_sequence_length
    assert length == POSITIONS
    record = manifest.provenance["max_sequence_length"]
    assert record["value"] == length and record["origin"] == "config"
    if architecture in OFFSET_ARCHITECTURES:
        assert record["reason"].endswith(
            f"max_position_embeddings {POSITIONS + 2} minus {architecture}'s position offset 2"
        )
    feeds = _feeds(model_dir, task, length)
    assert feeds["input_ids"].shape[1] == length  # the long rows fill the whole length
    _assert_matches(
        task, graph_outputs(package, feeds), _torch(architecture, task, model_dir, feeds), feeds["attention_mask"]
    )


@pytest.mark.parametrize("architecture", OFFSET_ARCHITECTURES)
def test_one_token_more_fails_in_pytorch(architecture: str, tiny_root: Path) -> None:
    """The derived length is the longest the model takes: max_position_embeddings itself would not be."""
    import transformers as tf

    model_dir = _unset(architecture, tiny_root)
    model = tf.AutoModel.from_pretrained(str(model_dir)).eval()
    ids = torch.full((1, POSITIONS + 1), 5, dtype=torch.int64)
    with torch.no_grad():
        model(input_ids=ids[:, :POSITIONS], attention_mask=torch.ones_like(ids[:, :POSITIONS]))
        with pytest.raises(IndexError):
            model(input_ids=ids, attention_mask=torch.ones_like(ids))


def test_mpnet_offset_ignores_the_pad_id(tiny_root: Path, tmp_path: Path) -> None:
    """MPNet numbers positions from padding_idx 1 whatever pad_token_id says; a config pad id of 30000
    once gave a negative limit and a refusal."""
    source = tmp_path / "mpnet-pad"
    shutil.copytree(build_tiny_model("mpnet", "fill_mask", tiny_root, positions=POSITIONS), source)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "pad_token_id": 30000}))
    manifest = read_manifest(export(source, tmp_path / "pkg", **FAST))
    assert manifest.tokenization.max_sequence_length == POSITIONS
    assert manifest.provenance["max_sequence_length"]["origin"] == "config"  # 512 from the tokenizer, lowered


def test_flag_overrides_and_export_prints_the_origin(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = _unset("roberta", tiny_root)
    options: dict[str, Any] = {**FAST, "progress": True}
    manifest = read_manifest(export(model_dir, tmp_path / "config", task="fill_mask", **options))
    err = capsys.readouterr().err
    assert (
        f"[export] max_sequence_length {POSITIONS}: the tokenizer sets no model_max_length; "
        f"max_position_embeddings {POSITIONS + 2} minus roberta's position offset 2"
    ) in err
    assert manifest.provenance["max_sequence_length"]["origin"] == "config"
    flagged = read_manifest(
        export(model_dir, tmp_path / "flag", task="fill_mask", max_sequence_length=16, **FAST)
    )
    assert flagged.tokenization.max_sequence_length == 16
    assert flagged.provenance["max_sequence_length"] == {
        "value": 16,
        "origin": "flag",
        "reason": "--max-sequence-length",
    }
    with_length = read_manifest(
        export(
            build_tiny_model("roberta", "fill_mask", tiny_root), tmp_path / "tok", task="fill_mask", **FAST
        )
    )
    assert with_length.provenance["max_sequence_length"]["origin"] == "tokenizer"
    assert with_length.tokenization.max_sequence_length == 512


def test_sentence_transformers_cap_one_past_the_roberta_table(tiny_root: Path, tmp_path: Path) -> None:
    """sentence-transformers caps an unset tokenizer at max_position_embeddings and saves that (514 for
    RoBERTa's 512 positions): the exporter lowers it to the table and says so."""
    hf_dir = build_tiny_model(
        "roberta", "pass_through", tiny_root, model_max_length=None, positions=POSITIONS
    )
    source = tmp_path / "st-roberta"
    save_library_sentence_transformer(hf_dir, source, ("mean",), None, True, None, None, True)
    saved = json.loads((source / "tokenizer_config.json").read_text())["model_max_length"]
    assert saved == POSITIONS + 2
    manifest = read_manifest(export(source, tmp_path / "pkg", **FAST))
    assert manifest.tokenization.max_sequence_length == POSITIONS
    record = manifest.provenance["max_sequence_length"]
    assert record["origin"] == "config"
    assert record["reason"] == (
        f"the tokenizer's model_max_length {POSITIONS + 2}, lowered to the model's max_position_embeddings "
        f"{POSITIONS + 2} minus roberta's position offset 2"
    )
