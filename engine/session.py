"""The one place that builds ONNX Runtime sessions.

Every session the engine runs comes from :func:`create_session`, so thread counts, spinning and
affinity are set the same way everywhere: ``intra_op_num_threads`` = the allocation's threads
(pinned to its cores), a sequential executor with ``inter_op_num_threads`` 1, and spinning off for
both pools so an idle allocation sleeps instead of burning its cores (ORT spins by default, which
on a shared ML node steals CPU from neighbours and from the tokenizer).

Memory: the memory pattern is off by default and a deployment primes each new session's arena with
its largest batch shapes (:func:`prime_arena`), so RSS stops growing once an allocation has started.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from .cores import ort_thread_affinities
from .errors import InvalidInput, ModelError

_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

# ORT load-time fusions that make this engine's graphs slower: ``SkipLayerNormFusion`` would fold each
# residual ``Add`` + ``LayerNormalization`` the exporter keeps apart back into a
# ``SkipLayerNormalization``, whose CPU kernel (onnxruntime 1.32) runs 4x slower than the two it
# replaces (bench/RESULTS.md "The residual LayerNorm, unfused"). Every session that runs a package
# graph, the exporter's calibration and parity sessions included, passes this list.
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)

# The session options a user may change, with the type each takes. The exported graph is already
# optimised, so "graph_optimization_level" matters mainly for debugging; the arena and memory-pattern
# switches trade memory for speed when request shapes vary a lot (the pattern is off by default:
# prime_arena says why). "profile_file_prefix" turns on ORT's
# per-operator profiler (a JSON trace named <prefix>_<timestamp>.json, written by end_profiling()).
EXPOSED_OPTIONS: dict[str, type] = {
    "graph_optimization_level": str,
    "enable_cpu_mem_arena": bool,
    "enable_mem_pattern": bool,
    "log_severity_level": int,
    "profile_file_prefix": str,
}


def arena_priming_shapes(max_batch_tokens: int, max_batch_rows: int, max_sequence_length: int) -> list[tuple[int, int]]:
    """The ``(rows, length)`` batches that need the most memory under the scheduler's bounds: the
    most rows of the longest length (attention grows with the square of the length; a single row
    may exceed the token budget), and the most rows the token budget lets through."""
    longest = (max(1, max_batch_tokens // max_sequence_length), max_sequence_length)
    widest = (max_batch_rows, max(1, min(max_sequence_length, max_batch_tokens // max_batch_rows)))
    return list(dict.fromkeys([longest, widest]))


def prime_arena(session: Any, input_names: Sequence[str], pad_id: int, shapes: Sequence[tuple[int, int]]) -> None:
    """Run a new session once per shape so its arena reaches its high-water mark before serving.

    Why: the scheduler batches texts of any length together, so nearly every batch has a new
    ``rows × padded length`` shape; ONNX Runtime's CPU arena extends (in power-of-two steps)
    whenever its free space does not fit a run and never gives memory back, so an ``engine serve``
    process kept growing in steps long after warm-up, each time a batch larger or more awkward than
    any before arrived. Measured through ``engine serve`` (bench/bench_soak.py, 20,000 mixed
    1..400-word requests to two tiny BERT deployments, inference cache off; bench/RESULTS.md), RSS
    growth after warm-up: the old defaults +8.9 / +11.3 %; memory pattern off +4.5 %; priming
    alone +7.4 % (flat, then one step); per-run arena shrinkage (``memory.enable_memory_arena_shrinkage``)
    +34 % from a 3× larger start; arena off +0.5 % but 15–40 % slower on MiniLM; one shared arena
    growing by what is requested −0.6 % there but +20 % RSS on MiniLM; **priming with the memory
    pattern off +1.0 %**. The pattern (one block per seen shape, planned from the previous run of
    that shape) asks the arena for large contiguous blocks of a different size for each new shape,
    which is what still made it step after priming.

    Only ONNX Runtime sessions are primed (a test double has no arena). Values do not matter for
    memory: pad ids, full attention, token type 0.
    """
    if not isinstance(session, ort.InferenceSession):
        return
    for rows, length in shapes:
        feeds = {name: np.full((rows, length), pad_id if name == "input_ids" else int(name == "attention_mask"),
                               dtype=np.int64)
                 for name in input_names}
        session.run(None, feeds)


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = sorted(set(options) - set(EXPOSED_OPTIONS))
    if unknown:
        raise InvalidInput(f"unknown session options {unknown}; supported: {sorted(EXPOSED_OPTIONS)}")
    for name, value in options.items():
        expected = EXPOSED_OPTIONS[name]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise InvalidInput(f"session option [{name}] must be a {expected.__name__}, got [{value!r}]")
    level = options.get("graph_optimization_level")
    if level is not None and level not in _OPTIMIZATION_LEVELS:
        raise InvalidInput(f"[graph_optimization_level] must be one of {sorted(_OPTIMIZATION_LEVELS)}, got [{level}]")
    severity = options.get("log_severity_level")
    if severity is not None and not 0 <= severity <= 4:
        raise InvalidInput(f"[log_severity_level] must be between 0 and 4, got [{severity}]")


def create_session(
    path: str | os.PathLike[str],
    threads: int,
    cores: Sequence[int] | None = None,
    options: Mapping[str, Any] | None = None,
) -> ort.InferenceSession:
    """Open an ONNX graph for one allocation.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (the allocation's ``threads_per_allocation``); the calling thread
            is one of them, ORT starts ``threads - 1`` more.
        cores: the allocation's cores (0-based ids, at least ``threads`` of them); the pool threads
            are pinned to ``cores[1:threads]``; the caller pins itself to ``cores[0]``
            (``engine.cores.pin_current_thread``). None leaves every thread unpinned.
        options: changes to :data:`EXPOSED_OPTIONS`; anything else is refused.

    Raises:
        InvalidInput: an unknown option or a bad option value.
        ModelError: ONNX Runtime cannot load the graph.
        ValueError: fewer cores than threads (a scheduler bug).
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidInput(f"threads must be a positive integer, got [{threads!r}]")
    options = dict(options or {})
    _check_options(options)
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session_options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if cores is not None:
        affinities = ort_thread_affinities(cores, threads)
        if affinities is not None:
            session_options.add_session_config_entry("session.intra_op_thread_affinities", affinities)
    session_options.graph_optimization_level = _OPTIMIZATION_LEVELS[options.get("graph_optimization_level", "all")]
    session_options.enable_cpu_mem_arena = options.get("enable_cpu_mem_arena", True)
    session_options.enable_mem_pattern = options.get("enable_mem_pattern", False)
    session_options.log_severity_level = options.get("log_severity_level", 3)
    if options.get("profile_file_prefix"):
        session_options.enable_profiling = True
        session_options.profile_file_prefix = options["profile_file_prefix"]
    try:
        return ort.InferenceSession(os.fspath(path), sess_options=session_options,
                                    providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(DISABLED_OPTIMIZERS))
    except Exception as error:  # ORT raises its own pybind exception types for every load failure
        raise ModelError(f"cannot load ONNX graph [{path}]: {error}") from error


def checking_session(model: str | os.PathLike[str] | bytes) -> ort.InferenceSession:
    """A session for the exporter's parity, fusion and calibration checks: every allowed core (checks
    run once, before any deployment), and the same :data:`DISABLED_OPTIMIZERS` as a serving session, so
    what they measure is the graph a deployment runs. ``model`` is a path or a serialised graph."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))

