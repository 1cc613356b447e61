"""The shapes of the batches the batcher forms from queues of short and long texts.

The row cap the batcher applies depends on the lengths queued (``engine.scheduler.worth_joining``):
texts of one length fill a batch up to ``max_batch_rows``, while a text much shorter or longer than the
batch waits for a batch of its own length. Lengths only: no graph runs here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from engine.scheduler import BATCH_FIXED_COST_TOKENS, Entry, Request, RequestQueue, worth_joining


@dataclasses.dataclass(frozen=True)
class Row:
    """What the queue reads of a window: its token ids (their count is the row's length)."""

    input_ids: np.ndarray


def queue_of(lengths: list[int], max_batch_rows: int = 32, max_batch_tokens: int = 100_000) -> RequestQueue:
    queue = RequestQueue(capacity=len(lengths) + 1, max_batch_tokens=max_batch_tokens, grouping_window=256,
                         max_batch_rows=max_batch_rows)
    request = Request(len(lengths), None)
    entries = [Entry(request, index, [Row(np.ones(length, np.int64))], 1, None)
               for index, length in enumerate(lengths)]
    assert queue.offer(entries)
    return queue


def batch_lengths(queue: RequestQueue) -> list[list[int]]:
    batches = []
    while rows := queue.take_batch():
        batches.append(sorted(entry.lengths[row] for entry, row in rows))
    return batches


def test_texts_of_one_length_fill_batches_up_to_the_rows_the_user_set() -> None:
    assert batch_lengths(queue_of([12] * 70, max_batch_rows=32)) == [[12] * 32, [12] * 32, [12] * 6]
    assert batch_lengths(queue_of([12] * 7, max_batch_rows=3)) == [[12] * 3, [12] * 3, [12]]


def test_a_long_head_does_not_pad_short_texts_to_its_length() -> None:
    assert batch_lengths(queue_of([60, 8, 8, 9, 8, 9])) == [[60], [8, 8, 8, 9, 9]]


def test_one_long_text_waits_for_a_batch_of_its_own_rather_than_widen_short_ones() -> None:
    lengths = [10, 11, 10, 12, 64, 11, 10, 12]
    assert batch_lengths(queue_of(lengths)) == [[10, 10, 10, 11, 11, 12, 12], [64]]


def test_a_lone_very_short_text_still_joins_when_a_batch_of_its_own_would_cost_more() -> None:
    # two 4-token rows cost less padded to 6 than as two batches, each paying the fixed part
    assert batch_lengths(queue_of([4, 6])) == [[4, 6]]


def test_a_shallow_queue_of_short_texts_still_feeds_two_allocations() -> None:
    queue = queue_of([14, 15, 13, 14, 16, 15, 14, 13], max_batch_rows=4)
    first, second = queue.take_batch(), queue.take_batch()
    assert len(first) == len(second) == 4
    assert queue.take_batch() == [] and queue.live == 0


def test_the_token_budget_still_bounds_a_batch_of_short_texts() -> None:
    assert batch_lengths(queue_of([20] * 10, max_batch_rows=32, max_batch_tokens=100)) == [[20] * 5, [20] * 5]


def test_a_text_joins_exactly_when_it_lowers_the_cost_per_real_token() -> None:
    fixed = BATCH_FIXED_COST_TOKENS
    for rows, longest in ((1, 8), (5, 20), (31, 40)):
        real = rows * longest
        for length in range(1, 3 * longest):
            wider = max(longest, length)
            before = (fixed + longest * rows) / real
            after = (fixed + wider * (rows + 1)) / (real + length)
            assert worth_joining(rows, longest, real, 1, wider, length) == (after <= before)
        assert worth_joining(rows, longest, real, 1, longest, longest)  # one more of the same length
