"""pytest-benchmark microbenchmarks: each C kernel and its NumPy equivalent on the tested shapes.

Run with ``pytest bench/test_bench_kernels.py`` (bench/ is outside the default test paths, so the normal
suite never times anything); compare the ``kernel`` and ``numpy`` groups of each case.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.bench_kernels import NUMPY_EQUIVALENTS
from bench.kernel_cases import KernelCase, all_cases
from engine import _kernels

CASES = all_cases()
PAIRS = [(case, label) for case in CASES for label, _ in NUMPY_EQUIVALENTS[case.kernel]]


@pytest.mark.parametrize("case", CASES, ids=[case.description for case in CASES])
def test_kernel(benchmark: Any, case: KernelCase) -> None:
    benchmark.group = case.description
    benchmark(getattr(_kernels, case.kernel), *case.args)


@pytest.mark.parametrize(("case", "label"), PAIRS, ids=[f"{c.description} / {label}" for c, label in PAIRS])
def test_numpy_equivalent(benchmark: Any, case: KernelCase, label: str) -> None:
    benchmark.group = case.description
    equivalent = dict(NUMPY_EQUIVALENTS[case.kernel])[label]
    benchmark(equivalent, *case.args)
