"""ONNX Runtime's CPU memory settings side by side: the same mixed-length run (1..~512 tokens) in-process
through ``engine.load`` once per setting, RSS after warm-up (the first tenth) and at the end.

    python -m bench.bench_arena --package PKG --requests 20000

Settings: the engine's default (arena on, memory pattern on), arena off, memory pattern off. In-process
because ``engine serve`` exposes no session options; each setting runs in a fresh subprocess so one
setting's arena cannot colour the next.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {"default (arena on, pattern on)": {}, "arena off": {"enable_cpu_mem_arena": False},
            "memory pattern off": {"enable_mem_pattern": False}}
WORDS = ("the", "engine", "serves", "models", "with", "mixed", "lengths", "memory", "stays", "flat", "éclair")


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _one(package: str, requests: int, options: dict[str, bool]) -> dict[str, float]:
    import engine

    rng = random.Random(0)
    deployment = engine.load(package, session_options=options, cache_size=0)
    warm = end = 0
    started = time.perf_counter()
    for index in range(requests):
        deployment.infer([" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 400)))], timeout=60)
        if index == requests // 10:
            warm = _rss_kib()
    end = _rss_kib()
    deployment.stop()
    return {"rss_warm_mib": round(warm / 1024, 1), "rss_end_mib": round(end / 1024, 1),
            "growth_pct": round(100 * (end - warm) / warm, 2), "req_per_s": round(requests / (time.perf_counter() - started), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", required=True)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(_one(args.package, args.requests, json.loads(args.one))))
        return 0
    for name, options in SETTINGS.items():
        out = subprocess.run([sys.executable, "-m", "bench.bench_arena", "--package", args.package, "--requests",
                              str(args.requests), "--one", json.dumps(options)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        print(f"{name:32s} {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
