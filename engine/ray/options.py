"""Elasticsearch deployment settings mapped onto Ray Serve options: a pure function, no Ray import.

The mapping, setting by setting (README "Scaling out" repeats it for users):

================================  =================================================================
Elasticsearch (``_start``)         Ray Serve
================================  =================================================================
one allocation                    one Serve replica (an actor) running one engine deployment of
                                  1 allocation × ``threads_per_allocation``: one ONNX Runtime session
                                  with exactly that many intra-op threads, its own bounded queue,
                                  batcher and cache
``threads_per_allocation``        ``ray_actor_options.num_cpus`` (Ray never places more replicas on a
                                  node than its CPUs hold, so nothing is oversubscribed) and the
                                  session's ``intra_op_num_threads``; threads are *not* pinned to
                                  cores, since replicas sharing a node do not partition its cores
per-allocation memory             ``ray_actor_options.memory`` = 240 MB + 2 × the graph (Elasticsearch's
                                  rule for a model's native memory)
``number_of_allocations``         ``num_replicas``; ``update`` changes it in place
``adaptive_allocations``          ``autoscaling_config``: ``min_replicas`` (0 allowed: scale to zero;
                                  the first request then waits for a cold start), ``max_replicas``,
                                  ``target_ongoing_requests`` 0.9 (Elasticsearch scales up past 0.9 busy
                                  allocations each), ``look_back_period_s`` = the evaluation interval
                                  (over 10 s, Serve's floor; how often replicas report their load is Ray's
                                  ``RAY_SERVE_*_AUTOSCALING_METRIC_PUSH_INTERVAL_S``, default 10 s),
                                  ``upscale_delay_s`` / ``downscale_delay_s`` (and the delay to zero) =
                                  the scale-up / scale-down cooldowns
``queue_capacity``                ``max_queued_requests`` (requests waiting for a replica; beyond it
                                  Serve's back-pressure error, answered 429) and the queue of every
                                  replica's engine deployment (texts; beyond it 429 as on one node)
``priority: low``                 one replica × one thread with ``num_cpus: 0`` (it reserves no CPU, as
                                  low-priority allocations take no processor in Elasticsearch) whose
                                  threads run at the lowest OS priority; give it its own deployment
``cache_size``                    each replica's own inference cache (not shared across replicas)
================================  =================================================================

Requests keep their ``priority`` (``high`` first) inside a replica's queue; Serve itself routes
without priorities. ``max_ongoing_requests`` (requests one replica works on at once) is the batcher's
row cap, so a replica can fill a batch from concurrent callers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..adaptive import SCALE_UP_THRESHOLD, AdaptiveAllocations
from ..config import DeploymentConfig
from ..errors import InvalidInput

# Elasticsearch's estimate of a model's native memory: 240 MB + twice the model (ELASTIC_REFERENCE.md §6.2).
BASE_REPLICA_MEMORY_BYTES = 240 * 1024 * 1024

# Serve's AutoscalingConfig.metrics_interval_s default; the field is deprecated (the push intervals are now
# RAY_SERVE_*_AUTOSCALING_METRIC_PUSH_INTERVAL_S), but the look-back must still exceed it.
SERVE_METRICS_INTERVAL_S = 10.0

# The engine settings a replica's own deployment takes from the caller; the rest are fixed by the mapping.
_REPLICA_KEYS = ("queue_capacity", "cache_size", "max_batch_tokens", "max_batch_rows", "grouping_window",
                 "stats_period_s", "session_options", "priority")


@dataclasses.dataclass(frozen=True)
class RayPlan:
    """What :func:`plan` decided: the engine config each replica runs and the Serve options around it.

    Attributes:
        config: the validated engine settings (the whole deployment's, as one node would take them).
        replica_config: keyword arguments of the :class:`DeploymentConfig` inside every replica
            (1 allocation, unpinned).
        serve_options: keyword arguments for ``serve.deployment(...)`` / ``Deployment.options``.
        min_replicas: the adaptive minimum, which may be 0 (None: a fixed replica count).
    """

    config: DeploymentConfig
    replica_config: dict[str, Any]
    serve_options: dict[str, Any]
    min_replicas: int | None


def _adaptive(value: AdaptiveAllocations | Mapping[str, Any] | None) -> tuple[AdaptiveAllocations | None, int]:
    """Validate the adaptive block with the engine's own rules, except that Ray may scale to zero."""
    if value is None:
        return None, 0
    if isinstance(value, AdaptiveAllocations):
        return value, value.minimum
    if not isinstance(value, Mapping):
        raise InvalidInput(f"[adaptive_allocations] must be an object, got [{value!r}]")
    minimum = value.get("min_number_of_allocations")
    to_zero = minimum == 0 and not isinstance(minimum, bool)
    settings = AdaptiveAllocations.from_value({**value, "min_number_of_allocations": 1} if to_zero else value)
    assert settings is not None
    return settings, 0 if to_zero else settings.minimum


def autoscaling_config(adaptive: AdaptiveAllocations, min_replicas: int) -> dict[str, Any]:
    """Serve's ``autoscaling_config`` for Elasticsearch's adaptive allocations (see the module table)."""
    interval = adaptive.evaluation_interval_s
    config: dict[str, Any] = {
        "min_replicas": min_replicas,
        "initial_replicas": max(min_replicas, 1),
        "max_replicas": adaptive.maximum,
        "target_ongoing_requests": SCALE_UP_THRESHOLD,
        # Serve refuses (soon) a look-back not longer than its 10 s metrics interval field
        "look_back_period_s": max(interval, SERVE_METRICS_INTERVAL_S + 1.0),
        "upscale_delay_s": adaptive.scale_up_cooldown_s,
        "downscale_delay_s": adaptive.scale_down_cooldown_s,
    }
    if min_replicas == 0:
        config["downscale_to_zero_delay_s"] = adaptive.scale_down_cooldown_s
    return config


def plan(*, number_of_allocations: int | None = 1, threads_per_allocation: int = 1,
         adaptive_allocations: AdaptiveAllocations | Mapping[str, Any] | None = None,
         queue_capacity: int = 1024, priority: str = "normal", cache_size: int | str | None = None,
         model_bytes: int = 0, **engine_settings: Any) -> RayPlan:
    """Map Elasticsearch's deployment settings onto a Serve deployment.

    The settings are validated by :class:`DeploymentConfig` (the one validator), except that an
    adaptive minimum of 0 is accepted: Serve can scale to zero.

    Args:
        number_of_allocations: Serve replicas; must be None when adaptive allocations are enabled.
        threads_per_allocation: CPUs reserved per replica and the intra-op threads of its session.
        adaptive_allocations: ``{enabled, min_number_of_allocations, max_number_of_allocations, ...}``.
        queue_capacity: Serve's ``max_queued_requests`` and each replica's engine queue.
        priority: ``normal`` or ``low``.
        cache_size: each replica's inference-cache size (None: the graph's size).
        model_bytes: the graph file's size, for the replica's memory reservation.
        **engine_settings: further :class:`DeploymentConfig` fields for the replicas' deployments
            (``max_batch_tokens``, ``max_batch_rows``, ``grouping_window``, ``stats_period_s``, ...).

    Raises:
        InvalidInput: a setting Elasticsearch (or the engine) refuses.
    """
    adaptive, min_replicas = _adaptive(adaptive_allocations)
    enabled = adaptive is not None and adaptive.enabled
    if enabled and number_of_allocations == 1:
        number_of_allocations = None  # the default count gives way to adaptive allocations, as in ES
    unknown = sorted(set(engine_settings) - {field.name for field in dataclasses.fields(DeploymentConfig)})
    if unknown:
        raise InvalidInput(f"unknown deployment settings {unknown}")
    fixed = sorted(set(engine_settings) & {"cpus", "pin_threads", "deployment_id"})
    if fixed:
        raise InvalidInput(f"{fixed} cannot be set for a Ray deployment: Ray places replicas and their threads")
    config = DeploymentConfig(number_of_allocations=number_of_allocations,
                              threads_per_allocation=threads_per_allocation, adaptive_allocations=adaptive,
                              queue_capacity=queue_capacity, priority=priority, cache_size=cache_size,
                              **engine_settings)
    low = config.priority == "low"
    replica_config = {key: getattr(config, key) for key in _REPLICA_KEYS}
    replica_config.update(number_of_allocations=1, threads_per_allocation=config.threads_per_allocation,
                          pin_threads=False)
    options: dict[str, Any] = {
        "ray_actor_options": {
            "num_cpus": 0 if low else config.threads_per_allocation,
            "memory": BASE_REPLICA_MEMORY_BYTES + 2 * model_bytes,
        },
        "max_queued_requests": config.queue_capacity,
        "max_ongoing_requests": config.max_batch_rows,
    }
    if enabled:
        assert adaptive is not None
        options["autoscaling_config"] = autoscaling_config(adaptive, min_replicas)
        return RayPlan(config, replica_config, options, min_replicas)
    options["num_replicas"] = config.initial_allocations
    return RayPlan(config, replica_config, options, None)
