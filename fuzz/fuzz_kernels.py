"""atheris harnesses, one per ``engine._kernels`` entry point, for the ASan+UBSan build of the extension.

Every input is built from the fuzzer's bytes: shapes (empty, one-element, long rows, huge virtual ones
through zero strides), dtypes (mostly the right one, sometimes any other), layouts (C order, Fortran
order, strided slices, read-only, plain memoryviews, non-buffers), float values with NaN, ±inf, -0,
subnormals and float32's extremes mixed in, and adversarial integers (word ids, tag kinds and
entities outside any label table, negative or huge window starts and sizes, k and max_answer_length
at Py_ssize_t's limits). A call may return or raise what the contract allows (``TypeError``,
``ShapeError`` — a ``ValueError`` —, ``OverflowError``, ``MemoryError``); anything else, a result that
breaks the contract (index out of range, probability outside [0, 1], wrong length), or a sanitizer
report is a crash.

Run one harness: ``python -m fuzz.fuzz_kernels <kernel> [libFuzzer flags]``; see fuzz/README.md for
the sanitizer environment (``make fuzz-kernels``). The extension is compiled by gcc, not clang, so
libFuzzer's coverage comes from the instrumented Python side (the harness and the loader); the C side
is checked, not steered, by the sanitizers.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any

import atheris
import numpy as np

from fuzz.loader import load_kernels

kernels = load_kernels()

ALLOWED = (TypeError, ValueError, OverflowError, MemoryError)
SPECIAL_FLOATS = (math.nan, math.inf, -math.inf, -0.0, 0.0, 1e-45, 1.17e-38, 3.4028235e38, -3.4028235e38, -10000.0)
OTHER_DTYPES = (np.float64, np.float16, np.int32, np.int64, np.int8, np.uint8, np.bool_, np.complex64)
MAX_ELEMENTS = 1 << 14
INT_EDGES = (0, 1, -1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63))


def _uniform(fdp: atheris.FuzzedDataProvider, count: int, low: float, high: float) -> np.ndarray:
    """``count`` float32 values in [low, high] from the fuzzer's bytes, vectorised (a Python loop per
    element makes large inputs the whole cost of a run under ASan)."""
    raw = np.frombuffer(fdp.ConsumeBytes(2 * count).ljust(2 * count, b"\0"), dtype=np.uint16)
    return (low + raw.astype(np.float32) * np.float32((high - low) / 65535.0)).astype(np.float32)


def _floats(fdp: atheris.FuzzedDataProvider, count: int) -> np.ndarray:
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:  # arbitrary bit patterns
        return np.frombuffer(fdp.ConsumeBytes(4 * count).ljust(4 * count, b"\0"), dtype=np.float32).copy()
    if mode == 1:  # ordinary logits
        return _uniform(fdp, count, -50.0, 50.0)
    # ordinary logits with special values sprinkled in (mode 3: all equal, ties everywhere)
    values = np.full(count, fdp.ConsumeFloatInRange(-20.0, 20.0), dtype=np.float32) if mode == 3 \
        else _uniform(fdp, count, -20.0, 20.0)
    for _ in range(fdp.ConsumeIntInRange(0, 4) if count else 0):
        values[fdp.ConsumeIntInRange(0, count - 1)] = fdp.PickValueInList(list(SPECIAL_FLOATS))
    return values


def _ints(fdp: atheris.FuzzedDataProvider, count: int, dtype: Any, low: int, high: int) -> np.ndarray:
    """Mostly in [low, high], sometimes anywhere in the dtype's range."""
    info = np.iinfo(dtype)
    if fdp.ConsumeIntInRange(0, 4) == 0:
        low, high = int(info.min), int(info.max)
    return np.array(fdp.ConsumeIntListInRange(count, max(low, int(info.min)), min(high, int(info.max))), dtype=dtype)


def _shape(fdp: atheris.FuzzedDataProvider, ndim: int) -> tuple[int, ...]:
    dims = []
    for _ in range(ndim):
        pick = fdp.ConsumeIntInRange(0, 9)
        dims.append(0 if pick == 0 else 1 if pick == 1 else fdp.ConsumeIntInRange(2, 600 if pick == 9 else 24))
    while math.prod(dims) > MAX_ELEMENTS:
        dims[dims.index(max(dims))] //= 2
    return tuple(dims)


def _layout(fdp: atheris.FuzzedDataProvider, array: np.ndarray) -> Any:
    """The array as the kernel sees it: usually as built, sometimes in another layout or not an array."""
    pick = fdp.ConsumeIntInRange(0, 15)
    if pick == 0 and array.ndim >= 1 and array.shape[-1] >= 2:
        return array[..., ::2]
    if pick == 1:
        return np.asfortranarray(array)
    if pick == 2:
        view = array.copy()
        view.flags.writeable = False
        return view
    # A huge virtual array: zero strides, no memory behind it. Not with an empty trailing dimension: that
    # view is C-contiguous, and softmax_rows then walks 2**40 empty rows (hours; fuzz/README.md, findings).
    if pick == 3 and array.ndim >= 1 and all(array.shape[1:]):
        return np.broadcast_to(array.reshape(-1)[:1] if array.size else np.zeros(1, array.dtype),
                               (fdp.PickValueInList([2**31, 2**40]),) + array.shape[1:])
    if pick == 4:
        return memoryview(np.ascontiguousarray(array))
    if pick == 5:
        return array.tolist()
    if pick == 6:
        return fdp.PickValueInList([None, 3, "x", b"\0" * 8])
    if pick == 7 and array.ndim == 2:
        return array.T
    return array


def _array(fdp: atheris.FuzzedDataProvider, dtype: Any, ndim: int, shape: tuple[int, ...] | None = None,
           low: int = -2, high: int = 64) -> Any:
    """An argument for a kernel that wants ``dtype`` with ``ndim`` dimensions, usually of that kind."""
    if fdp.ConsumeIntInRange(0, 11) == 0:
        ndim = fdp.ConsumeIntInRange(0, 3)
        shape = None
    if fdp.ConsumeIntInRange(0, 11) == 0:
        dtype = fdp.PickValueInList(list(OTHER_DTYPES))
    shape = shape if shape is not None else _shape(fdp, ndim)
    count = math.prod(shape)
    if np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
        values = _floats(fdp, count).astype(dtype)
    elif dtype is np.bool_:
        values = np.frombuffer(fdp.ConsumeBytes(count).ljust(count, b"\0"), dtype=np.uint8) > 127
    else:
        values = _ints(fdp, count, dtype, low, high)
    return _layout(fdp, values.reshape(shape))


def _index(fdp: atheris.FuzzedDataProvider, typical: int) -> int:
    """An int argument: usually near ``typical``, sometimes at an edge of Py_ssize_t or beyond it."""
    pick = fdp.ConsumeIntInRange(0, 7)
    if pick == 0:
        return fdp.PickValueInList(list(INT_EDGES) + [2**64, -(2**64)])
    return fdp.ConsumeIntInRange(-3, max(typical, 0) + 3)


def _conforms(value: Any, dtype: Any, ndim: int) -> bool:
    """Whether the contract lets the kernel accept ``value``: a C-contiguous buffer of that dtype and ndim."""
    if not isinstance(value, (np.ndarray, memoryview)):
        return False
    array = np.asarray(value)
    return array.dtype == np.dtype(dtype) and array.ndim == ndim and array.flags.c_contiguous


def _call(kernel: Callable[..., Any], *args: Any, wants: tuple[tuple[Any, int] | None, ...]) -> Any:
    """The kernel's answer, or None when it raised what the contract allows. Accepting an argument the
    contract refuses (``wants`` gives each argument's dtype and ndim, None for scalars) is a finding."""
    try:
        result = kernel(*args)
    except ALLOWED:
        return None
    for arg, want in zip(args, wants, strict=True):
        if want is not None and not _conforms(arg, *want):
            raise AssertionError(f"{kernel.__name__} accepted a non-conforming argument: {type(arg)} {np.asarray(arg).dtype}")
    return result


def _check_indices(indices: np.ndarray, n: int, what: str) -> None:
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise AssertionError(f"{what}: index outside [0, {n})")


F32_2D = (np.float32, 2)


def fuzz_softmax_rows(fdp: atheris.FuzzedDataProvider) -> None:
    logits = _array(fdp, np.float32, 2)
    probs = _call(kernels.softmax_rows, logits, wants=(F32_2D,))
    if probs is None:
        return
    if probs.shape != np.asarray(logits).shape or np.any(probs < 0) or np.any(probs > 1 + 1e-9):
        raise AssertionError(f"softmax_rows: shape {probs.shape} or probabilities outside [0, 1]")


def fuzz_softmax_topk(fdp: atheris.FuzzedDataProvider) -> None:
    logits = _array(fdp, np.float32, 2)
    k = _index(fdp, 8)
    answer = _call(kernels.softmax_topk, logits, k, wants=(F32_2D, None))
    if answer is None:
        return
    indices, probs = answer
    rows, cols = np.asarray(logits).shape
    expected = cols if k < 0 else min(k, cols)
    if indices.shape != (rows, expected) or probs.shape != (rows, expected):
        raise AssertionError(f"softmax_topk: shapes {indices.shape}, {probs.shape} for k'={expected}")
    _check_indices(indices, cols, "softmax_topk")
    if np.any(probs < 0) or np.any(probs > 1 + 1e-9) or np.any(np.diff(probs, axis=1) > 1e-12):
        raise AssertionError("softmax_topk: probabilities outside [0, 1] or not descending")


def fuzz_nli_scores(fdp: atheris.FuzzedDataProvider) -> None:
    logits = _array(fdp, np.float32, 2)
    scores = _call(kernels.nli_scores, logits, _index(fdp, 3), _index(fdp, 3), fdp.ConsumeBool(),
                   wants=(F32_2D, None, None, None))
    if scores is None:
        return
    if scores.shape != (np.asarray(logits).shape[0],) or np.any(scores < 0) or np.any(scores > 1 + 1e-9):
        raise AssertionError("nli_scores: wrong length or scores outside [0, 1]")


def fuzz_iob_decode(fdp: atheris.FuzzedDataProvider) -> None:
    n_tokens, n_labels = _shape(fdp, 2)
    if fdp.ConsumeBool():  # a label table of a different size now and then
        n_labels = fdp.ConsumeIntInRange(0, 12)
    logits = _array(fdp, np.float32, 2, (n_tokens, n_labels))
    word_ids = _array(fdp, np.int32, 1, (n_tokens,), low=-3, high=n_tokens)
    table = fdp.ConsumeIntInRange(0, n_labels + 2)
    tag_kind = _array(fdp, np.int8, 1, (table,), low=-1, high=3)
    tag_entity = _array(fdp, np.int32, 1, (fdp.ConsumeIntInRange(0, n_labels + 2),), low=-2, high=8)
    entities = _call(kernels.iob_decode, logits, word_ids, tag_kind, tag_entity,
                     wants=(F32_2D, (np.int32, 1), (np.int8, 1), (np.int32, 1)))
    for first, last, _entity, score in entities or ():
        if not 0 <= first <= last < n_tokens or not 0.0 <= score <= 1.0 + 1e-9:
            raise AssertionError(f"iob_decode: entity ({first}, {last}, {score}) for {n_tokens} tokens")


def fuzz_qa_top_spans(fdp: atheris.FuzzedDataProvider) -> None:
    windows, seq = _shape(fdp, 2)
    start = _array(fdp, np.float32, 2, (windows, seq))
    end = _array(fdp, np.float32, 2, (windows, fdp.ConsumeIntInRange(0, seq + 1) if fdp.ConsumeBool() else seq))
    seq2_start = _array(fdp, np.int64, 1, (windows,), low=-2, high=seq + 2)
    token_size = _array(fdp, np.int64, 1, (fdp.ConsumeIntInRange(0, windows + 1) if fdp.ConsumeBool() else windows,),
                        low=-2, high=seq + 2)
    spans = _call(kernels.qa_top_spans, start, end, seq2_start, token_size, _index(fdp, seq), _index(fdp, 5),
                  wants=(F32_2D, F32_2D, (np.int64, 1), (np.int64, 1), None, None))
    for window, first, last, score in spans or ():
        if not (0 <= window < windows and 0 <= first <= last < seq) or not 0.0 <= score <= 1.0 + 1e-9:
            raise AssertionError(f"qa_top_spans: span ({window}, {first}, {last}, {score}) in [{windows}, {seq}]")


def fuzz_sparse_extract(fdp: atheris.FuzzedDataProvider) -> None:
    weights = _array(fdp, np.float32, 1)
    answer = _call(kernels.sparse_extract, weights, wants=((np.float32, 1),))
    if answer is None:
        return
    indices, values = answer
    n = np.asarray(weights).shape[0]
    _check_indices(indices, n, "sparse_extract")
    if indices.shape != values.shape or np.any(~(values > 0)) or np.any(np.diff(values) > 0):
        raise AssertionError("sparse_extract: values not positive and descending, or lengths differ")


HARNESSES: dict[str, Callable[[atheris.FuzzedDataProvider], None]] = {
    "softmax_rows": fuzz_softmax_rows,
    "softmax_topk": fuzz_softmax_topk,
    "nli_scores": fuzz_nli_scores,
    "iob_decode": fuzz_iob_decode,
    "qa_top_spans": fuzz_qa_top_spans,
    "sparse_extract": fuzz_sparse_extract,
}


def one_input(harness: Callable[[atheris.FuzzedDataProvider], None]) -> Callable[[bytes], None]:
    """libFuzzer's TestOneInput: any exception escaping the harness is a finding."""
    def test_one_input(data: bytes) -> None:
        harness(atheris.FuzzedDataProvider(data))
    return test_one_input


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in HARNESSES:
        raise SystemExit(f"usage: python -m fuzz.fuzz_kernels {{{','.join(HARNESSES)}}} [libFuzzer flags]")
    name = argv.pop(1)
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        # The harness's own branches are libFuzzer's coverage signal; under gcc's preloaded ASan runtime
        # the coverage hooks resolve to its stubs, so there is no signal to pay for (see fuzz/README.md).
        atheris.instrument_all()
    atheris.Setup(argv, one_input(HARNESSES[name]))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
