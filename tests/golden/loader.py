"""Load the golden task cases (``tests/golden/<task>.json``) and run them through a runner's ``finish``.

Each case fixes everything ``finish`` sees: the manifest fields that matter, the request's config
update, the prepared windows (ids, word ids, offsets), the graph outputs per window, and the result
Elasticsearch gives (from the Elastic documentation where it shows one, hand-computed otherwise;
``source`` says which). Cases bypass the tokenizer on purpose: they pin the post-processing alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.manifest import Manifest, TokenizationConfig
from engine.tasks import Prepared, TaskRunner, get_task
from engine.tasks.fill_mask import FillMaskPrepared
from engine.tokenization import Window
from tests.tolerances import GOLDEN

GOLDEN_DIR = Path(__file__).resolve().parent
DEFAULT_TOLERANCE = GOLDEN  # a case's own "tolerance" overrides it


class VocabularyTokenizer:
    """Just the decoding side of a tokenizer, over a case's small vocabulary list."""

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.vocabulary = list(vocabulary)

    def id_to_token(self, index: int) -> str:
        return self.vocabulary[index]

    def decode_token(self, index: int) -> str:
        return self.vocabulary[index]


def load_cases() -> list[dict[str, Any]]:
    cases = []
    for path in sorted(GOLDEN_DIR.glob("*.json")):
        for case in json.loads(path.read_text()):
            case["file"] = path.name
            cases.append(case)
    return cases


def build_manifest(case: dict[str, Any]) -> Manifest:
    fields = dict(case["manifest"])
    tokenization = TokenizationConfig(**fields.pop("tokenization"))
    outputs = fields.pop("outputs", [{"name": "logits", "axes": [], "meaning": ""}])
    return Manifest(
        task=case["task"],
        architecture="bert",
        graph="model.onnx",
        inputs=["input_ids", "attention_mask", "token_type_ids"],
        outputs=outputs,
        tokenizer="tokenizer.json",
        tokenization=tokenization,
        **fields,
    )


def build_window(spec: dict[str, Any]) -> Window:
    input_ids = np.asarray(spec["input_ids"], dtype=np.int64)
    word_ids = np.asarray(spec["word_ids"], dtype=np.int32)
    seq2_start = int(spec["seq2_start"])
    sequence_ids = np.where(word_ids < 0, -1, 0).astype(np.int8)
    token_type_ids = np.zeros_like(input_ids)
    if seq2_start >= 0:
        sequence_ids[seq2_start:] = np.where(word_ids[seq2_start:] < 0, -1, 1)
        token_type_ids[seq2_start:] = 1
    return Window(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        word_ids=word_ids,
        offsets=np.asarray(spec["offsets"], dtype=np.int32).reshape(-1, 2),
        sequence_ids=sequence_ids,
        seq2_start=seq2_start,
    )


def build_prepared(case: dict[str, Any]) -> Prepared:
    windows = [build_window(spec) for spec in case["windows"]]
    common = {"text": case["text"], "windows": windows, "is_truncated": case["is_truncated"]}
    if case["task"] == "fill_mask":
        mask_id = case["vocab"].index(case["mask_token"])
        position = int(np.flatnonzero(windows[0].input_ids == mask_id)[0])
        return FillMaskPrepared(**common, mask_token=case["mask_token"], mask_position=position)
    return Prepared(**common)


def build_runner(case: dict[str, Any]) -> TaskRunner[Any, Any, Any]:
    """The case's task bound to its manifest, with a tokenizer that only decodes the case's vocabulary
    (fill_mask and text_expansion name vocabulary entries; the other tasks never touch it)."""
    tokenizer: Any = VocabularyTokenizer(case.get("vocab", ()))
    return get_task(case["task"]).bind(build_manifest(case), tokenizer, package=f"golden:{case['name']}")


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """parse_config on the case's manifest and update, then finish on its fixed outputs."""
    runner = build_runner(case)
    cfg = runner.parse_config(case["config"])
    outputs = [tuple(np.asarray(output, dtype=np.float32) for output in row) for row in case["outputs"]]
    return runner.finish(build_prepared(case), outputs, cfg)


def assert_matches(actual: Any, expected: Any, tolerance: float, path: str = "result") -> None:
    """Equal structure, key order, strings and ints; floats within ``tolerance`` (relative or absolute)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_matches(actual[key], expected[key], tolerance, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: expected a list, got {actual!r}"
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_matches(got, want, tolerance, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert type(actual) is float, f"{path}: expected a Python float, got {type(actual).__name__}"
        assert math.isclose(actual, expected, rel_tol=tolerance, abs_tol=tolerance), (
            f"{path}: {actual} != {expected}"
        )
    else:
        assert type(actual) is type(expected) and actual == expected, f"{path}: {actual!r} != {expected!r}"
