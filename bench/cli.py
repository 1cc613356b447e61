"""``engine bench``: throughput on this machine, with the tools a user would otherwise pick beside it."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

from engine.config import DEFAULT_MAX_BATCH_TOKENS
from engine.errors import InvalidInput
from engine.units import parse_json_object

from .corpus import DEFAULT_CORPUS


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def add_bench_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure throughput over allocations × threads, batch budgets and client concurrency",
        description="Throughput benchmark on this machine's allowed cores. Medians of --repeats rounds; each round runs every configuration once, so a drift in the machine's load hits all of them alike.",
    )
    parser.add_argument("--model", "-m", default=None,
                        help="model package dir or Hugging Face source (default: the task's default model)")
    parser.add_argument("--task", default="text_embedding")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="a text file (one text per line), a built-in corpus (builtin-queries, "
                        "builtin-sentences, builtin-passages: English prose from the Python standard library's "
                        f"docstrings; default {DEFAULT_CORPUS}) or passages|dbpedia|conll|sts from ../shared/data")
    parser.add_argument("--limit", type=int, default=1000, help="number of texts (default 1000)")
    parser.add_argument("--allocations", type=_ints, default=[1, 2], help="comma list, e.g. 1,2")
    parser.add_argument("--threads", type=_ints, default=[1, 2], help="threads per allocation, comma list")
    parser.add_argument("--batch-tokens", type=_ints, default=[DEFAULT_MAX_BATCH_TOKENS],
                        help="max_batch_tokens values, comma list: bigger batches amortise more, pad more "
                        f"(default {DEFAULT_MAX_BATCH_TOKENS}, the engine's own)")
    parser.add_argument("--max-batch-rows", type=_ints, default=[None],
                        help="max_batch_rows values, comma list (default: the engine's own)")
    parser.add_argument("--concurrency", type=_ints, default=[4], help="client threads, comma list")
    parser.add_argument("--request-size", type=int, default=32, help="texts per client request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="{}", help="task options as JSON (question, text, labels)")
    parser.add_argument("--baselines", action="store_true",
                        help="also run sentence-transformers / transformers pipeline / naive Optimum int8 / "
                        "FastEmbed (text_embedding, when installed) on the same cores (needs a Hugging Face source: --source)")
    parser.add_argument("--source", default=None,
                        help="Hugging Face model dir the package was exported from (for --baselines)")
    parser.add_argument("--no-limit", dest="limit_gemm", action="store_false",
                        help="skip measuring ONNX Runtime's int8/fp32 GEMM rates at the model's shapes (the "
                        "limit every throughput is reported as a share of)")
    parser.add_argument("--out", default="bench/out", help="directory for bench.json, bench.md, bench.png")
    parser.set_defaults(handler=run_bench)


def _configs(args: argparse.Namespace, cores: int) -> list[Any]:
    from .throughput import BenchConfig

    configs = []
    for allocations, threads, budget, rows, concurrency in itertools.product(
            args.allocations, args.threads, args.batch_tokens, args.max_batch_rows, args.concurrency):
        if allocations * threads > cores:
            continue
        configs.append(BenchConfig(allocations, threads, budget, max(concurrency, allocations), args.request_size,
                                   rows))
    return configs


def run_bench(args: argparse.Namespace) -> int:
    from engine.api import resolve_model
    from engine.manifest import read_manifest

    from .baselines import baselines_for, run_child
    from .corpus import load_corpus
    from .report import machine_info, write_reports
    from .throughput import allowed_cores, bench_engine

    task_config = parse_json_object(args.config)
    if args.limit < 1 or args.repeats < 1:
        raise InvalidInput("--limit and --repeats must be positive")
    texts = load_corpus(args.corpus, args.limit)
    package = str(resolve_model(args.model, args.task))
    configs = _configs(args, allowed_cores())
    print(f"engine bench: {len(texts)} texts from [{args.corpus}], {len(configs)} configurations, "
          f"{args.repeats} repeats, package {package}", file=sys.stderr)
    started = time.time()
    if not configs:
        raise InvalidInput(f"no configuration fits the {allowed_cores()} allowed cores: lower --allocations "
                           "or --threads")
    rows = [m.to_json() for m in bench_engine(package, args.task, texts, configs, args.repeats, task_config,
                                               progress=lambda line: print(line, file=sys.stderr))]
    if args.baselines:
        source = args.source
        if source is None:
            source = read_manifest(package, verify=False).source.get("path")
        if not source or not Path(source).is_dir():
            print("engine bench: --baselines needs --source <Hugging Face model dir>", file=sys.stderr)
            return 2
        for kind in baselines_for(args.task):
            print(f"  baseline {kind} ...", file=sys.stderr)
            rows.append(run_child(kind, source, args.task, args.corpus, args.limit, args.repeats, task_config))
    limit_meta = None
    if args.limit_gemm:
        from .limits import attach_limits

        limit_meta = attach_limits(rows, package, texts, task_config,
                                   {c.label(): (c.number_of_allocations, c.threads_per_allocation) for c in configs},
                                   progress=lambda line: print(line, file=sys.stderr))
    meta = {"task": args.task, "model": package, "source": read_manifest(package, verify=False).source.get("id"),
            "corpus": args.corpus, "texts": len(texts),
            "repeats": args.repeats, "machine": machine_info(), "seconds": round(time.time() - started, 1),
            "command": " ".join(["engine", "bench", *(arg for arg in sys.argv[1:] if arg != "bench")])}
    if limit_meta is not None:
        meta["limit"] = limit_meta
    for path in write_reports(Path(args.out), meta, rows):
        print(f"wrote {path}", file=sys.stderr)
    print((Path(args.out) / "bench.md").read_text())
    return 0
