"""The Python/C boundary: argument parsing, dtype/shape/layout checks, errors that leave the module
usable, signatures and docstring examples (../shared/docs/STYLE.md, rules 9, 10, 12)."""

from __future__ import annotations

import doctest
import inspect
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tests.kernels.loader import kernels

F32 = np.zeros((2, 3), dtype=np.float32)
I32 = np.zeros(2, dtype=np.int32)
I64 = np.zeros(2, dtype=np.int64)
I8 = np.zeros(3, dtype=np.int8)

#: A valid call of every entry point: (function name, positional arguments).
VALID_CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("softmax_rows", (F32,)),
    ("softmax_topk", (F32, 2)),
    ("nli_scores", (F32, 0, 2, False)),
    ("iob_decode", (F32, I32, I8, np.array([-1, 0, 0], dtype=np.int32))),
    ("qa_top_spans", (F32, F32, I64, np.array([3, 3], dtype=np.int64), 15, 1)),
    ("sparse_extract", (np.zeros(4, dtype=np.float32),)),
]

#: For each entry point, its array arguments by position and the dtype each needs.
ARRAY_ARGS = {
    "softmax_rows": {0: np.float32},
    "softmax_topk": {0: np.float32},
    "nli_scores": {0: np.float32},
    "iob_decode": {0: np.float32, 1: np.int32, 2: np.int8, 3: np.int32},
    "qa_top_spans": {0: np.float32, 1: np.float32, 2: np.int64, 3: np.int64},
    "sparse_extract": {0: np.float32},
}


def call(name: str, args: tuple[Any, ...]) -> Any:
    function: Callable[..., Any] = getattr(kernels, name)
    return function(*args)


def replaced(args: tuple[Any, ...], position: int, value: Any) -> tuple[Any, ...]:
    return tuple(value if i == position else arg for i, arg in enumerate(args))


def assert_still_works() -> None:
    for name, args in VALID_CALLS:
        call(name, args)


@pytest.mark.parametrize(("name", "args"), VALID_CALLS)
def test_wrong_argument_counts_raise_type_error(name: str, args: tuple[Any, ...]) -> None:
    with pytest.raises(TypeError):
        call(name, args[:-1])
    with pytest.raises(TypeError):
        call(name, (*args, 1))
    assert_still_works()


@pytest.mark.parametrize(("name", "args"), VALID_CALLS)
def test_wrong_dtype_raises_value_error(name: str, args: tuple[Any, ...]) -> None:
    for position, dtype in ARRAY_ARGS[name].items():
        wrong = np.float64 if dtype != np.float64 else np.float32
        bad = args[position].astype(wrong)
        with pytest.raises(ValueError, match=np.dtype(dtype).name):
            call(name, replaced(args, position, bad))
    assert_still_works()


@pytest.mark.parametrize(("name", "args"), VALID_CALLS)
def test_non_contiguous_input_raises_value_error(name: str, args: tuple[Any, ...]) -> None:
    for position in ARRAY_ARGS[name]:
        array = args[position]
        doubled = np.repeat(array, 2, axis=-1)
        strided = doubled[..., ::2]
        assert not strided.flags.c_contiguous
        with pytest.raises(ValueError, match="C-contiguous"):
            call(name, replaced(args, position, strided))
    assert_still_works()


@pytest.mark.parametrize(("name", "args"), VALID_CALLS)
def test_wrong_ndim_raises_value_error(name: str, args: tuple[Any, ...]) -> None:
    for position in ARRAY_ARGS[name]:
        array = args[position]
        with pytest.raises(ValueError, match="-D"):
            call(name, replaced(args, position, array[None]))
    assert_still_works()


@pytest.mark.parametrize(("name", "args"), VALID_CALLS)
def test_non_buffer_raises_type_error(name: str, args: tuple[Any, ...]) -> None:
    for position in ARRAY_ARGS[name]:
        with pytest.raises(TypeError, match="buffer protocol"):
            call(name, replaced(args, position, args[position].tolist()))
    assert_still_works()


def test_keyword_arguments_and_signatures() -> None:
    logits = np.array([[1.0, 3.0, 2.0]], dtype=np.float32)
    indices, _ = kernels.softmax_topk(logits=logits, k=2)
    assert indices.tolist() == [[1, 2]]
    assert list(inspect.signature(kernels.qa_top_spans).parameters) == [
        "start",
        "end",
        "seq2_start",
        "token_size",
        "max_answer_length",
        "k",
    ]
    for name, args in VALID_CALLS:
        assert len(inspect.signature(getattr(kernels, name)).parameters) == len(args)


def test_shape_error_is_a_value_error_from_the_module() -> None:
    assert issubclass(kernels.ShapeError, ValueError)
    with pytest.raises(kernels.ShapeError):
        kernels.nli_scores(F32, 0, 3, False)
    with pytest.raises(kernels.ShapeError, match="tokens, labels"):
        kernels.iob_decode(F32, np.zeros(3, dtype=np.int32), I8, np.zeros(3, dtype=np.int32))


def test_inputs_are_not_modified_and_read_only_inputs_work() -> None:
    logits = np.array([[3.0, 1.0, 2.0]], dtype=np.float32)
    logits.flags.writeable = False
    kernels.softmax_topk(logits, 3)
    kernels.softmax_rows(logits)
    assert logits.tolist() == [[3.0, 1.0, 2.0]]


def test_other_buffer_objects_are_accepted() -> None:
    weights = memoryview(np.array([0.0, 2.0, 1.0], dtype=np.float32))
    indices, _ = kernels.sparse_extract(weights)
    assert indices.tolist() == [1, 2]


def test_threads_get_the_same_answers() -> None:
    # The GIL is released while a kernel runs; concurrent calls must not share any state.
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((8, 30_000)).astype(np.float32)
    expected = kernels.softmax_topk(logits, 10)
    results: list[tuple[np.ndarray, np.ndarray]] = []

    def work() -> None:
        for _ in range(5):
            results.append(kernels.softmax_topk(logits, 10))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 20
    for indices, probs in results:
        assert np.array_equal(indices, expected[0]) and np.array_equal(probs, expected[1])


@pytest.mark.parametrize("name", [name for name, _ in VALID_CALLS])
def test_docstring_examples(name: str) -> None:
    function = getattr(kernels, name)
    assert function.__doc__ and "Returns:" in function.__doc__ and "Raises:" in function.__doc__
    test = doctest.DocTestParser().get_doctest(function.__doc__, {name: function}, name, None, 0)
    assert test.examples, f"{name} has no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
