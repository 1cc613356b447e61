"""softmax_rows and softmax_topk against the plain-Python oracle (tests/kernels/reference.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.kernels import reference
from tests.kernels.helpers import PROPERTY, SEEDS, SIZES, assert_all_close, logit_matrix, random_logits
from tests.kernels.loader import kernels
from tests.tolerances import FLOAT32_INPUT_REL, KERNEL_ORACLE_ABS, ONE_ROUNDING_REL


def check_rows(logits: np.ndarray) -> None:
    probs = kernels.softmax_rows(logits)
    assert probs.dtype == np.float64 and probs.shape == logits.shape
    for row, got in zip(logits.tolist(), probs.tolist(), strict=True):
        assert_all_close(got, reference.softmax(row))


def check_topk(logits: np.ndarray, k: int) -> None:
    indices, probs = kernels.softmax_topk(logits, k)
    expected_indices, expected_probs = reference.softmax_topk(logits.tolist(), k)
    kept = logits.shape[1] if k < 0 else min(k, logits.shape[1])
    assert indices.dtype == np.int64 and probs.dtype == np.float64
    assert indices.shape == probs.shape == (logits.shape[0], kept)
    assert indices.tolist() == expected_indices
    for got, expected in zip(probs.tolist(), expected_probs, strict=True):
        assert_all_close(got, expected)


@PROPERTY
@given(logits=logit_matrix())
def test_softmax_rows_matches_reference(logits: np.ndarray) -> None:
    check_rows(logits)


@PROPERTY
@given(logits=logit_matrix(), k=st.integers(-2, 45))
def test_softmax_topk_matches_reference(logits: np.ndarray, k: int) -> None:
    check_topk(logits, k)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", SIZES)
def test_awkward_sizes(n: int, seed: int) -> None:
    logits = random_logits(seed, (3, n))
    check_rows(logits)
    for k in (1, 5, 31, 33, n - 1, n, n + 1, -1):
        check_topk(logits, k)


@pytest.mark.parametrize("seed", SEEDS)
def test_topk_over_a_large_vocabulary(seed: int) -> None:
    # Exercises the 32-value block skipping: almost every block loses to the heap's minimum.
    logits = random_logits(seed, (1, 50_021), specials=False)
    check_topk(logits, 5)


def test_row_of_equal_values_is_uniform_and_ties_go_to_the_lower_index() -> None:
    logits = np.full((2, 9), 3.25, dtype=np.float32)
    indices, probs = kernels.softmax_topk(logits, 4)
    assert indices.tolist() == [[0, 1, 2, 3]] * 2
    assert probs.tolist() == [[1 / 9] * 4] * 2
    assert kernels.softmax_rows(logits).tolist() == [[1 / 9] * 9] * 2


def test_nan_ranks_after_minus_infinity_and_has_no_probability() -> None:
    logits = np.array([[math.nan, -math.inf, 1.0, math.nan, 1.0]], dtype=np.float32)
    indices, probs = kernels.softmax_topk(logits, -1)
    assert indices.tolist() == [[2, 4, 1, 0, 3]]
    assert probs.tolist() == [[0.5, 0.5, 0.0, 0.0, 0.0]]


def test_infinite_maximum_shares_the_mass() -> None:
    logits = np.array([[math.inf, 1.0, math.inf, -math.inf]], dtype=np.float32)
    assert kernels.softmax_rows(logits).tolist() == [[0.5, 0.0, 0.5, 0.0]]
    only_minus_infinity = np.array([[-math.inf, math.nan, -math.inf]], dtype=np.float32)
    assert kernels.softmax_rows(only_minus_infinity).tolist() == [[0.5, 0.0, 0.5]]
    all_nan = np.full((1, 3), math.nan, dtype=np.float32)
    assert kernels.softmax_rows(all_nan).tolist() == [[0.0, 0.0, 0.0]]
    indices, probs = kernels.softmax_topk(all_nan, 2)
    assert indices.tolist() == [[0, 1]] and probs.tolist() == [[0.0, 0.0]]


def test_signed_zeros_tie() -> None:
    indices, _ = kernels.softmax_topk(np.array([[-0.0, 0.0, -0.0]], dtype=np.float32), 3)
    assert indices.tolist() == [[0, 1, 2]]


def test_empty_shapes_and_k_zero() -> None:
    for shape in [(0, 0), (0, 5), (3, 0)]:
        logits = np.zeros(shape, dtype=np.float32)
        assert kernels.softmax_rows(logits).shape == shape
        indices, probs = kernels.softmax_topk(logits, 3)
        assert indices.shape == probs.shape == (shape[0], min(3, shape[1]))
    indices, probs = kernels.softmax_topk(np.ones((2, 4), dtype=np.float32), 0)
    assert indices.shape == probs.shape == (2, 0)


def test_golden_values() -> None:
    # softmax([0, ln 3]) = [1/4, 3/4]; the ES fill_mask example shape: top-1 of a peaked row.
    probs = kernels.softmax_rows(np.array([[0.0, math.log(3.0)]], dtype=np.float32))[0]
    assert probs.tolist() == pytest.approx([0.25, 0.75], rel=FLOAT32_INPUT_REL)  # ln 3 is rounded to float32
    indices, top = kernels.softmax_topk(np.array([[1.0, 2.0, 3.0]], dtype=np.float32), 1)
    assert indices.tolist() == [[2]]
    assert top[0, 0] == pytest.approx(math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3)), rel=ONE_ROUNDING_REL)


@pytest.mark.parametrize("span", [-745.0, -708.0, -700.0, -50.0, -1.0, -0.34657359, -1e-300, 0.0])
def test_exp_accuracy_across_the_range(span: float) -> None:
    # Two-element rows [0, x] give probabilities 1/(1+e^x) and e^x/(1+e^x): the kernel's own exp.
    xs = np.linspace(span, 0.0, 257, dtype=np.float32)
    rows = np.stack([np.zeros_like(xs), xs], axis=1)
    probs = kernels.softmax_rows(rows)
    for x, (p0, p1) in zip(xs.tolist(), probs.tolist(), strict=True):
        exp_x = math.exp(x) if x >= -708.0 else 0.0
        assert math.isclose(p1, exp_x / (1 + exp_x), rel_tol=ONE_ROUNDING_REL, abs_tol=KERNEL_ORACLE_ABS)
        assert math.isclose(p0, 1 / (1 + exp_x), rel_tol=ONE_ROUNDING_REL)
