"""One short query at a time, one thread: what each layer adds between the bare ONNX Runtime session and HTTP.

    python -m bench.bench_single [--package DIR] [--corpus builtin-queries] [--requests 300] [--rounds 3]
                                 [--baseline-tree DIR] [--json OUT] [--plot PNG]

Paths, each sent the same queries one per request from one client, interleaved (every query goes
through every path in turn, in an order shuffled per query, so a burst of load elsewhere hits every
path alike);
p50/p90/p99 over all requests of all rounds, and each round's p50:

* ``bare ORT``: the package's tokenizer (``tokenizers``, ``encode``) and ``session.run`` on a session
  from :func:`engine.session.create_session` with 1 thread: the floor;
* ``Deployment.infer``: the engine in-process (1 allocation × 1 thread, cache off);
* ``Deployment.ainfer``: the same deployment awaited on an event loop in this thread, as the server
  awaits it (so the HTTP rows minus this one is what the web stack costs);
* ``HTTP /embed``, ``HTTP /v1/embeddings``, ``HTTP _infer``: ``engine serve`` in a subprocess on
  loopback, the same deployment settings, one keep-alive connection of the standard library's
  ``http.client`` (a lean client, so the rows measure the server rather than the client's Python);
* with ``--baseline-tree DIR`` (the ``engine/`` of an earlier commit: ``git archive <commit> engine | tar
  -x -C DIR``), the same three routes again on a second server running that code, in the same
  interleaved run: before and after side by side.

The server and the client share the machine's cores, as a co-located caller would.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .bench_server import free_port, percentile, start_server
from .corpus import load_corpus


def bare_session(package: Path) -> Callable[[str], Any]:
    """Tokenise and run with nothing of the engine but its session factory: the floor of ``infer``."""
    from tokenizers import Tokenizer

    from engine.manifest import read_manifest
    from engine.session import create_session

    manifest = read_manifest(package)
    tokenizer = Tokenizer.from_file(str(package / manifest.tokenizer))
    tokenizer.no_padding()
    session = create_session(package / manifest.graph, 1)
    names = list(manifest.inputs)

    def call(text: str) -> Any:
        encoding = tokenizer.encode(text)
        feeds = {"input_ids": np.array([encoding.ids], dtype=np.int64),
                 "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
                 "token_type_ids": np.array([encoding.type_ids], dtype=np.int64)}
        return session.run(None, {name: feeds[name] for name in names})

    return call


def keep_alive_post(port: int) -> Callable[[str, bytes], bytes]:
    """A lean keep-alive HTTP/1.1 client (the standard library's): what a request costs the server
    and the loopback, not a heavy client's own Python."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(path: str, body: bytes) -> bytes:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        content = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {path} answered {response.status}: {content[:200]!r}")
        return content

    return post


def in_loop(coroutine_function: Callable[[str], Any]) -> tuple[Callable[[str], Any], Callable[[], None]]:
    """A blocking call that runs ``coroutine_function(text)`` on one long-lived event loop in this
    thread (as a server's loop would), and the function that closes the loop."""
    import asyncio

    loop = asyncio.new_event_loop()
    return (lambda text: loop.run_until_complete(coroutine_function(text))), loop.close


def interleaved(paths: dict[str, Callable[[str], Any]], texts: list[str], rounds: int) -> dict[str, list[list[float]]]:
    """Milliseconds per call, per path and round: every query goes through every path in turn, in an
    order shuffled per query (seeded), so load elsewhere on the machine hits all alike and no path
    always follows the same one (a server still finishing its last answer slows the next call)."""
    names = list(paths)
    order = random.Random(0)
    for text in texts[:10]:  # warm-up
        for name in names:
            paths[name](text)
    samples: dict[str, list[list[float]]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            samples[name].append([])
        for text in texts:
            for name in order.sample(names, len(names)):
                started = time.perf_counter()
                paths[name](text)
                samples[name][-1].append((time.perf_counter() - started) * 1000.0)
    return samples


ROUTES: dict[str, tuple[str, Callable[[str], dict[str, Any]]]] = {
    "/embed": ("/embed", lambda text: {"inputs": text, "model": "bench"}),
    "/v1/embeddings": ("/v1/embeddings", lambda text: {"input": text, "model": "bench"}),
    "_infer": ("/_ml/trained_models/bench/_infer", lambda text: {"docs": [{"text_field": text}]}),
}


def http_paths(port: int, suffix: str = "") -> dict[str, Callable[[str], Any]]:
    """One single-query call per route on the server at ``port``, over one keep-alive connection."""
    post = keep_alive_post(port)

    def route(path: str, body: Callable[[str], dict[str, Any]]) -> Callable[[str], Any]:
        return lambda text: post(path, json.dumps(body(text)).encode())

    return {f"HTTP {name}{suffix}": route(path, body) for name, (path, body) in ROUTES.items()}


def measure(package: Path, texts: list[str], rounds: int,
            baseline_tree: Path | None = None) -> dict[str, dict[str, Any]]:
    import engine

    deployment = engine.load(str(package), number_of_allocations=1, threads_per_allocation=1, cache_size=0)
    servers = []
    run_async, close_loop = in_loop(lambda text: deployment.ainfer(text))
    try:
        paths: dict[str, Callable[[str], Any]] = {
            "bare ORT (tokenize + session.run)": bare_session(package),
            "Deployment.infer": deployment.infer,
            "Deployment.ainfer (on an event loop)": run_async,
        }
        baseline = [(baseline_tree, " (baseline tree)")] if baseline_tree is not None else []
        for tree, suffix in [*baseline, (None, "")]:
            port = free_port()
            servers.append(start_server(package, 1, port, tree))
            paths.update(http_paths(port, suffix))
        samples = interleaved(paths, texts, rounds)
    finally:
        close_loop()
        deployment.stop()
        for server in servers:
            server.terminate()
            server.wait(timeout=60)
    results = {}
    for name, runs in samples.items():
        every = [value for run in runs for value in run]
        results[name] = {"p50": statistics.median(every), "p90": percentile(every, 0.9),
                         "p99": percentile(every, 0.99), "p50_rounds": [statistics.median(run) for run in runs]}
    return results


def markdown(results: dict[str, dict[str, Any]], settings: dict[str, Any]) -> str:
    bare = results["bare ORT (tokenize + session.run)"]["p50"]
    inproc = results["Deployment.infer"]["p50"]
    lines = [f"`{settings['command']}` — {settings['requests']} single-query requests per path and round "
             f"({settings['corpus']}, {settings['mean_words']:.1f} words), {settings['rounds']} rounds, paths interleaved "
             f"per query, 1 allocation × 1 thread, cache off; load average {settings['load']:.2f} at the start, "
             f"{settings['load_end']:.2f} at the end.", "",
             "| path | p50 ms | p90 ms | p99 ms | p50 per round | p50 ÷ bare ORT | p50 − in-process ms |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for name, row in results.items():
        rounds = ", ".join(f"{value:.2f}" for value in row["p50_rounds"])
        lines.append(f"| {name} | {row['p50']:.2f} | {row['p90']:.2f} | {row['p99']:.2f} | {rounds} | "
                     f"{row['p50'] / bare:.2f}× | {row['p50'] - inproc:+.2f} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Latency percentiles per route: p50 bars, p90 and p99 marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    positions = range(len(names))
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.bar(positions, [results[name]["p50"] for name in names], color="tab:blue", label="p50")
    axis.scatter(positions, [results[name]["p90"] for name in names], marker="_", s=300, color="black", label="p90",
                 zorder=3)
    axis.scatter(positions, [results[name]["p99"] for name in names], marker="v", color="tab:red", label="p99",
                 zorder=3)
    axis.set_xticks(list(positions), [name.replace(" (", "\n(") for name in names], fontsize=7)
    axis.set_ylabel("latency per single-query request, ms")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_single", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, help="a text_embedding package (default: the bundled MiniLM, int8)")
    parser.add_argument("--corpus", default="builtin-queries")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-tree", type=Path,
                        help="the engine/ of another checkout, served beside this one (before and after)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    from engine.api import resolve_model

    package = Path(args.package or resolve_model(None, "text_embedding"))
    texts = load_corpus(args.corpus, args.requests)
    settings = {"command": " ".join(["python -m bench.bench_single", *sys.argv[1:]]), "requests": len(texts),
                "corpus": args.corpus, "rounds": args.rounds, "mean_words": statistics.mean(len(t.split()) for t in texts),
                "load": os.getloadavg()[0]}
    results = measure(package, texts, args.rounds, args.baseline_tree)
    settings["load_end"] = os.getloadavg()[0]
    print(markdown(results, settings))
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    if args.plot:
        plot(results, args.plot, f"single query, 1 thread · {package.name} · load {settings['load']:.1f}")
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.bench_single"))
