"""HTTP overhead of ``engine serve``: TEI-style batches of 8 (``/embed`` for embeddings, Elasticsearch's
``_infer`` for other tasks) against the same deployment called in-process, same texts, same concurrency.

    python -m bench.bench_server [--package DIR] [--task ner] [--requests 200] [--concurrency 4]
                                 [--results bench/RESULTS.md]

The server runs as a subprocess on loopback; the client threads share the machine with it, so on a
small machine the HTTP numbers include the client's own CPU use (as they would for a co-located
caller). The in-process run uses ``engine.load`` with the same allocation and thread settings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from .corpus import load_corpus

REPO = Path(__file__).resolve().parents[1]
SECTION_TITLE = "## Server"  # one section per task: "## Server: <task>"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 200 samples is the 198th smallest)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def run_load(call: Callable[[list[str]], Any], batches: list[list[str]], concurrency: int) -> dict[str, float]:
    """Send every batch through ``call`` from ``concurrency`` threads; latency per call, overall rate."""
    latencies: list[float] = []

    def one(batch: list[str]) -> None:
        started = time.perf_counter()
        call(batch)
        latencies.append(time.perf_counter() - started)

    for batch in batches[: max(2, concurrency)]:  # warm-up: sessions, caches of the allocator
        call(batch)
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, batches))
    elapsed = time.perf_counter() - began
    texts = sum(len(batch) for batch in batches)
    return {
        "requests": len(batches),
        "texts_per_s": texts / elapsed,
        "requests_per_s": len(batches) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


# Runs ``engine serve`` from another checkout's ``engine/`` (argv: the tree, the folder holding this
# install's compiled ``engine._kernels``): past an editable install's import hook, the tree first on the path.
LAUNCH_TREE = (
    "import runpy, sys; tree, kernels = sys.argv[1:3]; del sys.argv[1:3]; "
    "sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith('_editable')]; "
    "sys.path.insert(0, tree); import engine; assert engine.__file__.startswith(tree), engine.__file__; "
    "engine.__path__.append(kernels); "
    "runpy.run_module('engine.server.cli', run_name='__main__', alter_sys=True)"
)


def start_server(package: Path, threads: int, port: int, tree: Path | None = None) -> subprocess.Popen:
    """``engine serve`` on loopback with ``package`` started as ``bench`` (cache off); ``tree``: the
    ``engine/`` of another checkout (say ``git archive <commit> engine | tar -x -C DIR``) instead of this one."""
    if tree is None:
        command = [sys.executable, "-m", "engine.server.cli"]
    else:
        import importlib.util

        kernels = importlib.util.find_spec("engine._kernels")
        if kernels is None or kernels.origin is None:
            raise RuntimeError("engine._kernels is not built: the baseline tree borrows this install's")
        command = [sys.executable, "-c", LAUNCH_TREE, str(Path(tree).resolve()), os.path.dirname(kernels.origin)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=REPO if tree is None else tree, env=dict(os.environ, PYTHONPATH=str(REPO if tree is None else tree)),
    )
    deadline = time.monotonic() + 120
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"engine serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                # Registered and started over the API so that the cache is off, as in-process.
                httpx.put(f"{url}/_ml/trained_models/bench", json={"location": str(package)},
                          timeout=120).raise_for_status()
                httpx.post(f"{url}/_ml/trained_models/bench/deployment/_start", timeout=120, params={
                    "threads_per_allocation": threads, "cache_size": "0b"}).raise_for_status()
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("engine serve did not start in 120 s")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(package: Path, batches: list[list[str]], concurrency: int, threads: int,
            rounds: int, task: str = "text_embedding") -> dict[str, dict[str, float]]:
    """Both paths, alternating for ``rounds`` rounds so a burst of load elsewhere on the machine hits
    both alike; each path keeps its best round (the least disturbed one)."""
    import engine

    deployment = engine.load(str(package), threads_per_allocation=threads, cache_size=0)
    port = free_port()
    server = start_server(package, threads, port)
    best: dict[str, dict[str, float]] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                          limits=httpx.Limits(max_connections=concurrency)) as client:

            def post(batch: list[str]) -> None:
                if task == "text_embedding":
                    response = client.post("/embed", json={"inputs": batch, "model": "bench"})  # beside the bundled default model
                else:
                    response = client.post("/_ml/trained_models/bench/_infer",
                                           json={"docs": [{"text_field": text} for text in batch]})
                response.raise_for_status()

            route = "/embed" if task == "text_embedding" else "_infer"
            paths: dict[str, Callable[[list[str]], Any]] = {
                "in-process (Deployment.infer)": deployment.infer,
                f"HTTP {route} (engine serve)": post,
            }
            for _ in range(rounds):
                for name, call in paths.items():
                    row = run_load(call, batches, concurrency)
                    if name not in best or row["texts_per_s"] > best[name]["texts_per_s"]:
                        best[name] = row
    finally:
        deployment.stop()
        server.terminate()
        server.wait(timeout=60)
    return best


def markdown(results: dict[str, dict[str, float]], settings: dict[str, Any]) -> str:
    lines = [
        f"{SECTION_TITLE}: {settings['task']}",
        "",
        f"`{settings['command']}` — {settings['model']}, TEI-style batches of {settings['batch']} texts "
        f"({settings['corpus']} corpus), {settings['requests']} requests from {settings['concurrency']} concurrent "
        f"clients, 1 allocation × {settings['threads']} threads, cache off, best of {settings['rounds']} alternating "
        f"rounds. CPU: {settings['cpu']} "
        f"({settings['cpus']} allowed cores, load average {settings['load']:.2f} at start; client and server share "
        "the cores).",
        "",
        "| path | texts/s | requests/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in results.items():
        lines.append(f"| {name} | {row['texts_per_s']:.1f} | {row['requests_per_s']:.1f} | {row['p50_ms']:.1f} "
                     f"| {row['p99_ms']:.1f} |")
    first, second = list(results.values())
    lines += ["", f"HTTP / in-process throughput: {second['texts_per_s'] / first['texts_per_s']:.2f}; p50 "
              f"difference {second['p50_ms'] - first['p50_ms']:+.1f} ms per request (JSON and loopback). On a "
              "shared machine the spread between rounds can exceed that difference.", ""]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace this task's ``## Server: <task>`` section of the results file (or append it)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    title = section.split("\n", 1)[0]
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", type=Path,
                        help="model package; default: all-MiniLM-L6-v2 exported (int8) and cached")
    parser.add_argument("--task", default="text_embedding", help="the package's task (default text_embedding)")
    parser.add_argument("--corpus", default="sts", help="named corpus or text file (see bench/corpus.py)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per path")
    parser.add_argument("--batch", type=int, default=8, help="texts per request (TEI's ORT batch size is 8)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per path (the best is kept)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads_per_allocation (default: largest power of 2 within the allowed cores)")
    parser.add_argument("--results", type=Path, help="write the table as the '## Server' section of this file")
    parser.add_argument("--json", type=Path, help="also write the raw numbers and settings as JSON")
    arguments = parser.parse_args(argv)

    from engine.api import resolve_model

    package = arguments.package or resolve_model(None, arguments.task)
    label = Path(package).name if arguments.package else "all-MiniLM-L6-v2 (the default package, int8)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = arguments.threads or 1 << (min(cores, 32).bit_length() - 1)
    texts = load_corpus(arguments.corpus, limit=arguments.requests * arguments.batch)
    if len(texts) < arguments.batch:
        raise SystemExit(f"corpus [{arguments.corpus}] has too few texts")
    batches = [[texts[(i * arguments.batch + k) % len(texts)] for k in range(arguments.batch)]
               for i in range(arguments.requests)]
    settings = {
        "model": label, "task": arguments.task, "command": " ".join(["python -m bench.bench_server", *sys.argv[1:]]),
        "batch": arguments.batch, "corpus": arguments.corpus,
        "requests": arguments.requests, "concurrency": arguments.concurrency, "threads": threads,
        "rounds": arguments.rounds,
        "cpu": cpu_model(), "cpus": cores,
        "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0,
    }
    results = measure(Path(package), batches, arguments.concurrency, threads, arguments.rounds, arguments.task)
    section = markdown(results, settings)
    print(section)
    if arguments.results:
        write_section(arguments.results, section)
    if arguments.json:
        arguments.json.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.bench_server"))
