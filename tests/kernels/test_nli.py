"""nli_scores against the plain-Python oracle (ELASTIC_REFERENCE.md §2.8)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.kernels import reference
from tests.kernels.helpers import PROPERTY, SEEDS, SIZES, assert_all_close, logit, random_logits
from tests.kernels.loader import kernels
from tests.tolerances import FLOAT32_INPUT_REL


def check(logits: np.ndarray, entailment: int, contradiction: int, multi_label: bool) -> None:
    scores = kernels.nli_scores(logits, entailment, contradiction, multi_label)
    assert scores.dtype == np.float64 and scores.shape == (logits.shape[0],)
    expected = reference.nli_scores(logits.tolist(), entailment, contradiction, multi_label)
    assert_all_close(scores.tolist(), expected)


@PROPERTY
@given(
    logits=hnp.arrays(np.float32, st.tuples(st.integers(0, 12), st.just(3)), elements=logit),
    entailment=st.integers(0, 2),
    contradiction=st.integers(0, 2),
    multi_label=st.booleans(),
)
def test_matches_reference(
    logits: np.ndarray, entailment: int, contradiction: int, multi_label: bool
) -> None:
    check(logits, entailment, contradiction, multi_label)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_labels", SIZES)
def test_awkward_label_counts(n_labels: int, seed: int) -> None:
    logits = random_logits(seed, (n_labels, 3))
    check(logits, 2, 0, False)
    check(logits, 0, 2, True)


def test_golden_values() -> None:
    # Entailment column [0, ln 3] -> [1/4, 3/4]; multi-label ignores the neutral column.
    logits = np.array([[0.0, 50.0, 0.0], [math.log(3.0), -50.0, 0.0]], dtype=np.float32)
    assert kernels.nli_scores(logits, 0, 2, False).tolist() == pytest.approx([0.25, 0.75], rel=FLOAT32_INPUT_REL)
    assert kernels.nli_scores(logits, 0, 2, True).tolist() == pytest.approx([0.5, 0.75], rel=FLOAT32_INPUT_REL)


def test_no_labels() -> None:
    assert kernels.nli_scores(np.zeros((0, 3), dtype=np.float32), 0, 2, False).shape == (0,)
    assert kernels.nli_scores(np.zeros((0, 3), dtype=np.float32), 0, 2, True).shape == (0,)
