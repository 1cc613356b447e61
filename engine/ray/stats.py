"""One deployment's stats from its replicas' stats: Elasticsearch's totals plus one ``nodes[]`` entry each.

Pure functions (no Ray), so the arithmetic is unit-tested. Counts add up over replicas; averages are
weighted by the counts they average; ``last_access`` is the latest; ``peak_throughput_per_minute`` is
the sum of the replicas' peaks (an upper bound: their peaks need not fall in the same minute). The
front end adds what only it sees: requests Serve's queue rejected (429) and timers that ran out before
a replica answered (408). Counters of a replica that is gone (scaled down, or lost with its node) leave
the totals with it, as an Elasticsearch node's do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..stats import allocation_state

SUMMED = ("inference_count", "inference_cache_hit_count", "throughput_last_minute",
          "inference_cache_hit_count_last_minute", "peak_throughput_per_minute", "rejected_execution_count",
          "timeout_count", "error_count", "number_of_pending_requests")
# average key → the count it is an average over
AVERAGED = {
    "average_inference_time_ms": "inference_count",
    "average_inference_time_ms_excluding_cache_hits": "misses",
    "average_inference_time_ms_last_minute": "throughput_last_minute",
}
# what each nodes[] entry keeps of its replica's stats
NODE_KEYS = (*SUMMED, *AVERAGED, "last_access", "start_time", "state", "node_id", "replica_id", "pid",
             "number_of_allocations", "threads_per_allocation")


def _weight(stats: Mapping[str, Any], count_key: str) -> int:
    if count_key == "misses":
        return int(stats.get("inference_count") or 0) - int(stats.get("inference_cache_hit_count") or 0)
    return int(stats.get(count_key) or 0)


def combine(replicas: Sequence[Mapping[str, Any]], *, front: Mapping[str, int],
            settings: Mapping[str, Any], target_replicas: int) -> dict[str, Any]:
    """The deployment's stats under ``Deployment.stats`` names, with ``nodes`` = one entry per replica.

    Args:
        replicas: each running replica's ``Allocation.stats()``.
        front: counts the front end kept (``rejected_execution_count``, ``timeout_count``,
            ``error_count``) for requests no replica counted.
        settings: the deployment-level fields (deployment_id, model_id, state, start_time,
            threads_per_allocation, queue_capacity, cache_size, priority, adaptive_allocations...).
        target_replicas: replicas Serve is starting or running.
    """
    totals: dict[str, Any] = {key: sum(int(stats.get(key) or 0) for stats in replicas) for key in SUMMED}
    for key in ("rejected_execution_count", "timeout_count", "error_count"):
        totals[key] += int(front.get(key, 0))
    for key, count_key in AVERAGED.items():
        weight = sum(_weight(stats, count_key) for stats in replicas if stats.get(key) is not None)
        weighted = sum(float(stats[key]) * _weight(stats, count_key) for stats in replicas
                       if stats.get(key) is not None)
        totals[key] = weighted / weight if weight else None
    accesses = [int(stats["last_access"]) for stats in replicas if stats.get("last_access") is not None]
    totals["last_access"] = max(accesses) if accesses else None
    running = len(replicas)
    result: dict[str, Any] = dict(settings)
    result.update(totals)
    result["number_of_allocations"] = running
    result["allocation_status"] = {"allocation_count": running, "target_allocation_count": target_replicas,
                                   "state": allocation_state(target_replicas, running)}
    result["nodes"] = [{key: stats.get(key) for key in NODE_KEYS}
                       for stats in sorted(replicas, key=lambda item: str(item.get("replica_id")))]
    return result
