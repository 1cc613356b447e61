"""Throughput of engine deployments over a sweep of allocations × threads, batch budgets and client concurrency.

Each configuration is measured the way a user would drive it: ``concurrency`` client threads each sending
requests of ``request_size`` texts to one deployment until the corpus is done. Reported: docs/s, tokens/s,
request latency percentiles, CPU utilisation of the process over the allowed cores, and peak RSS.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.progress import progress_bar


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    number_of_allocations: int
    threads_per_allocation: int
    max_batch_tokens: int
    concurrency: int
    request_size: int
    max_batch_rows: int | None = None  # None: the engine's own default

    def label(self) -> str:
        rows = "" if self.max_batch_rows is None else f" rows{self.max_batch_rows}"
        return (f"{self.number_of_allocations}x{self.threads_per_allocation} "
                f"tok{self.max_batch_tokens}{rows} c{self.concurrency} r{self.request_size}")


@dataclasses.dataclass
class Measurement:
    system: str
    config: str
    docs_per_s: float
    tokens_per_s: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_p99: float
    cpu_utilisation: float
    peak_rss_mb: float
    repeats: list[float]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def allowed_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def drive(call: Callable[[list[str]], object], texts: list[str], concurrency: int,
          request_size: int) -> tuple[float, list[float], float]:
    """Send ``texts`` through ``call`` from ``concurrency`` threads; returns (wall s, latencies ms, cpu s)."""
    requests = [texts[i:i + request_size] for i in range(0, len(texts), request_size)]
    cursor = iter(range(len(requests)))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[BaseException] = []

    def client() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            started = time.perf_counter()
            try:
                call(requests[index])
            except BaseException as error:  # reported after the run: a benchmark must not hide failures
                errors.append(error)
                return
            with lock:
                latencies.append((time.perf_counter() - started) * 1000.0)

    cpu_before = time.process_time()
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"benchmark request failed: {errors[0]!r}") from errors[0]
    return wall, latencies, time.process_time() - cpu_before


def summarise(system: str, config: str, texts: list[str], n_tokens: int,
              runs: list[tuple[float, list[float], float]], rss_mb: float | None = None) -> Measurement:
    """Median over repeats (the machines are shared and noisy); latency percentiles over all requests.
    ``rss_mb``: the peak RSS to report (default: this process's, now)."""
    walls = [wall for wall, _, _ in runs]
    wall = statistics.median(walls)
    latencies = np.array([lat for _, lats, _ in runs for lat in lats] or [0.0])
    cpu = statistics.median(cpu_s / wall_s for wall_s, _, cpu_s in runs) / allowed_cores()
    return Measurement(
        system=system,
        config=config,
        docs_per_s=len(texts) / wall,
        tokens_per_s=n_tokens / wall,
        latency_ms_p50=float(np.percentile(latencies, 50)),
        latency_ms_p95=float(np.percentile(latencies, 95)),
        latency_ms_p99=float(np.percentile(latencies, 99)),
        cpu_utilisation=float(cpu),
        peak_rss_mb=peak_rss_mb() if rss_mb is None else rss_mb,
        repeats=[len(texts) / w for w in walls],
    )


def count_tokens(package_path: str, texts: list[str]) -> int:
    from engine.package import load_package

    tokenizer = load_package(package_path).tokenizer
    config = tokenizer.config
    # With the package's own span: a question_answering package (truncate none) windows long texts.
    return sum(len(window.input_ids) for t in tokenizer.single_batch(texts, config.truncate, config.span)
               for window in t.windows)


def runs_bar(total: int) -> Any:
    """A progress bar over the benchmark's runs on a terminal; off the terminal (a log, CI) the plain
    per-configuration lines are the progress."""
    return progress_bar(total, unit="run")


def bench_engine(package_path: str, task: str, texts: list[str], configs: list[BenchConfig], repeats: int,
                 task_config: dict[str, Any], progress: Callable[[str], None] = print) -> list[Measurement]:
    """Measure every configuration in ``repeats`` rounds, each round running every configuration once on a
    fresh deployment after one warm-up pass over a slice of the corpus.

    Rounds, not one configuration's repeats after another's: on a shared machine the load drifts over
    minutes, and a drift then hits every configuration alike instead of making one of them look faster
    (a ratio such as 2 × 1 ÷ 1 × 1 moved by ±10 % between sequential runs). Only one deployment is loaded
    at a time. Peak RSS is read after a configuration's first round, so it is the high-water mark of the
    configurations run up to and including it, as when they ran one after another.
    """
    with runs_bar(len(configs) * repeats * 2) as bar:
        return _bench_engine(package_path, task, texts, configs, repeats, task_config, progress, bar)


def _bench_engine(package_path: str, task: str, texts: list[str], configs: list[BenchConfig], repeats: int,
                  task_config: dict[str, Any], progress: Callable[[str], None], bar: Any) -> list[Measurement]:
    n_tokens = count_tokens(package_path, texts)
    runs: dict[BenchConfig, list[tuple[float, list[float], float]]] = {config: [] for config in configs}
    rss: dict[BenchConfig, float] = {}
    for _ in range(repeats):
        for config in configs:
            bar.set_description(config.label())
            runs[config].append(_one_run(package_path, task, texts, config, task_config, bar))
            rss.setdefault(config, peak_rss_mb())
    results = []
    for config in configs:
        measurement = summarise("engine", config.label(), texts, n_tokens, runs[config], rss[config])
        line = (f"  engine {config.label():32s} {measurement.docs_per_s:8.1f} docs/s "
                f"p50 {measurement.latency_ms_p50:7.1f} ms")
        if bar.disable:
            progress(line)
        else:
            bar.write(line, file=sys.stderr)
        results.append(measurement)
    return results


def _one_run(package_path: str, task: str, texts: list[str], config: BenchConfig, task_config: dict[str, Any],
             bar: Any) -> tuple[float, list[float], float]:
    """Load ``config``'s deployment, warm it up, time one pass over ``texts``, stop it."""
    import engine

    rows = {} if config.max_batch_rows is None else {"max_batch_rows": config.max_batch_rows}
    deployment = engine.load(
        package_path, task=task, **rows,
        number_of_allocations=config.number_of_allocations,
        threads_per_allocation=config.threads_per_allocation,
        max_batch_tokens=config.max_batch_tokens,
        queue_capacity=max(1024, len(texts)),
        cache_size=0,
    )
    try:
        def call(batch: list[str]) -> object:
            return deployment.infer(batch, **task_config)

        drive(call, texts[: max(32, len(texts) // 10)], config.concurrency, config.request_size)
        bar.update()
        timed = drive(call, texts, config.concurrency, config.request_size)
        bar.update()
        return timed
    finally:
        deployment.stop()
