"""int8 results do not depend on batch-mates or padding: each text alone and inside mixed batches.

A document indexed in a bulk batch and the same text sent alone as a query must get the same
vector, and a cached result must equal a fresh one. With activation scales calibrated once and
stored in the graph (exporters/quantize.py) a row's result is a function of that row alone; ORT's
dynamic quantisation, one scale per tensor per batch, fails this (checked below as a control, so
the test can tell the two apart).

Rows go through the engine's own batching contract (``engine.batch.collate`` pads on the right,
``split_outputs`` trims each row back), so padding is exercised exactly as in serving.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from engine.batch import collate, split_outputs
from engine.manifest import read_manifest
from exporters import export
from exporters.quantize import _quantize, quantize_with_guard
from exporters.registry import PAIR_TASKS, QUANTIZATION_METRICS
from tests.tiny_models import build_tiny_model, tiny_tasks

COSINE_TOLERANCE = 0.99999
SCORE_TOLERANCE = 1e-5
SHORT = ["You got it right.", "Hi", "weather tomorrow berlin", "A man is playing a flute.", "Terrible."]
# Batch-mates chosen to move a per-batch scale as far as possible: long, with rare word pieces,
# digits, symbols and repeated characters.
UNUSUAL = [
    " ".join(["Zzxq-9000 ΩΩΩ §§ 0x7FFFFFFF !!!!!! ÆØÅ ☃☃ aaaaaaaaaaaaaaaa https://x.y/z?q=%20"] * 12),
    "Rivers in the mountains froze early this winter, so the hikers changed their route twice. " * 6,
    "1234567890 " * 40,
]
PAIRS = ["The weather was cold.", "A map shows the way.", "Is it raining?", "Nothing to see.", "Yes."]


class _Row:
    def __init__(self, ids: list[int], types: list[int]) -> None:
        self.input_ids = np.asarray(ids, dtype=np.int64)
        self.token_type_ids = np.asarray(types, dtype=np.int64)


class _Runner:
    """The package's graph (or a replacement graph) fed the way the engine feeds it."""

    def __init__(self, package: Path, graph: Path | None = None) -> None:
        self.manifest = read_manifest(package)
        self.tokenizer = Tokenizer.from_file(str(package / self.manifest.tokenizer))
        self.tokenizer.enable_truncation(min(self.manifest.tokenization.max_sequence_length, 256))
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(graph or package / self.manifest.graph), options, providers=["CPUExecutionProvider"]
        )
        self.pad = int(self.manifest.special_tokens["pad"][1])
        self.axes = [(output["name"], output["axes"]) for output in self.manifest.outputs]

    def rows(self, texts: list[str], pairs: list[str] | None) -> list[tuple[np.ndarray, ...]]:
        encoded = self.tokenizer.encode_batch(list(zip(texts, pairs, strict=True)) if pairs else texts)
        batch = collate(
            [_Row(item.ids, item.type_ids) for item in encoded], self.manifest.inputs, self.pad
        )
        outputs = self.session.run(self.manifest.output_names, batch.inputs)
        return split_outputs(outputs, self.axes, batch.lengths)


def _mixed_batches(texts: list[str]) -> list[list[int]]:
    """Index lists into ``SHORT + UNUSUAL``: each short text with one or all long ones, in
    different positions, and all short texts together."""
    long = list(range(len(texts), len(texts) + len(UNUSUAL)))
    batches = [[index, *long] for index in range(len(texts))]
    batches += [[long[index % len(long)], index] for index in range(len(texts))]
    batches.append(list(range(len(texts))))
    return batches


def _max_gap(runner: _Runner, task: str) -> tuple[float, float]:
    """(worst cosine, worst score difference) between each short text alone and in mixed batches."""
    texts = SHORT + UNUSUAL
    pairs = (PAIRS + PAIRS[: len(UNUSUAL)]) if task in PAIR_TASKS else None
    alone = [runner.rows([text], [pairs[i]] if pairs else None)[0] for i, text in enumerate(texts)]
    worst_cosine, worst_score = 1.0, 0.0
    for batch in _mixed_batches(SHORT):
        together = runner.rows([texts[i] for i in batch], [pairs[i] for i in batch] if pairs else None)
        for index, got in zip(batch, together, strict=True):
            for want, have in zip(alone[index], got, strict=True):
                cosine, score = _compare(task, want, have)
                worst_cosine, worst_score = min(worst_cosine, cosine), max(worst_score, score)
    return worst_cosine, worst_score


def _compare(task: str, want: np.ndarray, have: np.ndarray) -> tuple[float, float]:
    assert want.shape == have.shape
    if task in ("text_embedding", "text_expansion", "pass_through"):
        a = want.reshape(-1, want.shape[-1]).astype(np.float64)
        b = have.reshape(-1, have.shape[-1]).astype(np.float64)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosines = np.where(norms > 0, (a * b).sum(1) / np.maximum(norms, 1e-30), 1.0)
        return float(cosines.min()), 0.0
    # labels and scores: the same argmax, and softmax probabilities equal to SCORE_TOLERANCE
    assert np.array_equal(want.argmax(-1), have.argmax(-1)), "a label changed with the batch"
    if want.shape[-1] == 1:  # one logit (cross-encoder): the score is the logit itself
        return 1.0, float(np.abs(want - have).max())
    return 1.0, float(np.abs(_softmax(want) - _softmax(have)).max())


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _assert_invariant(task: str, worst: tuple[float, float]) -> None:
    worst_cosine, worst_score = worst
    assert worst_cosine >= COSINE_TOLERANCE, f"{task}: cosine {worst_cosine:.7f} between alone and batched"
    assert worst_score <= SCORE_TOLERANCE, f"{task}: score moved by {worst_score:.2e} with the batch"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.mark.parametrize("task", tiny_tasks("bert"))
def test_every_task_is_batch_invariant_in_int8(task: str, tiny_root: Path, tmp_path: Path) -> None:
    """Every node int8 (thresholds 0, so the guard keeps nothing fp32): the strictest case."""
    source = build_tiny_model("bert", task, tiny_root)
    package = export(source, tmp_path / "fp32", task=task, quantize="none", progress=False)
    manifest = read_manifest(package)
    fp32 = package / manifest.graph
    feeds = [
        {name: np.asarray(values) for name, values in batch.inputs.items()}
        for batch in (
            collate(
                [_Row(item.ids, item.type_ids) for item in _Runner(package).tokenizer.encode_batch(group)],
                manifest.inputs,
                int(manifest.special_tokens["pad"][1]),
            )
            for group in (SHORT, UNUSUAL)
        )
    ]
    int8 = tmp_path / "int8.onnx"
    block = quantize_with_guard(
        fp32, int8, feeds, QUANTIZATION_METRICS[task], 0.0, progress=False, tail_threshold=0.0
    )
    assert block["kept_fp32"] == [] and block["activations"] == "static"
    _assert_invariant(task, _max_gap(_Runner(package, int8), task))


@pytest.fixture(scope="module")
def minilm_package(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported with the defaults users get (int8, guard on)."""
    return export(minilm_dir, tmp_path_factory.mktemp("minilm") / "package", progress=False)


def test_default_minilm_package_is_batch_invariant(minilm_package: Path) -> None:
    assert read_manifest(minilm_package).quantization["mode"] == "int8"
    _assert_invariant("text_embedding", _max_gap(_Runner(minilm_package), "text_embedding"))


def test_dynamic_activation_scales_are_not_batch_invariant(
    minilm_dir: Path, minilm_package: Path, tmp_path: Path
) -> None:
    """The control: ORT's dynamic int8 of the same fp32 model moves a short text's embedding."""
    fp32 = export(minilm_dir, tmp_path / "fp32", quantize="none", progress=False)
    dynamic = tmp_path / "dynamic.onnx"
    _quantize(fp32 / "model.onnx", dynamic, exclude=[])
    worst_cosine, _ = _max_gap(_Runner(minilm_package, dynamic), "text_embedding")
    assert worst_cosine < COSINE_TOLERANCE
