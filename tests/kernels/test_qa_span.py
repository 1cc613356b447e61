"""qa_top_spans against the plain-Python oracle (ELASTIC_REFERENCE.md §2.3)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.kernels import reference
from tests.kernels.helpers import PROPERTY, SEEDS, SIZES, close, logit, random_logits
from tests.kernels.loader import kernels
from tests.tolerances import KERNEL_ORACLE_REL, NEAR_TIE_REL

#: Scores this small come from exp() in the subnormal range, which the kernel flushes to zero.
TINY = 1e-290


def run(start: np.ndarray, end: np.ndarray, seq2: list[int], sizes: list[int], max_len: int, k: int) -> list:
    return kernels.qa_top_spans(
        start, end, np.asarray(seq2, dtype=np.int64), np.asarray(sizes, dtype=np.int64), max_len, k
    )


def has_tiny_scores(
    start: np.ndarray, end: np.ndarray, seq2: list[int], sizes: list[int], max_len: int
) -> bool:
    """Candidates scoring in (0, TINY): there the kernel's flush to zero and the oracle's subnormals
    legitimately disagree about which spans score above 0."""
    candidates = reference.qa_candidates(start.tolist(), end.tolist(), seq2, sizes, max_len)
    return any(0.0 < span[3] < TINY for span in candidates)


def check(
    start: np.ndarray, end: np.ndarray, seq2: list[int], sizes: list[int], max_len: int, k: int
) -> None:
    starts, ends = start.tolist(), end.tolist()
    got = run(start, end, seq2, sizes, max_len, k)
    expected = reference.qa_top_spans(starts, ends, seq2, sizes, max_len, k)
    candidates = reference.qa_candidates(starts, ends, seq2, sizes, max_len)
    scores = {span[:3]: span[3] for span in candidates}
    assert len(got) == len(expected)
    for span, expected_span in zip(got, expected, strict=True):
        assert close(span[3], expected_span[3]), (span, expected_span)
        assert close(span[3], scores[span[:3]]), span
    # The spans themselves must match unless two of the leading scores differ only by rounding
    # (the kernel and the oracle compute the probabilities with different exp and sum orders).
    leading = sorted((span[3] for span in candidates), reverse=True)[: max(k, 1) + 1]
    if not any(0.0 < a - b <= NEAR_TIE_REL * a for a, b in zip(leading, leading[1:], strict=False)):
        assert [span[:3] for span in got] == [span[:3] for span in expected]


@st.composite
def qa_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    n_windows = draw(st.integers(0, 3))
    seq_len = draw(st.integers(0, 24))
    start = draw(hnp.arrays(np.float32, (n_windows, seq_len), elements=logit))
    end = draw(hnp.arrays(np.float32, (n_windows, seq_len), elements=logit))
    sizes = [draw(st.integers(0, seq_len)) for _ in range(n_windows)]
    seq2 = [draw(st.integers(0, seq_len + 1)) for _ in range(n_windows)]
    return start, end, seq2, sizes


@PROPERTY
@given(inputs=qa_inputs(), max_len=st.integers(1, 20), k=st.integers(-1, 12))
def test_matches_reference(inputs: tuple, max_len: int, k: int) -> None:
    assume(not has_tiny_scores(*inputs, max_len))
    check(*inputs, max_len, k)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("seq_len", SIZES)
def test_awkward_sizes(seq_len: int, seed: int) -> None:
    start = random_logits(seed, (2, seq_len), specials=False)
    end = random_logits(seed + 100, (2, seq_len), specials=False)
    seq2 = [min(3, seq_len), min(5, seq_len)]
    sizes = [seq_len, max(seq_len - 4, 0)]
    assert not has_tiny_scores(start, end, seq2, sizes, 15)  # normal logits: no underflowing scores
    for k in (1, 5):
        check(start, end, seq2, sizes, 15, k)


def window(question_tokens: int, context: list[float], padding: int = 0) -> np.ndarray:
    """[CLS] question [SEP] context [SEP] padding, question and specials at logit 0."""
    return np.array([0.0] * (question_tokens + 2) + context + [0.0] * (1 + padding), dtype=np.float32)


def test_masked_logit_is_exported() -> None:
    # The task pads short windows with the module's constant; it must be the value ES masks with.
    assert kernels.QA_MASKED_LOGIT == reference.QA_MASKED_LOGIT


def test_golden_single_best_answer() -> None:
    # Question of 2 tokens: context starts at token 4. The answer is context tokens 1..2.
    start = window(2, [0.0, 6.0, 1.0, 0.0])[None]
    end = window(2, [0.0, 0.0, 6.0, 1.0])[None]
    spans = run(start, end, [4], [9], 15, 1)
    assert [span[:3] for span in spans] == [(0, 5, 6)]
    kept = [0.0, 0.0, 6.0, 1.0, 0.0]  # CLS plus the four context tokens; everything else is masked
    p_start = np.exp(6.0) / (np.exp(kept).sum() + 4 * np.exp(-10000.0))
    p_end = np.exp(6.0) / np.exp([0.0, 0.0, 0.0, 6.0, 1.0]).sum()
    assert spans[0][3] == pytest.approx(p_start * p_end, rel=KERNEL_ORACLE_REL)


def test_question_and_separator_logits_never_answer() -> None:
    start = np.array([[0.0, 99.0, 99.0, 0.0, 1.0, 0.0, 99.0]], dtype=np.float32)
    end = start.copy()
    spans = run(start, end, [4], [6], 15, 3)
    assert {span[1] for span in spans} <= {4, 5}


def test_spans_longer_than_max_answer_length_are_excluded() -> None:
    start = window(1, [9.0, 0.0, 0.0, 0.0])[None]
    end = window(1, [0.0, 0.0, 0.0, 9.0])[None]
    # With room for four tokens the peaked end wins; with three it is out of reach and the first of
    # the equal remaining ends (scan order) wins.
    for max_len, expected_end in ((4, 6), (3, 3)):
        spans = run(start, end, [3], [8], max_len, 1)
        assert spans[0][1:3] == (3, expected_end)


def test_top_k_is_global_across_windows() -> None:
    first = window(1, [1.0, 2.0, 0.0])
    second = window(1, [8.0, 0.0, 0.0])
    starts = np.stack([first, second])
    ends = np.stack([window(1, [0.0, 3.0, 0.0]), window(1, [7.0, 0.0, 0.0])])
    spans = run(starts, ends, [3, 3], [7, 7], 15, 3)
    assert spans[0][:3] == (1, 3, 3)
    assert [span[3] for span in spans] == sorted((span[3] for span in spans), reverse=True)
    single = run(starts, ends, [3, 3], [7, 7], 15, 1)
    assert single == spans[:1]


def test_no_context_gives_no_answer_for_k_one() -> None:
    # The only context token is the final SEP (masked): every start probability is zero.
    start = np.array([[5.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    assert run(start, start.copy(), [3], [4], 15, 1) == []
    assert run(start, start.copy(), [3], [4], 15, 0) == []
    spans = run(start, start.copy(), [3], [4], 15, 2)
    assert [span[:3] for span in spans] == [(0, 3, 3)] and spans[0][3] == 0.0


def test_empty_inputs() -> None:
    empty = np.zeros((0, 0), dtype=np.float32)
    assert run(empty, empty, [], [], 15, 1) == []
    assert run(empty, empty, [], [], 15, 5) == []
    no_tokens = np.zeros((2, 0), dtype=np.float32)
    assert run(no_tokens, no_tokens, [0, 0], [0, 0], 15, 5) == []


def test_bad_window_bounds_and_lengths_raise() -> None:
    row = np.zeros((1, 6), dtype=np.float32)
    with pytest.raises(ValueError, match="token_size"):
        run(row, row, [2], [7], 15, 1)
    with pytest.raises(ValueError, match="seq2_start"):
        run(row, row, [-1], [6], 15, 1)
    with pytest.raises(ValueError, match="max_answer_length"):
        run(row, row, [2], [6], 0, 1)
    with pytest.raises(ValueError, match="seq2_start has 2 entries"):
        run(row, row, [2, 2], [6], 15, 1)
