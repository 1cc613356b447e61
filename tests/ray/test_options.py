"""The Elasticsearch → Ray Serve option mapping and the stats arithmetic: pure functions, no Ray needed."""

from __future__ import annotations

import pytest

from engine.errors import InvalidInput
from engine.ray.options import BASE_REPLICA_MEMORY_BYTES, plan
from engine.ray.stats import combine


def test_allocations_become_replicas_with_their_threads_as_cpus() -> None:
    mapped = plan(number_of_allocations=3, threads_per_allocation=4, queue_capacity=500, model_bytes=1000)
    assert mapped.serve_options["num_replicas"] == 3
    assert "autoscaling_config" not in mapped.serve_options
    assert mapped.serve_options["ray_actor_options"] == {"num_cpus": 4, "memory": BASE_REPLICA_MEMORY_BYTES + 2000}
    assert mapped.serve_options["max_queued_requests"] == 500
    assert mapped.serve_options["max_ongoing_requests"] == mapped.config.max_batch_rows
    # every replica: one allocation with all the threads, unpinned (replicas on a node share its cores)
    replica = mapped.replica_config
    assert (replica["number_of_allocations"], replica["threads_per_allocation"], replica["pin_threads"]) == (1, 4, False)
    assert replica["queue_capacity"] == 500
    assert mapped.min_replicas is None


def test_adaptive_allocations_become_serve_autoscaling_and_may_reach_zero() -> None:
    mapped = plan(adaptive_allocations={"enabled": True, "min_number_of_allocations": 0,
                                        "max_number_of_allocations": 4, "evaluation_interval_s": 2.0,
                                        "scale_up_cooldown_s": 1.0, "scale_down_cooldown_s": 30.0})
    assert "num_replicas" not in mapped.serve_options
    autoscaling = mapped.serve_options["autoscaling_config"]
    assert autoscaling["min_replicas"] == 0 and autoscaling["max_replicas"] == 4
    assert autoscaling["initial_replicas"] == 1  # usable at once; scales to zero when idle
    assert autoscaling["look_back_period_s"] == 11.0 and "metrics_interval_s" not in autoscaling  # Serve's floor
    assert autoscaling["upscale_delay_s"] == 1.0 and autoscaling["downscale_delay_s"] == 30.0
    assert autoscaling["downscale_to_zero_delay_s"] == 30.0
    assert autoscaling["target_ongoing_requests"] == pytest.approx(0.9)
    assert mapped.min_replicas == 0


def test_adaptive_defaults_follow_elasticsearch() -> None:
    autoscaling = plan(adaptive_allocations={"enabled": True, "min_number_of_allocations": 2}).serve_options[
        "autoscaling_config"]
    assert (autoscaling["min_replicas"], autoscaling["initial_replicas"], autoscaling["max_replicas"]) == (2, 2, 32)
    assert "downscale_to_zero_delay_s" not in autoscaling
    assert autoscaling["downscale_delay_s"] == 300.0


def test_disabled_adaptive_keeps_the_fixed_count() -> None:
    mapped = plan(number_of_allocations=2, adaptive_allocations={"enabled": False})
    assert mapped.serve_options["num_replicas"] == 2 and "autoscaling_config" not in mapped.serve_options


def test_low_priority_reserves_no_cpu() -> None:
    mapped = plan(priority="low")
    assert mapped.serve_options["ray_actor_options"]["num_cpus"] == 0
    assert mapped.replica_config["priority"] == "low"


@pytest.mark.parametrize(("settings", "message"), [
    ({"threads_per_allocation": 3}, "power of 2"),
    ({"number_of_allocations": 0}, "number_of_allocations"),
    ({"number_of_allocations": 2, "adaptive_allocations": {"enabled": True}}, "cannot be set if adaptive"),
    ({"queue_capacity": 0}, "queue_capacity"),
    ({"priority": "low", "number_of_allocations": 2}, "must be 1 when"),
    ({"adaptive_allocations": {"enabled": True, "min_number_of_allocations": -1}}, "min_number_of_allocations"),
    ({"cpus": (0, 1)}, "cannot be set for a Ray deployment"),
    ({"no_such_setting": 1}, "unknown deployment settings"),
])
def test_settings_elasticsearch_refuses_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        plan(**settings)


def _replica(replica_id: str, count: int, average: float, hits: int = 0, **extra: object) -> dict:
    return {"replica_id": replica_id, "node_id": f"node-{replica_id}", "inference_count": count,
            "inference_cache_hit_count": hits, "average_inference_time_ms": average,
            "average_inference_time_ms_excluding_cache_hits": average, "number_of_pending_requests": 1,
            "last_access": 1000 + count, **extra}


def test_stats_sum_counts_and_weight_averages_over_replicas() -> None:
    stats = combine([_replica("b", 30, 10.0, error_count=2), _replica("a", 10, 2.0)],
                    front={"rejected_execution_count": 5, "timeout_count": 1, "error_count": 0},
                    settings={"deployment_id": "d"}, target_replicas=3)
    assert stats["inference_count"] == 40
    assert stats["average_inference_time_ms"] == pytest.approx((30 * 10.0 + 10 * 2.0) / 40)
    assert stats["rejected_execution_count"] == 5 and stats["timeout_count"] == 1 and stats["error_count"] == 2
    assert stats["number_of_pending_requests"] == 2
    assert stats["last_access"] == 1030
    assert stats["number_of_allocations"] == 2
    assert stats["allocation_status"] == {"allocation_count": 2, "target_allocation_count": 3, "state": "started"}
    assert [node["replica_id"] for node in stats["nodes"]] == ["a", "b"]
    assert stats["nodes"][1]["inference_count"] == 30 and stats["nodes"][1]["node_id"] == "node-b"


def test_stats_without_replicas() -> None:
    stats = combine([], front={}, settings={}, target_replicas=1)
    assert stats["inference_count"] == 0 and stats["average_inference_time_ms"] is None
    assert stats["allocation_status"]["state"] == "starting" and stats["nodes"] == []
    assert combine([], front={}, settings={}, target_replicas=0)["allocation_status"]["state"] == "fully_allocated"
