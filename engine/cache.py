"""The inference cache: per-text graph outputs keyed on the text's rows and its task config.

Elasticsearch's native process keeps a memory-bounded cache keyed on the full request content
(ELASTIC_REFERENCE.md §5.6). We key on what decides the outputs: every row's token ids and token
types plus ``TaskConfig.cache_key()`` (the config is in the key because two configs may window the
same text differently). We store graph outputs, not finished results, so a hit still goes through
``task.finish``. Eviction is least-recently-used (Elasticsearch uses LFU; LRU needs no frequency
bookkeeping and behaves the same for the repeated-query traffic a cache helps with), bounded by the
bytes of the stored arrays plus a fixed per-entry overhead. Errors are never cached.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np

from .batch import Row

# Python objects around each entry (key tuple, list, tuples, array headers): a rough constant so a
# cache of many tiny outputs still respects its bound.
ENTRY_OVERHEAD_BYTES = 512

Outputs = list[tuple[np.ndarray, ...]]


def cache_key(windows: Sequence[Row], config_key: Hashable) -> tuple[Hashable, bytes]:
    """The cache key of one text: its config key and a digest of every row's ids and token types."""
    digest = hashlib.blake2b(digest_size=20)
    for window in windows:
        input_ids = np.ascontiguousarray(window.input_ids, dtype=np.int64)
        digest.update(len(input_ids).to_bytes(8, "little"))
        digest.update(input_ids.tobytes())
        digest.update(np.ascontiguousarray(window.token_type_ids, dtype=np.int64).tobytes())
    return config_key, digest.digest()


def _outputs_bytes(outputs: Outputs) -> int:
    return ENTRY_OVERHEAD_BYTES + sum(array.nbytes for row in outputs for array in row)


def _copy(outputs: Outputs) -> Outputs:
    return [tuple(array.copy() for array in row) for row in outputs]


class InferenceCache:
    """A thread-safe LRU map from :func:`cache_key` to per-text outputs, bounded by bytes.

    ``get`` and ``put`` copy the arrays, so neither the cache nor a caller can change what the other
    holds.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("an inference cache needs a positive size; size 0 means no cache")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Outputs, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def get(self, key: Hashable) -> Outputs | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return _copy(found[0])

    def put(self, key: Hashable, outputs: Outputs) -> None:
        """Store a copy of ``outputs``; an entry larger than the whole cache is not stored."""
        size = _outputs_bytes(outputs)
        if size > self.max_bytes:
            return
        stored = _copy(outputs)
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous[1]
            while self._entries and self._bytes + size > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted
            self._entries[key] = (stored, size)
            self._bytes += size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
