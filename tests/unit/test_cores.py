"""Core sets: the allowed set, ml-cpp's clamping, disjoint assignment, thread pinning, ORT's format."""

from __future__ import annotations

import os
import threading

import pytest

from engine.cores import (
    CoreAllocator,
    CoreLoad,
    allowed_cpus,
    clamp_allocations,
    clamp_thread_settings,
    ort_thread_affinities,
    pin_current_thread,
)


def test_allowed_cpus_is_the_affinity_mask_not_cpu_count() -> None:
    assert allowed_cpus() == tuple(sorted(os.sched_getaffinity(0)))


@pytest.mark.parametrize(("hardware", "allocations", "threads", "expected"), [
    (16, 2, 4, (2, 4)),      # fits: unchanged
    (16, 4, 8, (4, 4)),      # threads clamp to ceil(16 / 4)
    (2, 4, 1, (2, 1)),       # allocations clamp to hardware threads
    (5, 3, 4, (3, 2)),       # ceil(5 / 3) = 2: 6 threads on 5 cpus, as ml-cpp allows
    (0, 2, 2, (1, 1)),       # no hardware reported: 1
    (8, 0, 0, (1, 1)),       # at least one of each
    (64, 1, 32, (1, 32)),
])
def test_start_clamping_follows_ml_cpp(hardware: int, allocations: int, threads: int,
                                       expected: tuple[int, int]) -> None:
    assert clamp_thread_settings(hardware, allocations, threads) == expected


@pytest.mark.parametrize(("hardware", "threads", "allocations", "expected"), [
    (16, 4, 3, 3), (16, 4, 9, 4), (6, 4, 5, 2), (1, 1, 3, 1), (8, 2, 0, 1),
])
def test_runtime_clamping_of_a_new_allocation_count(hardware: int, threads: int, allocations: int,
                                                    expected: int) -> None:
    assert clamp_allocations(hardware, threads, allocations) == expected


def test_allocator_hands_out_disjoint_sets_and_takes_them_back() -> None:
    allocator = CoreAllocator([8, 9, 10, 11, 12, 13, 2, 3], CoreLoad())  # a faked cpuset with a hole
    first, second, third = (allocator.acquire(2) for _ in range(3))
    assert (first, second, third) == ((2, 3), (8, 9), (10, 11))
    assert allocator.acquire(4) is None  # only 12, 13 left: run unpinned rather than share
    allocator.release(second)
    assert allocator.free == (8, 9, 12, 13)
    assert allocator.acquire(4) == (8, 9, 12, 13)
    allocator.release(first)
    with pytest.raises(ValueError):
        allocator.release(first)  # released twice
    with pytest.raises(ValueError):
        allocator.release((99,))
    allocator.release(None)
    with pytest.raises(ValueError):
        CoreAllocator([])


def test_deployments_of_one_process_spread_over_the_cores() -> None:
    """Two deployments' allocators over the same cores: the second starts where the first is not,
    and a core comes back to the pool of the process when its allocation stops."""
    load = CoreLoad()
    first, second = CoreAllocator([0, 1, 2, 3], load), CoreAllocator([0, 1, 2, 3], load)
    assert first.acquire(1) == (0,)
    assert second.acquire(1) == (1,)
    assert second.acquire(2) == (2, 3)
    assert first.acquire(2) == (1, 2)  # 1 to 3 are each used once: the lowest ids
    assert [load.pinned(cpu) for cpu in range(4)] == [1, 2, 2, 1]
    second.release((1,))
    assert load.pinned(1) == 1
    third = CoreAllocator([0, 1, 2, 3], load)
    assert third.acquire(1) == (0,)  # 0, 1 and 3 are used once each, 2 twice
    assert third.acquire(1) == (1,)


def test_ort_affinity_string_is_one_based_and_skips_the_calling_thread() -> None:
    assert ort_thread_affinities((0, 1, 2, 3), 4) == "2;3;4"
    assert ort_thread_affinities((6, 7), 2) == "8"
    assert ort_thread_affinities((5,), 1) is None
    assert ort_thread_affinities((1, 2, 3, 4), 2) == "3"
    with pytest.raises(ValueError):
        ort_thread_affinities((1,), 2)


def test_pinning_applies_to_the_calling_thread_only() -> None:
    before = os.sched_getaffinity(0)
    target = {min(before)}
    seen: list[set[int]] = []

    def worker() -> None:
        pin_current_thread(sorted(target))
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [target]
    assert os.sched_getaffinity(0) == before
