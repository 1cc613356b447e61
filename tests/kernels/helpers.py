"""Shared strategies, sizes and comparisons for the kernel tests (and the shapes bench/ reuses)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.tolerances import KERNEL_ORACLE_ABS, KERNEL_ORACLE_REL

#: Sizes around SIMD widths and the 32-value top-k block (../shared/docs/STYLE.md, rule 16).
SIZES = [1, 7, 8, 9, 1023, 1024, 1025]
SEEDS = [0, 1, 2]

#: Hypothesis budget per property: enough to hit the special values, short on a loaded 2-core box.
PROPERTY = settings(max_examples=60, deadline=None)

SPECIAL_VALUES = [0.0, -0.0, 1.0, -1.0, 0.5, math.inf, -math.inf, math.nan, 88.0, -88.0, 3.4e38, -3.4e38]

logit = st.one_of(
    st.floats(-30, 30, width=32),
    st.sampled_from(SPECIAL_VALUES),
    st.floats(width=32),
)


def logit_matrix(max_rows: int = 5, max_cols: int = 40) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(
        np.float32, st.tuples(st.integers(0, max_rows), st.integers(0, max_cols)), elements=logit
    )


def random_logits(seed: int, shape: tuple[int, ...], specials: bool = True) -> np.ndarray:
    """Normal logits, some rounded to create ties, some replaced by special values when asked."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(np.float32) * 4
    tie_positions = rng.random(shape) < 0.2
    values[tie_positions] = np.round(values[tie_positions])
    if specials:
        special_positions = rng.random(shape) < 0.02
        values[special_positions] = rng.choice(
            np.array([np.nan, np.inf, -np.inf], dtype=np.float32), size=int(special_positions.sum())
        )
    return values


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=KERNEL_ORACLE_REL, abs_tol=KERNEL_ORACLE_ABS)


def assert_all_close(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    for position, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert close(a, e), f"at {position}: kernel {a!r} != reference {e!r}"
