"""The Prometheus series of ``engine serve``, on ``prometheus-client``.

Three kinds of series: counters (HTTP requests by route and status, inference calls by outcome and
texts per deployment), a latency histogram per deployment, and gauges read from every deployment's
``stats()`` at scrape time (queue depth, allocations, texts answered), so they are never stale. Each
server has its own registry (not the library's global one), so several apps in one process (tests, a
Ray driver) do not share series. The client library writes the exposition format and answers
OpenMetrics when a scraper asks for it; its per-call cost (a lock and an add) is noise next to an
inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

# Seconds. Spans a cached hit (~1 ms) to a long batch on a busy CPU (~10 s), roughly ×2.5 apart,
# which is the resolution an operator needs to tell "queueing" from "one slow batch".
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

# gauge name → (the deployment stats key it reads, help text)
DEPLOYMENT_GAUGES: dict[str, tuple[str, str]] = {
    "engine_deployment_queue_depth": ("number_of_pending_requests", "Texts queued or running."),
    "engine_deployment_allocations": ("number_of_allocations", "Allocations serving."),
    "engine_deployment_inference_count": ("inference_count", "Texts answered (the deployment's stats)."),
}

Deployments = Callable[[], Iterable[tuple[str, Any]]]


class DeploymentGauges(Collector):
    """Gauges per deployment, read from ``stats()`` when Prometheus scrapes."""

    def __init__(self, deployments: Deployments) -> None:
        self._deployments = deployments

    def collect(self) -> Iterator[Metric]:
        stats = [(name, deployment.stats()) for name, deployment in self._deployments()]
        for gauge, (key, help_text) in DEPLOYMENT_GAUGES.items():
            family = GaugeMetricFamily(gauge, help_text, labels=("deployment",))
            for name, values in sorted(stats, key=lambda item: item[0]):
                family.add_metric((name,), float(values.get(key, 0)))
            yield family


class ServerMetrics:
    """The series ``engine serve`` exports.

    Args:
        deployments: returns the running ``(deployment_id, deployment)`` pairs when called.
    """

    def __init__(self, deployments: Deployments) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "engine_http_requests", "HTTP requests by route template, method and status.",
            ("route", "method", "status"), registry=self.registry)
        self._inferences = Counter(
            "engine_inference_requests", "Inference calls per deployment by outcome (ok, rejected, timeout, error).",
            ("deployment", "outcome"), registry=self.registry)
        self._documents = Counter(
            "engine_inference_documents", "Texts sent to each deployment.", ("deployment",), registry=self.registry)
        self._latency = Histogram(
            "engine_inference_duration_seconds",
            "Wall time of one inference call (queueing, tokenisation and post-processing included).",
            ("deployment",), buckets=DEFAULT_LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(DeploymentGauges(deployments))

    def record_request(self, route: str, method: str, status: int) -> None:
        self._requests.labels(route, method, str(status)).inc()

    def record_documents(self, deployment_id: str, count: int) -> None:
        self._documents.labels(deployment_id).inc(count)

    def record_inference(self, deployment_id: str, outcome: str, seconds: float) -> None:
        """One inference call ended: ``ok``, ``rejected``, ``timeout`` or ``error``, after ``seconds``."""
        self._inferences.labels(deployment_id, outcome).inc()
        self._latency.labels(deployment_id).observe(seconds)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition for a scrape with this ``Accept`` header: ``(body, content type)``."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
