"""engine.rows.run_rows: one (result, error) per input, in order, refused rows found by halving."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import InferenceTimeout, InvalidInput
from engine.rows import run_rows


class Recorder:
    """An ``infer`` that refuses a batch holding an empty text, and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str], **config: Any) -> list[dict[str, Any]]:
        self.calls.append(list(texts))
        if any(not text.strip() for text in texts):
            raise InvalidInput("input text must not be empty or contain only whitespace")
        return [{"text": text, **config} for text in texts]


def test_every_row_is_answered_in_order_and_bad_rows_hold_their_error() -> None:
    values: list[Any] = [f"t{i}" for i in range(64)]
    values[5] = ""
    values[40] = 7
    infer = Recorder()
    results = run_rows(infer, values, {"tag": 1})
    assert len(results) == len(values)
    for value, (result, error) in zip(values, results, strict=True):
        if value == "" or value == 7:
            assert result is None and error is not None and error["status"] == 400
        else:
            assert error is None and result == {"text": value, "tag": 1}
    assert results[5][1]["reason"] == "input text must not be empty or contain only whitespace"
    assert "must be a string" in results[40][1]["reason"]
    # one bad row among 63 texts: the whole batch, then two halves per level (~2 log2 n), not 63 calls
    assert len(infer.calls) <= 2 * 6 + 1


def test_an_error_that_is_not_about_one_row_fails_the_call() -> None:
    def timing_out(texts: list[str], **config: Any) -> list[dict[str, Any]]:
        raise InferenceTimeout("timeout [1s] waiting for inference result")

    with pytest.raises(InferenceTimeout):
        run_rows(timing_out, ["a", "b"])


def test_no_rows() -> None:
    assert run_rows(Recorder(), []) == []
