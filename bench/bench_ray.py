"""What Ray costs and buys: MiniLM text_embedding through ``engine.ray`` against the engine's own deployment.

1. One node: Ray Serve 2 replicas × 1 thread against ``engine.load`` 2 allocations × 1 thread, the same
   corpus and the same client (threads calling ``infer``, ``--per-request`` texts each), rounds
   alternating, inference caches off (the corpus is sent more than once): throughput ratio and
   per-request p50/p99 latency.
2. A simulated 2-node cluster (``ray.cluster_utils.Cluster``, 1 CPU per node, both on this machine): 1
   against 2 replicas (scaling), then a node lost under load: time until the deployment is back to 2
   replicas (a new node joins at once), requests failed against requests in flight at the loss.
3. Batch: a Ray Data job (2 actors) against the local ``engine batch`` runner (2 allocations), rows/s.

    python -m bench.bench_ray --model PACKAGE [--limit 400] [--rounds 2] [--out bench/results/ray.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep 127.0.0.1 (see tests/ray/conftest.py)
LOOPBACK = "127.0.0.1"


def drive(infer: Callable[..., Any], texts: list[str], clients: int, per_request: int) -> dict[str, float]:
    """``clients`` threads send the corpus in requests of ``per_request`` texts; docs/s and latency."""
    chunks = [texts[i:i + per_request] for i in range(0, len(texts), per_request)]
    latencies: list[float] = []
    lock = threading.Lock()

    def one(chunk: list[str]) -> None:
        started = time.perf_counter()
        infer(chunk, timeout=120)
        with lock:
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, chunks))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"docs_per_s": len(texts) / elapsed, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def one_node(package: str, texts: list[str], rounds: int, clients: int, per_request: int) -> dict[str, Any]:
    import ray
    from ray import serve

    import engine
    import engine.ray as engine_ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address=LOOPBACK, log_to_driver=False)
    try:
        runs: dict[str, list[dict[str, float]]] = {"ray": [], "local": []}
        for _ in range(rounds):
            with engine_ray.deploy(package, name="bench", number_of_allocations=2, cache_size=0) as on_ray:
                drive(on_ray.infer, texts[:64], clients, per_request)  # warm-up
                runs["ray"].append(drive(on_ray.infer, texts, clients, per_request))
            with engine.load(package, task="text_embedding", number_of_allocations=2,
                             threads_per_allocation=1, cache_size=0) as local:
                drive(local.infer, texts[:64], clients, per_request)
                runs["local"].append(drive(local.infer, texts, clients, per_request))
        result = {name: median_of(items) for name, items in runs.items()}
        result["throughput_ratio_ray_over_local"] = result["ray"]["docs_per_s"] / result["local"]["docs_per_s"]
        return result
    finally:
        serve.shutdown()
        ray.shutdown()


def cluster(package: str, texts: list[str], clients: int, per_request: int, batch_rows: int) -> dict[str, Any]:
    import ray
    import ray.data
    from ray import serve
    from ray.cluster_utils import Cluster

    import engine.ray as engine_ray
    from engine.batch_job import run_local

    simulated = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "node_ip_address": LOOPBACK})
    simulated.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    ray.init(address=simulated.address, _node_ip_address=LOOPBACK, log_to_driver=False)
    result: dict[str, Any] = {}
    try:
        with engine_ray.deploy(package, name="scaling", number_of_allocations=1, cache_size=0) as deployment:
            drive(deployment.infer, texts[:64], clients, per_request)
            result["replicas_1"] = drive(deployment.infer, texts, clients, per_request)
            deployment.update(number_of_allocations=2)
            drive(deployment.infer, texts[:64], clients, per_request)
            result["replicas_2"] = drive(deployment.infer, texts, clients, per_request)
            result["scaling_2_over_1"] = result["replicas_2"]["docs_per_s"] / result["replicas_1"]["docs_per_s"]
            result["node_loss"] = _node_loss(simulated, deployment, texts, clients, per_request)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        corpus = (texts * (batch_rows // len(texts) + 1))[:batch_rows]
        dataset = ray.data.from_items([{"text": text} for text in corpus], override_num_blocks=8)
        started = time.perf_counter()
        rows = engine_ray.infer_dataset(dataset, package, "text_embedding", concurrency=2, batch_size=32).count()
        result["batch_ray_rows_per_s"] = rows / (time.perf_counter() - started)
    finally:
        serve.shutdown()
        ray.shutdown()
        simulated.shutdown()
    source = Path("/tmp") / f"bench-ray-{os.getpid()}.jsonl"
    source.write_text("".join(json.dumps({"text": text}) + "\n" for text in corpus))
    started = time.perf_counter()
    writer = run_local("text_embedding", package, str(source), str(source.with_suffix(".out.jsonl")),
                       batch_size=32, number_of_allocations=2, progress=False)
    result["batch_local_rows_per_s"] = writer.rows / (time.perf_counter() - started)
    source.unlink()
    source.with_suffix(".out.jsonl").unlink()
    return result


def _node_loss(simulated: Any, deployment: Any, texts: list[str], clients: int, per_request: int) -> dict[str, Any]:
    """Lose the worker node under load, add a fresh one at once; how long until 2 replicas serve again."""
    outcomes = {"ok": 0, "failed": 0}
    in_flight = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        position = 0
        while not stop.is_set():
            chunk = texts[position:position + per_request] or texts[:per_request]
            position = (position + per_request) % len(texts)
            with lock:
                in_flight[0] += 1
            try:
                deployment.infer(chunk, timeout=60)
                key = "ok"
            except Exception:  # counted
                key = "failed"
            with lock:
                in_flight[0] -= 1
                outcomes[key] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    worker = next(iter(simulated.worker_nodes))
    lost = [node["replica_id"] for node in deployment.stats()["nodes"] if node["node_id"] == worker.node_id]
    with lock:
        at_loss = in_flight[0]
    started = time.perf_counter()
    simulated.remove_node(worker, allow_graceful=False)
    simulated.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    while True:
        replicas = [node["replica_id"] for node in deployment.stats()["nodes"]]
        if len(replicas) == 2 and not set(lost) & set(replicas):
            break
        time.sleep(0.2)
    recovery_s = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join(70)
    return {"recovery_s": recovery_s, "in_flight_at_loss": at_loss, **outcomes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a text_embedding package (e.g. minilm-int8)")
    parser.add_argument("--corpus", default="builtin-sentences")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-request", type=int, default=8)
    parser.add_argument("--batch-rows", type=int, default=2000)
    parser.add_argument("--out", default="bench/results/ray.json")
    args = parser.parse_args(argv)
    from bench.corpus import load_corpus

    texts = load_corpus(args.corpus, args.limit)
    result = {"command": " ".join(["python -m bench.bench_ray", *(argv if argv is not None else sys.argv[1:])]),
              "texts": len(texts), "clients": args.clients, "per_request": args.per_request,
              "one_node": one_node(args.model, texts, args.rounds, args.clients, args.per_request),
              "cluster": cluster(args.model, texts, args.clients, args.per_request, args.batch_rows)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
