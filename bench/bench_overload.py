"""Overload behaviour: a load of 4× the queue capacity against a real deployment, each request with a
timeout. Every request must end with a result, QueueFull (429) or InferenceTimeout (408); none may be
lost, and none may come back later than its timeout by more than 100 ms.

    python -m bench.bench_overload [--package DIR] [--capacity 16] [--timeout 0.5] [--rounds 3]

This is measured, not asserted in the test suite (tests do not time things): the numbers go to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time
from pathlib import Path

from .corpus import load_corpus


def overload(package: str, capacity: int, timeout: float) -> dict[str, float]:
    import engine
    from engine.errors import InferenceTimeout, QueueFull

    texts = load_corpus("passages", 4 * capacity)
    deployment = engine.load(package, task="text_embedding", queue_capacity=capacity, cache_size=0)
    outcomes: collections.Counter[str] = collections.Counter()
    lateness: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(len(texts))

    def client(text: str) -> None:
        start.wait()
        began = time.monotonic()
        try:
            deployment.infer([text], timeout=timeout)
            outcome = "result"
        except QueueFull:
            outcome = "429"
        except InferenceTimeout:
            outcome = "408"
        except Exception as error:  # anything else is a failure of the contract: count it, never hide it
            outcome = f"other:{type(error).__name__}"
        elapsed = time.monotonic() - began
        with lock:
            outcomes[outcome] += 1
            lateness.append(elapsed - timeout)

    try:
        deployment.infer(texts[:2])
        threads = [threading.Thread(target=client, args=(text,)) for text in texts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        deployment.stop()
    return {"sent": len(texts), **outcomes, "answered": sum(outcomes.values()),
            "max_ms_past_timeout": max(lateness) * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, help="text_embedding package (default: the default model)")
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=0.5, help="seconds per request")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from engine.api import resolve_model

    package = str(args.package or resolve_model(None, "text_embedding"))
    print("| round | sent | results | 429 | 408 | other | answered | max ms past timeout |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for number in range(1, args.rounds + 1):
        row = overload(package, args.capacity, args.timeout)
        other = sum(v for k, v in row.items() if k.startswith("other:"))
        print(f"| {number} | {row['sent']} | {row.get('result', 0)} | {row.get('429', 0)} | {row.get('408', 0)} "
              f"| {other} | {row['answered']} | {row['max_ms_past_timeout']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.bench_overload"))
