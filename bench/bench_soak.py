"""Soak: a long, bounded loopback run of mixed-length, mixed-task requests through ``engine serve``.

    python -m bench.bench_soak --model emb=PKG --model cls=PKG --requests 100000 --max-seconds 3600 \
        --json bench/results/soak.json

Clients send TEI requests (``/embed`` for text_embedding packages, ``/predict`` for classifiers, by each
package's manifest) of 1 to ~512 tokens (word counts drawn uniformly, a seeded generator), one request
in flight per client on a keep-alive connection. A sampler reads the server's RSS (``/proc/<pid>``)
every ``--sample-s``. Reported: requests sent, answered (per status) and lost (no answer at all), RSS
at the end of warm-up (the first ``--warmup`` fraction of requests) and at the end and its growth, and
p50/p99 latency per tenth of the run (the drift). Stops at ``--requests`` or ``--max-seconds``,
whichever comes first. ``--server-env NAME=VALUE`` and ``--server-arg ARG`` (repeatable) go to the
server process, so one command compares, say, ``MALLOC_ARENA_MAX=2`` or a ``--config`` file with a
``cache_size`` against the defaults; the RSS per tenth of the run shows whether growth levels off.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from engine.manifest import read_manifest

ROUTES = {"text_embedding": "/embed", "text_classification": "/predict", "text_expansion": "/embed_sparse"}
WORDS = ("the", "engine", "serves", "models", "over", "loopback", "with", "mixed", "lengths", "and", "tasks",
         "memory", "stays", "flat", "while", "latency", "holds", "steady", "under", "load", "éclair", "naïve")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="ID=PACKAGE_DIR (repeatable)")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-words", type=int, default=400, help="~512 tokens with WordPiece")
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--sample-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment variable for the server process (repeatable)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra engine serve argument (repeatable; --server-arg=--config ...)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    models = dict(item.split("=", 1) for item in args.model)
    routes = [(model_id, ROUTES[read_manifest(path, verify=False).task]) for model_id, path in models.items()]
    port = _free_port()
    command = [sys.executable, "-m", "engine.server.cli", "--port", str(port), "--no-access-log",
               "--queue-capacity", "1000"]
    for model_id, path in models.items():
        command += ["--model", f"{model_id}={path}"]
    command += args.server_arg
    server_env = dict(os.environ, ENGINE_LOG_LEVEL="warning")
    server_env.update(item.split("=", 1) for item in args.server_env)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=server_env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit("engine serve did not start")
        time.sleep(0.2)

    lock = threading.Lock()
    counter = iter(range(args.requests))
    latencies: list[tuple[int, float]] = []
    statuses: Counter[str] = Counter()
    samples: list[tuple[int, int]] = []  # (requests done, RSS KiB)
    stop_at = time.monotonic() + args.max_seconds
    done = threading.Event()

    def client(number: int) -> None:
        rng = random.Random(args.seed * 1000 + number)
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < stop_at:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                model_id, route = routes[index % len(routes)]
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, args.max_words)))
                started = time.perf_counter()
                try:
                    status = str(http.post(f"/models/{model_id}{route}", json={"inputs": text}).status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with lock:
                    latencies.append((index, time.perf_counter() - started))
                    statuses[status] += 1

    def sampler() -> None:
        while not done.is_set():
            with lock:
                finished = len(latencies)
            samples.append((finished, _rss_kib(server.pid)))
            done.wait(args.sample_s)

    began = time.monotonic()
    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=client, args=(number,)) for number in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    elapsed = time.monotonic() - began
    server.terminate()
    server.wait(timeout=120)

    sent = len(latencies)
    answered = sum(count for status, count in statuses.items() if status.isdigit())
    warm = [rss for finished, rss in samples if finished >= args.warmup * sent]
    ordered = np.array([latency for _index, latency in sorted(latencies)]) * 1000
    tenths = [chunk for chunk in np.array_split(ordered, 10) if chunk.size]
    # the last RSS sample of each tenth of the requests
    rss_tenths = [next((rss for finished, rss in reversed(samples) if finished <= sent * (tenth + 1) / 10), 0)
                  for tenth in range(10)]
    result: dict[str, Any] = {
        "command": " ".join(["python -m bench.bench_soak", *(argv if argv is not None else sys.argv[1:])]),
        "server_env": args.server_env, "server_args": args.server_arg,
        "requests_sent": sent, "answered": answered, "lost": sent - answered, "statuses": dict(statuses),
        "seconds": round(elapsed, 1), "requests_per_s": round(sent / elapsed, 1),
        "rss_after_warmup_mib": round(warm[0] / 1024, 1) if warm else None,
        "rss_end_mib": round(warm[-1] / 1024, 1) if warm else None,
        "rss_max_after_warmup_mib": round(max(warm) / 1024, 1) if warm else None,
        "rss_growth_pct": round(100 * (warm[-1] - warm[0]) / warm[0], 2) if warm else None,
        "rss_mib_per_tenth": [round(rss / 1024, 1) for rss in rss_tenths],
        "p50_ms_per_tenth": [round(float(np.percentile(chunk, 50)), 2) for chunk in tenths],
        "p99_ms_per_tenth": [round(float(np.percentile(chunk, 99)), 2) for chunk in tenths],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
