"""The scheduler: requests, their queued texts, the batching policy, and how a request ends.

A :class:`Request` is one ``infer`` call; each of its texts that needs the graph becomes an
:class:`Entry` (one per text, as Elasticsearch queues them) holding the text's rows (windows).
:class:`RequestQueue` is the bounded three-level priority queue of entries and decides which rows
form the next batch. :class:`Scheduler` puts both behind one lock: callers admit and wait, workers
take batches and complete them, timers, cancels and stops settle requests. Nothing here runs a graph
or starts a thread; the deployment (engine/deployment.py) owns the workers.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import EngineError, InferenceTimeout, InvalidInput, QueueFull
from .stats import DeploymentStats
from .units import format_time_value

log = logging.getLogger(__name__)

REQUEST_PRIORITIES = ("high", "normal", "low")  # service order; "high" is ES's skip-the-queue priority
# Elasticsearch's messages (ELASTIC_REFERENCE.md §5.5)
QUEUE_FULL_MESSAGE = "inference process queue is full. Unable to execute command"
STOPPING_MESSAGE = "inference canceled as process is stopping"
# What one batch costs beyond its padded tokens (ONNX Runtime's dispatch of ~100 operators, collate,
# split, a worker's wake-up), in padded tokens: measured at 20-40 on a MiniLM-size int8 graph, one thread
# (bench/RESULTS.md, "Row caps that depend on length"); the batches formed change little from 20 to 80.
BATCH_FIXED_COST_TOKENS = 32

Outputs = list[tuple[np.ndarray, ...]]


def check_request(texts: str | Sequence[str], timeout: float | None, priority: str) -> list[str]:
    """The texts of an ``infer`` call as a list, after checking the call's own arguments.

    Raises:
        InvalidInput: a text that is not a string, an unknown priority, a timeout that is not positive.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise InvalidInput(f"Input value [{text!r}] for field [text_field] must be a string")
    if priority not in REQUEST_PRIORITIES:
        raise InvalidInput(f"[priority] must be one of {list(REQUEST_PRIORITIES)}, got [{priority}]")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool)
                                or timeout <= 0):
        raise InvalidInput(f"[timeout] must be a positive number of seconds, got [{timeout}]")
    return texts


class Request:
    """One ``infer`` call: its texts' outputs, how many are still missing, and how it ended."""

    def __init__(self, n_texts: int, timeout: float | None) -> None:
        self.outputs: list[Outputs | None] = [None] * n_texts
        self.remaining = n_texts
        self.timeout = timeout
        self.deadline: float | None = None
        self.state = "pending"  # pending | done | failed
        self.error: EngineError | None = None
        self.entries: list[Entry] = []
        self.done = threading.Event()
        self.callbacks: list[Callable[[], None]] = []


class Entry:
    """One queued text: its rows and how far they have got. Guarded by the deployment's lock."""

    __slots__ = ("request", "index", "windows", "lengths", "longest", "rank", "key", "next_row",
                 "rows_done", "row_outputs", "elapsed_s", "in_queue", "settled")

    def __init__(self, request: Request, index: int, windows: Sequence[Any], rank: int, key: Any) -> None:
        self.request = request
        self.index = index
        self.windows = list(windows)
        self.lengths = [len(window.input_ids) for window in self.windows]
        self.longest = max(self.lengths)
        self.rank = rank
        self.key = key
        self.next_row = 0           # rows before it have been taken into batches
        self.rows_done = 0
        self.row_outputs: list[tuple[np.ndarray, ...] | None] = [None] * len(self.windows)
        self.elapsed_s = 0.0
        self.in_queue = True        # some rows not yet taken
        self.settled = False        # delivered, or its request ended; later results are dropped

    @property
    def n_rows(self) -> int:
        return len(self.windows)


def worth_joining(rows: int, longest: int, real: int, new_rows: int, wider: int, added: int) -> bool:
    """Whether a text of ``new_rows`` rows (``added`` real tokens, making the longest row ``wider``)
    lowers a batch's cost per real token; the batch has ``rows`` rows, ``longest``, ``real`` tokens.

    A batch costs about ``BATCH_FIXED_COST_TOKENS + longest × rows`` (a fixed part per ``session.run``
    and a part per padded token), so a text joins when it adds more real tokens than the padding and
    share of the fixed part it brings: a short text is not padded to a long batch's length (nor a
    batch widened for one long text) when a batch of its own would cost less. Measured on a
    MiniLM-size NER package over CoNLL sentences (bench/RESULTS.md, "Row caps that depend on
    length"): one thread's ``session.run`` costs the same per real token from 4 to 32 rows per batch
    when the rows are length-sorted, so the padding, not the number of batches, is what costs.
    """
    fixed = BATCH_FIXED_COST_TOKENS
    return (fixed + wider * (rows + new_rows)) * real <= (fixed + longest * rows) * (real + added)


class RequestQueue:
    """Bounded three-level priority queue of texts, and the batching policy. Not locked itself:
    every method runs under the deployment's lock.

    Capacity counts live texts (queued, not settled), one per text as Elasticsearch does. Within a
    priority the order is FIFO. A batch starts with the head text (its rows, as many as fit the
    budget, at least one), then adds whole texts from the next ``grouping_window`` of the same
    priority, closest in length first, while ``longest row × rows`` stays within ``max_batch_tokens``,
    the rows within ``max_batch_rows``, and the text makes the batch cheaper per real token
    (:func:`worth_joining`): so the row cap in effect depends on the lengths queued, and a text
    much shorter or longer than the batch waits for a batch of its own length.
    A head text too big for one batch is split: its remaining rows stay at the head.
    """

    def __init__(self, capacity: int, max_batch_tokens: int, grouping_window: int,
                 max_batch_rows: int = 32) -> None:
        self.capacity = capacity
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        self.grouping_window = grouping_window
        self.live = 0
        self._levels: tuple[collections.deque[Entry], ...] = tuple(
            collections.deque() for _ in REQUEST_PRIORITIES
        )

    def has_room(self, n_entries: int) -> bool:
        """Whether ``n_entries`` more texts fit now."""
        return self.live + n_entries <= self.capacity

    def offer(self, entries: Sequence[Entry]) -> bool:
        """Queue all of ``entries`` or none (False when they do not all fit)."""
        if not self.has_room(len(entries)):
            return False
        for entry in entries:
            self._levels[entry.rank].append(entry)
        self.live += len(entries)
        return True

    def discard(self, entry: Entry) -> None:
        """Forget an entry whose request ended; it leaves the deque lazily."""
        if entry.in_queue:
            entry.in_queue = False
            self.live -= 1

    def take_batch(self) -> list[tuple[Entry, int]]:
        """The next batch as ``(entry, row)`` pairs, or ``[]`` when nothing is queued."""
        level = None
        for candidate in self._levels:
            while candidate and not candidate[0].in_queue:
                candidate.popleft()
            if candidate:
                level = candidate
                break
        if level is None:
            return []
        head = level[0]
        budget = self.max_batch_tokens
        rows: list[tuple[Entry, int]] = []
        longest = 0
        for row in range(head.next_row, head.n_rows):
            wider = max(longest, head.lengths[row])
            if rows and (wider * (len(rows) + 1) > budget or len(rows) >= self.max_batch_rows):
                break
            longest = wider
            rows.append((head, row))
        head.next_row += len(rows)
        if head.next_row < head.n_rows:
            return rows
        level.popleft()
        head.in_queue = False
        self.live -= 1
        nearby = [
            (abs(entry.longest - head.longest), position, entry)
            for position, entry in enumerate(itertools.islice(level, self.grouping_window))
            if entry.in_queue
        ]
        nearby.sort(key=lambda item: (item[0], item[1]))
        real = sum(entry.lengths[row] for entry, row in rows)
        for _, _, entry in nearby:
            wider = max(longest, entry.longest)
            if wider * (len(rows) + entry.n_rows) > budget or len(rows) + entry.n_rows > self.max_batch_rows:
                continue
            added = sum(entry.lengths)
            if not worth_joining(len(rows), longest, real, entry.n_rows, wider, added):
                continue
            longest, real = wider, real + added
            rows.extend((entry, row) for row in range(entry.n_rows))
            entry.next_row = entry.n_rows
            entry.in_queue = False
            self.live -= 1
            level.remove(entry)
        return rows

    def queued_entries(self) -> list[Entry]:
        return [entry for level in self._levels for entry in level if entry.in_queue]


class Scheduler:
    """The queue and the life of every request on it, behind the deployment's one lock.

    Callers ``admit`` a request's entries and ``wait`` (or register ``when_done``); workers take
    ``next_batch`` and hand it back with ``complete``. A request ends exactly once, in ``settle``: with
    its results, or with the first error (its timer, a failed batch, a cancel, a stop); texts still queued
    then leave the queue and late results are dropped. ``cond`` is also the lock the deployment guards its
    allocations and state with, so a state change and the queue are seen together. Methods whose names
    say "held" expect the lock; the others take it.
    """

    def __init__(self, queue: RequestQueue, stats: DeploymentStats) -> None:
        lock = threading.RLock()  # reentrant: a settle inside a locked section is fine
        # Two conditions on the one lock: the workers wait on ``cond`` for batches (and the deployment
        # for its own state), callers on ``room`` for space in the queue; so a request that settles does
        # not wake an idle worker (on a busy host every needless wake-up costs the waker its core).
        self.cond = threading.Condition(lock)
        self.room = threading.Condition(lock)
        self.queue = queue
        self.stats = stats
        self.pending_texts = 0
        self._pending_requests: set[Request] = set()

    # -- callers -------------------------------------------------------------------------------

    def admit(self, request: Request, entries: list[Entry], timeout: float | None, wait_for_room: bool,
              check_open: Callable[[], None], wake_workers: bool = True) -> None:
        """Queue all of a request's entries, or none.

        Args:
            wait_for_room: wait until they fit instead of failing.
            check_open: raises when the deployment no longer takes requests (called under the lock,
                before and after every wait).
            wake_workers: False when the caller, holding the lock, may take the batch itself; it then
                wakes the workers (``cond.notify_all()``) if it does not.

        Raises:
            QueueFull: they do not all fit now (and ``wait_for_room`` is false).
        """
        with self.cond:
            check_open()
            while wait_for_room and not self.queue.has_room(len(entries)):
                self.room.wait()  # woken when a batch is taken, a request settles, or a stop begins
                check_open()
            if not self.queue.offer(entries):
                self.stats.record_rejected(len(entries))
                raise QueueFull(QUEUE_FULL_MESSAGE)
            self.stats.record_queued(len(entries))
            request.entries = entries
            request.remaining = len(entries)
            if timeout is not None:
                request.deadline = time.monotonic() + timeout
            self.pending_texts += len(entries)
            if entries:
                self._pending_requests.add(request)
                if wake_workers:
                    self.cond.notify_all()
            else:
                self.settle_held(request, None)

    def when_done(self, request: Request, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the request has ended (now, if it has)."""
        with self.cond:
            if request.state == "pending":
                request.callbacks.append(callback)
                return
        callback()

    def wait(self, request: Request) -> None:
        """Block until the request ends or its deadline passes; raise its error."""
        remaining = None if request.deadline is None else max(0.0, request.deadline - time.monotonic())
        if not request.done.wait(remaining):
            self.expire(request)
        self.raise_if_failed(request)

    def expire(self, request: Request) -> None:
        """The caller's timer ran out: fail the request unless its results won the race."""
        with self.cond:
            if request.state != "pending":
                return
            self.stats.record_timeout(sum(not entry.settled for entry in request.entries))
            timeout = format_time_value(request.timeout or 0.0)
            self.settle_held(request, InferenceTimeout(f"timeout [{timeout}] waiting for inference result"))

    def end(self, request: Request, error: EngineError) -> None:
        """Withdraw a request that is still pending (a cancelled caller)."""
        with self.cond:
            if request.state == "pending":
                self.settle_held(request, error)

    @staticmethod
    def raise_if_failed(request: Request) -> None:
        if request.state == "failed":
            assert request.error is not None
            raise request.error

    def settle_held(self, request: Request, error: EngineError | None) -> None:
        """End a request (lock held): drop its queued texts, wake its caller."""
        request.state = "done" if error is None else "failed"
        request.error = error
        live = self.queue.live
        for entry in request.entries:
            self.queue.discard(entry)
            if not entry.settled:
                entry.settled = True
                self.pending_texts -= 1
        self._pending_requests.discard(request)
        if self.queue.live != live:  # its queued texts left: callers waiting for room may go on, and
            self.wake_all_held()     # workers draining for a stop may find the queue empty
        request.done.set()
        for callback in request.callbacks:
            try:
                callback()
            except Exception:  # a closed event loop must not break the worker that completed the request
                log.exception("inference completion callback failed")
        request.callbacks.clear()

    def wake_all_held(self) -> None:
        """Wake every waiter, workers and callers waiting for room (lock held): the queue or the
        deployment's state changed in a way either may be waiting for."""
        self.cond.notify_all()
        self.room.notify_all()

    def cancel_held(self, error: EngineError, queued_only: bool) -> None:
        """Fail pending requests (lock held): those with texts still queued, or all of them."""
        for request in list(self._pending_requests):
            if not queued_only or any(entry.in_queue for entry in request.entries):
                self.settle_held(request, error)

    # -- workers -------------------------------------------------------------------------------

    def next_batch(self, done: Callable[[], bool],
                   paused: Callable[[], bool] | None = None) -> list[tuple[Entry, int]]:
        """The next batch for a worker, waiting for one; ``[]`` once ``done()``. While ``paused()`` (its
        allocation lent to a caller) it takes nothing. Both are checked under the lock."""
        with self.cond:
            while True:
                if done():
                    return []
                rows = [] if paused is not None and paused() else self.queue.take_batch()
                if rows:
                    self.wake_all_held()  # the queue has room again; a draining worker may find it empty
                    return rows
                self.cond.wait()

    def take_lone_batch_held(self, request: Request) -> list[tuple[Entry, int]]:
        """The next batch when ``request``'s one text is all that is queued (lock held), else ``[]``: what
        a caller may run on its own thread without passing anyone in the queue. A text too big for one
        batch leaves its other rows queued, for the workers."""
        if request.state != "pending" or self.queue.live != len(request.entries) or len(request.entries) != 1:
            return []
        if not request.entries[0].in_queue:
            return []
        return self.queue.take_batch()  # its head is the one live entry: this request's

    def complete(self, rows: list[tuple[Entry, int]], per_row: Outputs, error: EngineError | None,
                 elapsed: float) -> list[tuple[Any, Outputs]]:
        """Hand a batch back: its rows' outputs, or the error that fails every request in it.

        Returns:
            ``(cache key, outputs)`` of the texts it completed that have a key, for the caller to cache
            outside the lock (late results too: they are still right).
        """
        entries = list(dict.fromkeys(entry for entry, _ in rows))
        to_cache: list[tuple[Any, Outputs]] = []
        with self.cond:
            for entry in entries:
                entry.elapsed_s += elapsed
            if error is not None:
                self.stats.record_batch(elapsed, 0)
                failed = [entry for entry in entries if not entry.settled]
                self.stats.record_error(len(failed))
                for request in dict.fromkeys(entry.request for entry in failed):
                    if request.state == "pending":
                        self.settle_held(request, error)
                return to_cache
            for (entry, row), outputs in zip(rows, per_row, strict=True):
                entry.row_outputs[row] = outputs
                entry.rows_done += 1
            completed = [entry for entry in entries if entry.rows_done == entry.n_rows]
            self.stats.record_batch(elapsed, len(completed))
            for entry in completed:
                outputs = list(entry.row_outputs)
                if entry.key is not None:
                    to_cache.append((entry.key, outputs))
                if entry.settled:
                    continue  # its request timed out or was cancelled: the late result is dropped
                entry.settled = True
                self.pending_texts -= 1
                request = entry.request
                request.outputs[entry.index] = outputs
                self.stats.record_inference(entry.elapsed_s * 1000, cache_hit=False)
                request.remaining -= 1
                if request.remaining == 0:
                    self.settle_held(request, None)
        return to_cache
