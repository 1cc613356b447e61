"""Deployment counters with Elasticsearch's deployment-stats meanings (ELASTIC_REFERENCE.md §6.5).

One inference = one text (Elasticsearch makes every doc its own request). Its time is the time the
graph ran for it: the sum of the durations of the batches its rows were in (queueing, tokenisation
and post-processing excluded, as Elasticsearch takes native ``time_ms``), or the cache lookup time
for a hit. "Last minute" figures belong to the previous *complete* period, periods being aligned to
the deployment's start; the peak is the largest complete period seen so far. The period length is a
parameter so tests need not wait a minute. The class also keeps the load sample the adaptive scaler
reads (demand, completions, busy seconds since the last sample).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any


def allocation_state(target: int, serving: int) -> str:
    """Elasticsearch's ``allocation_status.state``: ``starting`` until one allocation serves, ``started``
    while fewer serve than wanted, then ``fully_allocated`` (any backend's stats use this rule)."""
    if target > 0 and serving == 0:
        return "starting"
    if serving < target:
        return "started"
    return "fully_allocated"


@dataclasses.dataclass
class _Period:
    count: int = 0
    time_ms: float = 0.0
    cache_hits: int = 0


@dataclasses.dataclass(frozen=True)
class LoadSample:
    """What happened since the previous sample; the adaptive scaler's input."""

    interval_s: float
    demand: int          # texts that asked for inference (queued or rejected; cache hits excluded)
    completed: int       # texts whose graph run finished (delivered or not)
    busy_s: float        # summed wall time of batches over all allocations


class DeploymentStats:
    """Thread-safe counters; every ``record_*`` may be called from any thread."""

    def __init__(self, period_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        if period_s <= 0:
            raise ValueError("the stats period must be positive")
        self._clock = clock
        self._period_s = period_s
        self._start = clock()
        self._lock = threading.Lock()
        self.inference_count = 0
        self.cache_hit_count = 0
        self.rejected_execution_count = 0
        self.timeout_count = 0
        self.error_count = 0
        self._time_ms = 0.0
        self._time_ms_excluding_hits = 0.0
        self._last_access: float | None = None
        self._period_index = 0
        self._current = _Period()
        self._last = _Period()
        self._peak = 0
        self._sample_at = self._start
        self._demand = 0
        self._completed = 0
        self._busy_s = 0.0

    def _roll(self, now: float) -> None:
        index = int((now - self._start) // self._period_s)
        if index == self._period_index:
            return
        self._peak = max(self._peak, self._current.count)
        self._last = self._current if index == self._period_index + 1 else _Period()
        self._current = _Period()
        self._period_index = index

    def record_inference(self, time_ms: float, cache_hit: bool, wall_time: float | None = None) -> None:
        """One text answered (``wall_time``: epoch seconds for ``last_access``, now when None)."""
        with self._lock:
            self._roll(self._clock())
            self.inference_count += 1
            self._time_ms += time_ms
            self._current.count += 1
            self._current.time_ms += time_ms
            if cache_hit:
                self.cache_hit_count += 1
                self._current.cache_hits += 1
            else:
                self._time_ms_excluding_hits += time_ms
            self._last_access = time.time() if wall_time is None else wall_time

    def record_rejected(self, texts: int) -> None:
        with self._lock:
            self.rejected_execution_count += texts
            self._demand += texts

    def record_queued(self, texts: int) -> None:
        with self._lock:
            self._demand += texts

    def record_timeout(self, texts: int) -> None:
        with self._lock:
            self.timeout_count += texts

    def record_error(self, texts: int) -> None:
        with self._lock:
            self.error_count += texts

    def record_batch(self, busy_s: float, completed: int) -> None:
        with self._lock:
            self._busy_s += busy_s
            self._completed += completed

    def take_load_sample(self) -> LoadSample:
        """The load since the previous call (or since start), and reset it."""
        with self._lock:
            now = self._clock()
            sample = LoadSample(now - self._sample_at, self._demand, self._completed, self._busy_s)
            self._sample_at, self._demand, self._completed, self._busy_s = now, 0, 0, 0.0
            return sample

    def snapshot(self) -> dict[str, Any]:
        """The counters under their Elasticsearch names; averages are None before any inference."""
        with self._lock:
            self._roll(self._clock())
            misses = self.inference_count - self.cache_hit_count
            last = self._last
            return {
                "inference_count": self.inference_count,
                "average_inference_time_ms": self._time_ms / self.inference_count if self.inference_count else None,
                "average_inference_time_ms_excluding_cache_hits": (
                    self._time_ms_excluding_hits / misses if misses else None
                ),
                "inference_cache_hit_count": self.cache_hit_count,
                "throughput_last_minute": last.count,
                "average_inference_time_ms_last_minute": last.time_ms / last.count if last.count else None,
                "inference_cache_hit_count_last_minute": last.cache_hits,
                "peak_throughput_per_minute": self._peak,
                "rejected_execution_count": self.rejected_execution_count,
                "timeout_count": self.timeout_count,
                "error_count": self.error_count,
                "last_access": int(self._last_access * 1000) if self._last_access is not None else None,
            }
