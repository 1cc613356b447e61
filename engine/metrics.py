"""Prometheus metrics in the text exposition format (version 0.0.4), with no client library.

The server needs three kinds of series: counters (requests by route and status, documents by
deployment), latency histograms per deployment, and gauges read at scrape time (queue depth,
allocations). That is small enough to write here rather than add a dependency to the ``server``
extra; the format is documented at https://prometheus.io/docs/instrumenting/exposition_formats/.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# Seconds. Spans a cached hit (~1 ms) to a long batch on a busy CPU (~10 s), roughly ×2.5 apart,
# which is the resolution an operator needs to tell "queueing" from "one slow batch".
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

LabelValues = tuple[str, ...]


def escape_label_value(value: str) -> str:
    """Escape a label value as the exposition format requires (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_number(value: float) -> str:
    """Render a sample value: integers without a fraction, infinities as Prometheus spells them."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _label_text(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{name}="{escape_label_value(value)}"' for name, value in zip(names, values, strict=True)]
    if extra is not None:
        pairs.append(f'{extra[0]}="{escape_label_value(extra[1])}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Metric(ABC):
    kind = "untyped"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name = name
        self.help_text = help_text
        self.label_names = tuple(label_names)
        self._lock = threading.Lock()

    def _key(self, labels: Sequence[str]) -> LabelValues:
        if len(labels) != len(self.label_names):
            raise ValueError(f"metric {self.name} takes labels {self.label_names}; got {tuple(labels)}")
        return tuple(str(label) for label in labels)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} {self.kind}"]

    @abstractmethod
    def samples(self) -> list[str]:
        """The sample lines of this metric, without the HELP/TYPE header."""

    def render(self) -> list[str]:
        return self.header() + self.samples()


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, label_names)
        self._values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter can only go up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_label_text(self.label_names, key)} {format_number(value)}" for key, value in items]


class Histogram(_Metric):
    """Cumulative buckets, a sum and a count per label set (Prometheus' ``histogram`` type)."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = (),
                 buckets: Iterable[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        super().__init__(name, help_text, label_names)
        self.buckets = tuple(sorted(float(bound) for bound in buckets))
        if not self.buckets:
            raise ValueError("a histogram needs at least one bucket")
        self._series: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, totals = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            index = next((i for i, bound in enumerate(self.buckets) if value <= bound), len(self.buckets))
            counts[index] += 1
            totals[0] += value

    def count(self, *labels: str) -> int:
        with self._lock:
            series = self._series.get(self._key(labels))
            return sum(series[0]) if series else 0

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted((key, (list(counts), totals[0])) for key, (counts, totals) in self._series.items())
        lines: list[str] = []
        for key, (counts, total) in items:
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                labels = _label_text(self.label_names, key, ("le", format_number(bound)))
                lines.append(f"{self.name}_bucket{labels} {cumulative}")
            labels = _label_text(self.label_names, key)
            lines.append(f"{self.name}_sum{labels} {format_number(total)}")
            lines.append(f"{self.name}_count{labels} {cumulative}")
        return lines


class Gauge(_Metric):
    """A value read at scrape time from a callback, so it is never stale (queue depth, allocations)."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str],
                 read: Callable[[], Iterable[tuple[LabelValues, float]]]) -> None:
        super().__init__(name, help_text, label_names)
        self._read = read

    def samples(self) -> list[str]:
        return [
            f"{self.name}{_label_text(self.label_names, self._key(key))} {format_number(value)}"
            for key, value in sorted(self._read())
        ]


class Registry:
    """The metrics of one server, rendered together for ``GET /metrics``."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        if any(existing.name == metric.name for existing in self._metrics):
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """The series ``engine serve`` exports: HTTP requests by route, and per deployment the inference
    outcomes, texts and latency, plus gauges read from each deployment's ``stats()`` at scrape time.

    Args:
        deployments: returns the running ``(deployment_id, deployment)`` pairs when called.
    """

    def __init__(self, deployments: Callable[[], Iterable[tuple[str, Any]]]) -> None:
        self._deployments = deployments
        self.registry = Registry()
        self.requests = self.registry.add(Counter(
            "engine_http_requests_total", "HTTP requests by route template, method and status.",
            ("route", "method", "status")))
        self.inferences = self.registry.add(Counter(
            "engine_inference_requests_total",
            "Inference calls per deployment by outcome (ok, rejected, timeout, error).",
            ("deployment", "outcome")))
        self.documents = self.registry.add(Counter(
            "engine_inference_documents_total", "Texts sent to each deployment.", ("deployment",)))
        self.latency = self.registry.add(Histogram(
            "engine_inference_duration_seconds",
            "Wall time of one inference call (queueing, tokenisation and post-processing included).",
            ("deployment",)))
        for name, key, help_text in (
            ("engine_deployment_queue_depth", "number_of_pending_requests", "Texts queued or running."),
            ("engine_deployment_allocations", "number_of_allocations", "Allocations serving."),
            ("engine_deployment_inference_count", "inference_count", "Texts answered (the deployment's stats)."),
        ):
            self.registry.add(Gauge(name, help_text, ("deployment",), self._reader(key)))

    def _reader(self, key: str) -> Callable[[], list[tuple[LabelValues, float]]]:
        def read() -> list[tuple[LabelValues, float]]:
            return [((name,), float(deployment.stats().get(key, 0))) for name, deployment in self._deployments()]

        return read
