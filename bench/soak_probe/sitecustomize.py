"""Hypothesis switches for the ``engine serve`` process of a soak (bench/bench_soak.py), by environment.

``engine serve`` exposes no session options, so the soak's memory hypotheses were measured by putting
this directory on the server's ``PYTHONPATH`` (``--server-env PYTHONPATH=bench/soak_probe``), where
Python imports it at start, and choosing a switch:

* ``SOAK_SESSION_OPTIONS='{"enable_cpu_mem_arena": false}'``: session options for every session;
* ``SOAK_SHRINK=1``: every run with ``memory.enable_memory_arena_shrinkage`` = ``cpu:0``;
* ``SOAK_WARM='[[4, 512], [32, 64]]'``: run each ``[rows, length]`` once on a new session;
* ``SOAK_ENV_ARENA='{"arena_extend_strategy": 1}'``: one process-wide arena with that OrtArenaCfg;
* ``SOAK_TRIM_S=1``: ``malloc_trim(0)`` every second from a thread;
* ``SOAK_TRACE=1``: tracemalloc on; ``kill -USR1 <pid>`` writes ``/tmp/soak/trace/snapN.pickle``.

glibc's own tunables (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``) need no probe. A measuring
device, not part of the engine; bench/RESULTS.md has the numbers.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

if os.environ.get("SOAK_TRACE"):
    tracemalloc.start(1)
    _snapshots = [0]

    def _dump(signum: int, frame: Any) -> None:
        _snapshots[0] += 1
        gc.collect()
        folder = Path("/tmp/soak/trace")
        folder.mkdir(parents=True, exist_ok=True)
        tracemalloc.take_snapshot().dump(str(folder / f"snap{_snapshots[0]}.pickle"))

    signal.signal(signal.SIGUSR1, _dump)

if os.environ.get("SOAK_TRIM_S"):
    _libc = ctypes.CDLL("libc.so.6")

    def _trim() -> None:
        while True:
            time.sleep(float(os.environ["SOAK_TRIM_S"]))
            _libc.malloc_trim(0)

    threading.Thread(target=_trim, daemon=True).start()

if os.environ.get("SOAK_ENV_ARENA"):
    import onnxruntime as _ort

    _ort.create_and_register_allocator(
        _ort.OrtMemoryInfo("Cpu", _ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, _ort.OrtMemType.DEFAULT),
        _ort.OrtArenaCfg(json.loads(os.environ["SOAK_ENV_ARENA"])))
    _session_options = _ort.SessionOptions

    def _env_allocator_options() -> Any:
        options = _session_options()
        options.add_session_config_entry("session.use_env_allocators", "1")
        return options

    _ort.SessionOptions = _env_allocator_options

if any(os.environ.get(name) for name in ("SOAK_SESSION_OPTIONS", "SOAK_SHRINK", "SOAK_WARM")):
    import numpy as _np
    import onnxruntime as _ort

    import engine.session as _session  # before engine.deployment imports create_session from it

    _create = _session.create_session
    _extra = json.loads(os.environ.get("SOAK_SESSION_OPTIONS") or "{}")

    class _Shrinking:
        def __init__(self, session: Any) -> None:
            self._session = session
            self._run_options = _ort.RunOptions()
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

        def run(self, names: Any, feeds: Any, run_options: Any = None) -> Any:
            return self._session.run(names, feeds, self._run_options)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._session, name)

    def _probe_session(path: Any, threads: int, cores: Any = None, options: Any = None) -> Any:
        session = _create(path, threads, cores, {**(options or {}), **_extra})
        for rows, length in json.loads(os.environ.get("SOAK_WARM") or "[]"):
            session.run(None, {i.name: _np.ones((rows, length), _np.int64) for i in session.get_inputs()})
        return _Shrinking(session) if os.environ.get("SOAK_SHRINK") else session

    _session.create_session = _probe_session
