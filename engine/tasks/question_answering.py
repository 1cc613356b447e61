"""question_answering: extractive answer spans over windows of the context (ELASTIC_REFERENCE.md §2.3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _kernels
from ..errors import InvalidInput, ModelError
from ..manifest import Manifest
from ..tokenization import Window
from .common import (
    Prepared,
    TaskConfig,
    TaskRunner,
    check_keys,
    graph_output,
    parse_int,
    parse_results_field,
    parse_tokenization,
    require_text,
    unwrap_update,
    with_truncation,
)
from .outputs import SpanLogits

NAME = "question_answering"
DEFAULT_MAX_ANSWER_LENGTH = 15
DEFAULT_NUM_TOP_CLASSES = 0
QUESTION_REQUIRED = (
    "please provide configuration update for question_answering task including the desired [question]"
)


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


class QuestionAnswering(TaskRunner[QuestionAnsweringConfig, Prepared, SpanLogits]):
    """The question_answering task (see the module docstring)."""

    name = NAME

    def parse_config(self, config: Mapping[str, Any] | None) -> QuestionAnsweringConfig:
        update = unwrap_update(NAME, config)
        check_keys(NAME, update, {"question", "num_top_classes", "max_answer_length"})
        question = update.get("question")
        if question is None:
            raise InvalidInput(QUESTION_REQUIRED)
        if not isinstance(question, str) or not question.strip():
            raise InvalidInput(f"[{NAME}] [question] must be a non-empty string; got [{question}]")
        truncate, span = parse_tokenization(self.manifest, update)
        start_output, end_output = find_outputs(self.manifest)
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

    def prepare(self, text: str, cfg: QuestionAnsweringConfig) -> Prepared:
        text = require_text(text)
        tokenized = self.tokenizer.pair(cfg.question, text, cfg.truncate, cfg.span)
        return Prepared(text=text, windows=tokenized.windows, is_truncated=tokenized.is_truncated)

    def read(self, row: tuple[np.ndarray, ...], window: Window, cfg: QuestionAnsweringConfig) -> SpanLogits:
        needed = max(cfg.start_output, cfg.end_output) + 1
        if len(row) < needed:
            raise ModelError(f"[{NAME}] expected start and end logits; got [{len(row)}] outputs")
        start = graph_output(NAME, row, cfg.start_output).reshape(-1)
        end = graph_output(NAME, row, cfg.end_output).reshape(-1)
        if start.shape[0] != len(window.input_ids) or end.shape[0] != len(window.input_ids):
            raise ModelError(
                f"[{NAME}] expected [{len(window.input_ids)}] start and end logits per window; "
                f"got [{start.shape[0]}] and [{end.shape[0]}]"
            )
        return SpanLogits(start, end)

    def result(
        self, prepared: Prepared, outputs: list[SpanLogits], cfg: QuestionAnsweringConfig
    ) -> dict[str, Any]:
        windows = prepared.windows
        longest = max(len(window.input_ids) for window in windows)
        # The shorter windows are padded with the value the kernel masks non-context positions
        # with, so padding can never win.
        starts = np.full((len(windows), longest), _kernels.QA_MASKED_LOGIT, dtype=np.float32)
        ends = np.full((len(windows), longest), _kernels.QA_MASKED_LOGIT, dtype=np.float32)
        for row, output in enumerate(outputs):
            starts[row, : output.start.shape[0]] = output.start
            ends[row, : output.end.shape[0]] = output.end
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


TASK = QuestionAnswering
