"""sparse_extract against the plain-Python oracle (ELASTIC_REFERENCE.md §2.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.kernels import reference
from tests.kernels.helpers import PROPERTY, SEEDS, SIZES, logit, random_logits
from tests.kernels.loader import kernels


def check(weights: np.ndarray) -> None:
    indices, values = kernels.sparse_extract(weights)
    assert indices.dtype == np.int64 and values.dtype == np.float32
    expected_indices, expected_values = reference.sparse_extract(weights.tolist())
    assert indices.tolist() == expected_indices
    assert values.tolist() == expected_values


@PROPERTY
@given(weights=hnp.arrays(np.float32, st.integers(0, 300), elements=logit))
def test_matches_reference(weights: np.ndarray) -> None:
    check(weights)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [*SIZES, 30522])
def test_awkward_sizes(n: int, seed: int) -> None:
    check(random_logits(seed, (n,)))


def test_golden_values() -> None:
    weights = np.array([0.0, 1.5, -2.0, math.nan, math.inf, 1.5, 1e-45, -0.0, 0.25], dtype=np.float32)
    indices, values = kernels.sparse_extract(weights)
    assert indices.tolist() == [4, 1, 5, 8, 6]
    assert values.tolist() == [math.inf, 1.5, 1.5, 0.25, float(np.float32(1e-45))]


def test_nothing_positive() -> None:
    for weights in (np.zeros(0, dtype=np.float32), np.array([0.0, -1.0, math.nan], dtype=np.float32)):
        indices, values = kernels.sparse_extract(weights)
        assert indices.shape == values.shape == (0,)
