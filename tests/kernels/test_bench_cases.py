"""The benchmark's NumPy baselines compute what the kernels compute, on the benchmarked shapes, so
that the ratios in bench/bench_kernels.py compare like with like."""

from __future__ import annotations

import numpy as np
import pytest

from bench import bench_kernels
from bench.kernel_cases import KernelCase, all_cases
from tests.kernels.loader import kernels
from tests.tolerances import KERNEL_NUMPY_ABS, KERNEL_NUMPY_REL


def assert_same(kernel_result: object, numpy_result: object) -> None:
    if isinstance(kernel_result, list):
        assert isinstance(numpy_result, list) and len(kernel_result) == len(numpy_result)
        for ours, theirs in zip(kernel_result, numpy_result, strict=True):
            assert ours[:3] == theirs[:3]
            assert ours[3] == pytest.approx(theirs[3], rel=KERNEL_NUMPY_REL)
    elif isinstance(kernel_result, tuple):
        assert isinstance(numpy_result, tuple)
        for ours, theirs in zip(kernel_result, numpy_result, strict=True):
            assert_same(ours, theirs)
    else:
        ours, theirs = np.asarray(kernel_result), np.asarray(numpy_result)
        assert ours.shape == theirs.shape
        if ours.dtype.kind in "iu":
            assert np.array_equal(ours, theirs)
        else:
            np.testing.assert_allclose(ours, theirs, rtol=KERNEL_NUMPY_REL, atol=KERNEL_NUMPY_ABS)


@pytest.mark.parametrize("case", all_cases(seed=3), ids=lambda case: f"{case.kernel}-{case.description}")
def test_numpy_equivalents_agree_with_the_kernels(case: KernelCase) -> None:
    expected = getattr(kernels, case.kernel)(*case.args)
    for _, equivalent in bench_kernels.NUMPY_EQUIVALENTS[case.kernel]:
        assert_same(expected, equivalent(*case.args))


def test_table_renders() -> None:
    table = bench_kernels.markdown([bench_kernels.Row("case", "numpy", 2.0, 10.0)])
    assert "| case | numpy | 2.0 | 10.0 | 5.0x |" in table
