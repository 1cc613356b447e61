"""ONNX Runtime's CPU memory settings side by side: the same mixed-length run (1..~512 tokens) in-process
through ``engine.load`` once per setting, RSS after warm-up (the first tenth) and at the end.

    python -m bench.bench_arena --package PKG --requests 20000 [--clients 4 --batch 8]

Settings: the engine's default (arena on, memory pattern off, the arena primed with the largest batch
shapes at start; engine/session.py ``prime_arena`` says why), the memory pattern on (the default
before), the arena off. In-process because ``engine serve`` exposes no session options;
each setting runs in a fresh subprocess so one setting's arena cannot colour the next. ``--clients``
threads each send ``--batch`` texts per call, so the scheduler forms batches of varying shapes as
it does under a server; one client with batch 1 is the single-query path.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

SETTINGS = {"default (pattern off, primed)": {}, "memory pattern on": {"enable_mem_pattern": True},
            "arena off": {"enable_cpu_mem_arena": False}}
WORDS = ("the", "engine", "serves", "models", "with", "mixed", "lengths", "memory", "stays", "flat", "éclair")


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _one(package: str, requests: int, options: dict[str, bool], clients: int, batch: int) -> dict[str, float]:
    import engine

    deployment = engine.load(package, session_options=options, cache_size=0)
    calls = iter(range(requests // batch))
    lock = threading.Lock()
    rss = {"warm": 0}

    def client(number: int) -> None:
        rng = random.Random(number)
        while True:
            with lock:
                index = next(calls, None)
            if index is None:
                return
            texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 400))) for _ in range(batch)]
            deployment.infer(texts, timeout=600)
            if index == requests // batch // 10:
                rss["warm"] = _rss_kib()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    warm, end = rss["warm"], _rss_kib()
    deployment.stop()
    return {"rss_warm_mib": round(warm / 1024, 1), "rss_end_mib": round(end / 1024, 1),
            "growth_pct": round(100 * (end - warm) / warm, 2), "texts_per_s": round(requests / elapsed, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", required=True)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=1, help="threads calling infer at once")
    parser.add_argument("--batch", type=int, default=1, help="texts per infer call")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(_one(args.package, args.requests, json.loads(args.one), args.clients, args.batch)))
        return 0
    for name, options in SETTINGS.items():
        out = subprocess.run([sys.executable, "-m", "bench.bench_arena", "--package", args.package, "--requests",
                              str(args.requests), "--clients", str(args.clients), "--batch", str(args.batch),
                              "--one", json.dumps(options)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        print(f"{name:32s} {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
