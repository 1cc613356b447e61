"""question_answering: extractive answer spans over windows of the context (ELASTIC_REFERENCE.md §2.3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _kernels
from ..errors import InvalidInput, ModelError
from ..manifest import Manifest
from .common import (
    Prepared,
    TaskConfig,
    check_keys,
    check_row_count,
    parse_int,
    parse_results_field,
    parse_tokenization,
    require_text,
    unwrap_update,
    with_truncation,
)

if TYPE_CHECKING:
    from ..tokenization import Tokenizer

NAME = "question_answering"
DEFAULT_MAX_ANSWER_LENGTH = 15
DEFAULT_NUM_TOP_CLASSES = 0
QUESTION_REQUIRED = (
    "please provide configuration update for question_answering task including the desired [question]"
)
# Padding value for the shorter windows when the per-window logits are stacked: the same value
# the kernel masks non-context positions with, so padding can never win.
MASKED_LOGIT = -10000.0


@dataclasses.dataclass(frozen=True)
class QuestionAnsweringConfig(TaskConfig):
    """question_answering settings: the per-request question and the span-search limits."""

    question: str = ""
    max_answer_length: int = DEFAULT_MAX_ANSWER_LENGTH
    num_top_classes: int = DEFAULT_NUM_TOP_CLASSES
    # Which graph outputs hold the start and the end logits (manifest output order).
    start_output: int = 0
    end_output: int = 1


def find_outputs(manifest: Manifest) -> tuple[int, int]:
    """Locate the start/end logits among the graph outputs by name or meaning, else (0, 1)."""
    start = end = None
    for index, output in enumerate(manifest.outputs):
        words = f"{output.get('name', '')} {output.get('meaning', '')}".lower()
        if start is None and "start" in words:
            start = index
        elif end is None and "end" in words:
            end = index
    if start is None or end is None:
        return 0, 1
    return start, end


class QuestionAnswering:
    """The question_answering task (see the module docstring)."""

    name = NAME

    def parse_config(self, manifest: Manifest, config: Mapping[str, Any]) -> QuestionAnsweringConfig:
        update = unwrap_update(NAME, config)
        check_keys(NAME, update, {"question", "num_top_classes", "max_answer_length"})
        question = update.get("question")
        if question is None:
            raise InvalidInput(QUESTION_REQUIRED)
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput(f"[{NAME}] [question] must be a non-empty string; got [{question}]")
        truncate, span = parse_tokenization(manifest, update)
        start_output, end_output = find_outputs(manifest)
        return QuestionAnsweringConfig(
            results_field=parse_results_field(NAME, update),
            truncate=truncate,
            span=span,
            question=question,
            max_answer_length=parse_int(NAME, update, "max_answer_length", DEFAULT_MAX_ANSWER_LENGTH, 1),
            num_top_classes=parse_int(NAME, update, "num_top_classes", DEFAULT_NUM_TOP_CLASSES, 0),
            start_output=start_output,
            end_output=end_output,
        )

    def prepare(self, text: str, cfg: TaskConfig, tokenizer: Tokenizer) -> Prepared:
        assert isinstance(cfg, QuestionAnsweringConfig)
        text = require_text(text)
        tokenized = tokenizer.pair(cfg.question, text, cfg.truncate, cfg.span)
        return Prepared(text=text, windows=tokenized.windows, is_truncated=tokenized.is_truncated)

    def finish(
        self, prepared: Prepared, outputs: list[tuple[np.ndarray, ...]], cfg: TaskConfig
    ) -> dict[str, Any]:
        assert isinstance(cfg, QuestionAnsweringConfig)
        windows = prepared.windows
        check_row_count(NAME, outputs, len(windows))
        longest = max(len(window.input_ids) for window in windows)
        starts = np.full((len(windows), longest), MASKED_LOGIT, dtype=np.float32)
        ends = np.full((len(windows), longest), MASKED_LOGIT, dtype=np.float32)
        needed = max(cfg.start_output, cfg.end_output) + 1
        for row, (window, output) in enumerate(zip(windows, outputs, strict=True)):
            if len(output) < needed:
                raise ModelError(f"[{NAME}] expected start and end logits; got [{len(output)}] outputs")
            start = np.asarray(output[cfg.start_output], dtype=np.float32).reshape(-1)
            end = np.asarray(output[cfg.end_output], dtype=np.float32).reshape(-1)
            if start.shape[0] != len(window.input_ids) or end.shape[0] != len(window.input_ids):
                raise ModelError(
                    f"[{NAME}] expected [{len(window.input_ids)}] start and end logits for window [{row}]; "
                    f"got [{start.shape[0]}] and [{end.shape[0]}]"
                )
            starts[row, : start.shape[0]] = start
            ends[row, : end.shape[0]] = end
        spans = _kernels.qa_top_spans(
            starts,
            ends,
            np.asarray([window.seq2_start for window in windows], dtype=np.int64),
            np.asarray([len(window.input_ids) for window in windows], dtype=np.int64),
            cfg.max_answer_length,
            max(cfg.num_top_classes, 1),
        )
        text = prepared.text
        answers = []
        # Whole-word offsets: ES gives every WordPiece/BPE piece its word's span, so an answer that
        # ends on a "##" piece still ends at the end of the word.
        word_offsets: dict[int, np.ndarray] = {}
        for window_index, start_token, end_token, score in spans:
            if window_index not in word_offsets:
                word_offsets[window_index] = windows[window_index].word_offsets()
            offsets = word_offsets[window_index]
            start_offset = int(offsets[start_token][0])
            end_offset = int(offsets[end_token][1])
            answers.append(
                {
                    "answer": text[start_offset:end_offset],
                    "start_offset": start_offset,
                    "end_offset": end_offset,
                    "score": float(score),
                }
            )
        if not answers:
            # Every candidate scored zero (probabilities underflowed): ES's initial best is an
            # empty span with score 0.0; say so rather than invent an answer.
            answers.append({"answer": "", "start_offset": 0, "end_offset": 0, "score": 0.0})
        best = answers[0]
        result: dict[str, Any] = {
            cfg.results_field: best["answer"],
            "start_offset": best["start_offset"],
            "end_offset": best["end_offset"],
        }
        if cfg.num_top_classes > 0:
            result["top_classes"] = answers[: cfg.num_top_classes]
        result["prediction_probability"] = best["score"]
        return with_truncation(result, prepared.is_truncated)


TASK = QuestionAnswering()
