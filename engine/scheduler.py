"""The scheduler's data: requests, their queued texts, and the batching policy.

A :class:`Request` is one ``infer`` call; each of its texts that needs the graph becomes an
:class:`Entry` (one per text, as Elasticsearch queues them) holding the text's rows (windows).
:class:`RequestQueue` is the bounded three-level priority queue of entries and decides which rows
form the next batch. Nothing here runs a graph or starts a thread: the deployment's workers call
``take_batch`` under the deployment's lock and write results back into the entries.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import EngineError, InvalidInput

REQUEST_PRIORITIES = ("high", "normal", "low")  # service order; "high" is ES's skip-the-queue priority

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


class RequestQueue:
    """Bounded three-level priority queue of texts, and the batching policy. Not locked itself:
    every method runs under the deployment's lock.

    Capacity counts live texts (queued, not settled), one per text as Elasticsearch does. Within a
    priority the order is FIFO. A batch starts with the head text (its rows, as many as fit the
    budget, at least one), then adds whole texts from the next ``grouping_window`` of the same
    priority, closest in length first, while ``longest row × rows`` stays within ``max_batch_tokens``
    and the rows within ``max_batch_rows``.
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
        for _, _, entry in nearby:
            wider = max(longest, entry.longest)
            if wider * (len(rows) + entry.n_rows) > budget or len(rows) + entry.n_rows > self.max_batch_rows:
                continue
            longest = wider
            rows.extend((entry, row) for row in range(entry.n_rows))
            entry.next_row = entry.n_rows
            entry.in_queue = False
            self.live -= 1
            level.remove(entry)
        return rows

    def queued_entries(self) -> list[Entry]:
        return [entry for level in self._levels for entry in level if entry.in_queue]
