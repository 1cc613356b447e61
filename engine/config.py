"""Deployment settings and their rules: the one validator of what ``_start``, ``_update`` and
``engine.load`` may ask for.

Elasticsearch validates a ``_start`` request in ``StartTrainedModelDeploymentAction.Request.validate``
and an ``_update`` in ``UpdateTrainedModelDeploymentAction``; this module holds those rules, with their
messages (ELASTIC_REFERENCE.md §6.1), in the order Elasticsearch checks them. The HTTP server only maps
wire names (``model_threads``, ``inference_threads``, query-string text) onto these fields; a second
backend (Ray) validates through the same class, so a setting gets the same answer everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .adaptive import AdaptiveAllocations
from .errors import InvalidInput
from .units import parse_byte_size

DEPLOYMENT_PRIORITIES = ("normal", "low")
MAX_THREADS_PER_ALLOCATION = 32
MAX_QUEUE_CAPACITY = 100_000  # inclusive: Elasticsearch rejects ``queue_capacity > 100000``
# Measured on all-MiniLM-L6-v2 int8, one thread, ~110-token passages (bench/RESULTS.md): 16 rows (~1.8k
# padded tokens) ran 41 docs/s, 32 rows 36, 64 rows 34: past a few thousand tokens the activations fall out
# of cache and throughput drops, so the budget sits at the knee rather than TEI's 16384.
DEFAULT_MAX_BATCH_TOKENS = 2048


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class DeploymentConfig:
    """How a deployment runs; validated as Elasticsearch validates ``_start`` (ELASTIC_REFERENCE.md §6.1).

    Attributes:
        number_of_allocations: workers, each with its own session and cores. None: 1, or the adaptive
            minimum when adaptive allocations are enabled (then it must stay None, as in ES).
        threads_per_allocation: intra-op threads per allocation, a power of 2 up to 32.
        queue_capacity: texts that may wait, 1..100000; beyond it requests get QueueFull (429).
        priority: ``normal``, or ``low`` (1 allocation × 1 thread, workers at the lowest CPU priority).
        cache_size: inference-cache bytes (int or ES size string such as ``"10mb"``). None: the graph
            file's size, Elasticsearch's default; 0 (or ``"0b"``): no cache.
        max_batch_tokens: the padded-token budget of one batch (``longest row × rows``). Larger batches
            amortise per-call overhead until the model is compute bound; smaller ones cut latency and
            memory. A single row longer than the budget still runs, alone.
        adaptive_allocations: ``{enabled, min_number_of_allocations, max_number_of_allocations}`` (plus
            the timing knobs of :class:`engine.adaptive.AdaptiveAllocations`), or None.
        deployment_id: the id reported in stats; None: the package directory's name.
        cpus: the CPUs the deployment may use (0-based ids); None: ``os.sched_getaffinity(0)``.
        pin_threads: pin every allocation's threads to its cores. Turn off when other processes share
            the cores and the OS should balance.
        max_batch_rows: the most rows in one batch. With several allocations and short texts a token
            budget alone lets one worker swallow the whole queue while the others idle; 32 rows keeps
            every allocation fed (measured: NER on CoNLL sentences, 2 × 1, bench/RESULTS.md). Below it
            the batcher also leaves out a text that would make the batch cost more per real token
            (``engine.scheduler.worth_joining``), so batches of mixed lengths stop earlier; wider caps
            do not pay for short texts (bench/RESULTS.md, "Row caps that depend on length").
        grouping_window: how many queued texts behind the head the batcher may pick from to group
            similar lengths (0: strict FIFO). The head always goes first, so a wide window costs no
            text more than one batch of waiting; 256 lets one bulk request be sorted by length.
        stats_period_s: the length of a stats "minute" (tests shorten it).
        session_options: extra ONNX Runtime options, see :data:`engine.session.EXPOSED_OPTIONS`.
    """

    number_of_allocations: int | None = None
    threads_per_allocation: int = 1
    queue_capacity: int = 1024
    priority: str = "normal"
    cache_size: int | str | None = None
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    adaptive_allocations: AdaptiveAllocations | Mapping[str, Any] | None = None
    deployment_id: str | None = None
    cpus: tuple[int, ...] | None = None
    pin_threads: bool = True
    max_batch_rows: int = 32
    grouping_window: int = 256
    stats_period_s: float = 60.0
    session_options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        adaptive = AdaptiveAllocations.from_value(self.adaptive_allocations)
        object.__setattr__(self, "adaptive_allocations", adaptive)
        check_allocations(self.number_of_allocations, adaptive)
        threads = self.threads_per_allocation
        if not _is_int(threads) or threads < 1:
            raise InvalidInput(f"[threads_per_allocation] must be a positive integer, got [{threads}]")
        if threads > MAX_THREADS_PER_ALLOCATION or threads & (threads - 1):
            raise InvalidInput(
                f"[threads_per_allocation] must be a power of 2 less than or equal to {MAX_THREADS_PER_ALLOCATION}"
            )
        capacity = self.queue_capacity
        if not _is_int(capacity) or capacity < 1:
            raise InvalidInput(f"[queue_capacity] must be a positive integer, got [{capacity}]")
        if capacity > MAX_QUEUE_CAPACITY:
            raise InvalidInput(f"[queue_capacity] must be less than {MAX_QUEUE_CAPACITY}")
        if self.priority not in DEPLOYMENT_PRIORITIES:
            raise InvalidInput(f"[priority] must be one of [{', '.join(DEPLOYMENT_PRIORITIES)}]; got [{self.priority}]")
        check_low_priority(self.priority, self.number_of_allocations, adaptive)
        if self.priority == "low" and threads != 1:
            raise InvalidInput("[threads_per_allocation] must be 1 when [priority] is low")
        if self.cache_size is not None:
            parse_byte_size(self.cache_size, "cache_size")
        for name in ("max_batch_tokens", "max_batch_rows"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise InvalidInput(f"[{name}] must be a positive integer, got [{value}]")
        if not _is_int(self.grouping_window) or self.grouping_window < 0:
            raise InvalidInput(f"[grouping_window] must be a non-negative integer, got [{self.grouping_window}]")
        if not isinstance(self.stats_period_s, (int, float)) or self.stats_period_s <= 0:
            raise InvalidInput(f"[stats_period_s] must be positive, got [{self.stats_period_s}]")
        if self.cpus is not None:
            cpus = tuple(self.cpus)
            if not cpus or not all(_is_int(cpu) and cpu >= 0 for cpu in cpus):
                raise InvalidInput(f"[cpus] must be a non-empty list of CPU ids, got [{self.cpus}]")
            object.__setattr__(self, "cpus", tuple(sorted(set(cpus))))

    @property
    def initial_allocations(self) -> int:
        adaptive = self.adaptive_allocations
        if self.number_of_allocations is not None:
            return self.number_of_allocations
        if isinstance(adaptive, AdaptiveAllocations) and adaptive.enabled:
            return adaptive.minimum
        return 1

    @property
    def cache_bytes(self) -> int | None:
        """``cache_size`` in bytes; None: the default (the graph file's size)."""
        return None if self.cache_size is None else parse_byte_size(self.cache_size, "cache_size")


def check_allocations(number_of_allocations: Any, adaptive: AdaptiveAllocations | None) -> None:
    """``number_of_allocations``: at least 1, and unset while adaptive allocations are enabled.

    Raises:
        InvalidInput: with Elasticsearch's messages.
    """
    if number_of_allocations is None:
        return
    if not _is_int(number_of_allocations) or number_of_allocations < 1:
        raise InvalidInput(f"[number_of_allocations] must be a positive integer, got [{number_of_allocations}]")
    if adaptive is not None and adaptive.enabled:
        raise InvalidInput("[number_of_allocations] cannot be set if adaptive allocations is enabled")


def check_low_priority(priority: str, number_of_allocations: int | None,
                       adaptive: AdaptiveAllocations | None) -> None:
    """A ``low`` priority deployment runs exactly one allocation, so it cannot scale either."""
    if priority != "low":
        return
    if (number_of_allocations or 1) != 1 or (adaptive is not None and adaptive.enabled):
        raise InvalidInput("[number_of_allocations] must be 1 when [priority] is low")


def check_update(config: DeploymentConfig, adaptive_enabled_now: bool, number_of_allocations: Any,
                 adaptive_allocations: AdaptiveAllocations | Mapping[str, Any] | None
                 ) -> AdaptiveAllocations | None:
    """Validate an ``_update`` of a running deployment; returns the parsed adaptive settings.

    Args:
        config: the deployment's settings.
        adaptive_enabled_now: whether adaptive allocations are on before this update.

    Raises:
        InvalidInput: a bad count, a count while adaptive allocations are (or become) enabled, or a
            change of a ``low`` priority deployment.
    """
    adaptive = AdaptiveAllocations.from_value(adaptive_allocations)
    if number_of_allocations is not None:
        enabled = adaptive.enabled if adaptive is not None else adaptive_enabled_now
        check_allocations(number_of_allocations, AdaptiveAllocations() if enabled else None)
    check_low_priority(config.priority, number_of_allocations, adaptive)
    return adaptive
