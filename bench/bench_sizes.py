"""Base-size models and long inputs: the engine against the transformers pipeline, and as a share of the limit.

    python -m bench.bench_sizes [--cases distilbert-ner,bert-cls,...] [--limit 200] [--repeats 3]
                                [--max-batch-tokens N] [--home DIR] [--json OUT]
    python -m bench.bench_sizes --packages before=DIR,after=DIR [--task ner] [--corpus conll] [--limit 300]
                                [--graph-only]

Throughput depends on a model's size, not its training (MODELS.md), so every model here has random
weights of the real architecture's size, built from the ``transformers`` config defaults (base sizes:
768 wide, 12 layers; DistilBERT 6; BART's defaults are bart-large: 1024 wide, 12 + 12 layers) with a
fixed seed, with the all-MiniLM-L6-v2 tokenizer (BERT's uncased WordPiece vocabulary), all-mpnet-base-v2's,
or for RoBERTa and BART GPT-2's byte-level BPE (their real merges, bench/gpt2_bpe.py). Packages are exported once (``engine export
--accuracy-threshold 0``: the guard compares against an untrained head, which says nothing, so every
GEMM is int8) and cached under ``--home`` (default ``$ENGINE_HOME/sizes``). Each case runs the engine
(2 allocations × 1 thread, the engine's default budgets) and then the ``transformers`` pipeline (PyTorch
fp32, every allowed core, batch 32) in a child process, on the same texts, medians of ``--repeats``, and
reports both as docs/s and as a share of the int8 GEMM limit measured in the same run (bench/limits.py).
``--max-batch-tokens`` sets the engine's token budget per batch, to try other budgets for long rows.

``--packages`` compares packages of one model side by side instead (fused or not, fp32 or int8): the
engine alone, on the same texts, in rounds that run every package once each (so a change in the machine's
load hits all of them alike), medians over ``--repeats`` rounds, as docs/s and as the engine process's CPU
time per text (what the package costs, which other jobs on a shared machine disturb far less than wall time).
``--graph-only`` times the graphs alone instead: ``session.run`` on one thread over the batches the engine's
scheduler forms from the texts, every package in turn within each round, as CPU ms per text.

Cases: ``distilbert-ner`` (sentences), ``bert-cls`` (sentences), ``mpnet-embed`` and ``roberta-embed``
(passages), ``bert-cls-512`` (passages filled to 512 word pieces), ``distilbert-ner-2000`` (~2,000-token
documents, of which ner reads the first 512-token window, as Elasticsearch does; the pipeline truncates
there too), ``bert-qa-2000`` (one question over ~2,000-token documents: 386-token windows with a 128-token
stride, in the engine and in the pipeline), ``bart-mnli-zs10`` (zero-shot over sentences with 10
candidate labels: 10 premise-hypothesis pairs per text, in both).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.config import DEFAULT_MAX_BATCH_TOKENS

from .corpus import load_corpus


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    architecture: str       # transformers model class
    task: str
    tokenizer: str          # "minilm", "mpnet" or "gpt2" (RoBERTa's and BART's byte-level BPE)
    corpus: str             # builtin corpus the texts come from
    words: int = 0          # join corpus texts until each has this many words (long inputs)
    pieces: int = 0         # or until each has this many word pieces with [CLS] and [SEP] (minilm only)
    config: tuple[tuple[str, Any], ...] = ()

    @property
    def model_key(self) -> str:
        """Cases that differ only in their texts share a model and a package."""
        return f"{self.architecture}-{self.task}-{self.tokenizer}"

    @property
    def task_config(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in self.config}


QUESTION = "What does this module do?"
LABELS = ("politics", "sports", "technology", "business", "health", "science", "entertainment", "travel", "food",
          "education")
NER_LABELS = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
NLI_LABELS = ["contradiction", "neutral", "entailment"]  # bart-large-mnli's order
# Where the transformers config defaults are not the real model's size: RoBERTa-base has 514 positions (two
# reserved for its padding offset) and one segment type.
SIZE_OVERRIDES = {"RobertaModel": {"max_position_embeddings": 514, "type_vocab_size": 1}}
CASES = {case.name: case for case in (
    Case("distilbert-ner", "DistilBertForTokenClassification", "ner", "minilm", "builtin-sentences"),
    Case("bert-cls", "BertForSequenceClassification", "text_classification", "minilm", "builtin-sentences"),
    Case("mpnet-embed", "MPNetModel", "text_embedding", "mpnet", "builtin-passages"),
    Case("roberta-embed", "RobertaModel", "text_embedding", "gpt2", "builtin-passages"),
    Case("bert-cls-512", "BertForSequenceClassification", "text_classification", "minilm", "builtin-passages",
         pieces=512),  # filled to BERT's 512 positions: the text-classification pipeline does not truncate
    Case("distilbert-ner-2000", "DistilBertForTokenClassification", "ner", "minilm", "builtin-passages",
         words=1500),  # ner reads the first 512-token window only, and so does the pipeline (it truncates)
    Case("bert-qa-2000", "BertForQuestionAnswering", "question_answering", "minilm", "builtin-passages",
         words=1500, config=(("question", QUESTION), ("tokenization", {"truncate": "none", "span": 128}))),
    Case("bart-mnli-zs10", "BartForSequenceClassification", "zero_shot_classification", "gpt2",
         "builtin-sentences", config=(("labels", LABELS),)),
)}


def build_model(case: Case, out: Path) -> Path:
    """A random-weight model of the architecture's default (base) size, saved with a real tokenizer."""
    import torch
    import transformers

    from .gpt2_bpe import save_roberta_tokenizer
    from .models import minilm_dir
    from .mpnet import mpnet_dir

    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    model_class = getattr(transformers, case.architecture)
    config_class = transformers.AutoConfig.for_model(model_class.config_class.model_type).__class__
    extra: dict[str, Any] = {}
    if case.task == "ner":
        extra = {"num_labels": len(NER_LABELS), "id2label": dict(enumerate(NER_LABELS)),
                 "label2id": {label: i for i, label in enumerate(NER_LABELS)}}
    elif case.task == "text_classification":
        extra = {"num_labels": 2, "id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
    elif case.task == "zero_shot_classification":
        extra = {"num_labels": len(NLI_LABELS), "id2label": dict(enumerate(NLI_LABELS)),
                 "label2id": {label: i for i, label in enumerate(NLI_LABELS)}}
    extra.update(SIZE_OVERRIDES.get(case.architecture, {}))
    model = model_class(config_class(**extra)).eval()
    if case.tokenizer == "gpt2":  # RoBERTa's first two positions are its padding offset
        roberta = case.architecture.startswith("Roberta")
        save_roberta_tokenizer("RobertaTokenizerFast" if roberta else "BartTokenizerFast", out,
                               model.config.max_position_embeddings - (2 if roberta else 0))
    else:
        # DistilBERT takes no segment ids: as a from_pretrained argument (saved with the tokenizer, unlike an
        # attribute set later), the pipeline then does not feed it BERT's token_type_ids
        names = {"model_input_names": ["input_ids", "attention_mask"]} if case.architecture.startswith("DistilBert") else {}
        tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir() if case.tokenizer == "minilm"
                                                               else mpnet_dir(), **names)
        tokenizer.save_pretrained(out)
    model.save_pretrained(out, safe_serialization=True)  # last: config.json marks a finished model
    if case.task == "text_embedding":  # a sentence-transformers layout: mean pooling, normalised
        (out / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
        (out / "1_Pooling").mkdir(exist_ok=True)
        (out / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": model.config.hidden_size, "pooling_mode_mean_tokens": True}))
        (out / "2_Normalize").mkdir(exist_ok=True)
    return out


def export(case: Case, source: Path, package: Path) -> Path:
    """The case's package, exported again when the one in ``--home`` is from an older graph recipe."""
    from engine.manifest import GRAPH_RECIPE, package_recipe

    recipe = package_recipe(package)
    if recipe is not None and recipe >= GRAPH_RECIPE:
        return package
    subprocess.run(["engine", "export", str(source), "--task", case.task, "--out", str(package),
                    "--accuracy-threshold", "0", "--quiet", "--force"], check=True)
    return package


def texts_for(case: Case, limit: int) -> list[str]:
    """The case's texts: corpus texts as they are, or joined until each holds ``case.words`` words or
    ``case.pieces`` word pieces (BERT's WordPiece splits at whitespace first, so a text's pieces are the
    sum of its words' pieces)."""
    if not case.words and not case.pieces:
        return load_corpus(case.corpus, limit)
    count = _piece_counter() if case.pieces else None
    pool = load_corpus(case.corpus)
    texts: list[str] = []
    words: list[str] = []
    pieces, cursor = 2, 0  # [CLS] and [SEP]
    while len(texts) < limit:
        for word in pool[cursor % len(pool)].split():
            if count is None:
                full = len(words) >= case.words
            else:
                full = pieces + count(word) > case.pieces
                pieces += count(word)
            if full and words:
                texts.append(" ".join(words))
                words, pieces = [], 2 + (count(word) if count else 0)
            words.append(word)
        cursor += 1
    return texts[:limit]


def _piece_counter() -> Callable[[str], int]:
    """Word pieces per word with the BERT uncased WordPiece vocabulary (the minilm cases' tokenizer)."""
    import functools

    import transformers

    from .models import minilm_dir

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    return functools.lru_cache(maxsize=None)(lambda word: len(tokenizer.tokenize(word)))


def run_case(case: Case, home: Path, limit: int, repeats: int, allocations: int, threads: int,
             max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS) -> dict[str, Any]:
    from .baselines import run_child
    from .limits import attach_limits
    from .throughput import BenchConfig, allowed_cores, bench_engine

    source = build_model(case, home / "models" / case.model_key)
    package = export(case, source, home / "packages" / case.model_key)
    load_at_start = os.getloadavg()[0]
    texts = texts_for(case, limit)
    corpus_file = home / "corpora" / f"{case.name}-{limit}.txt"
    corpus_file.parent.mkdir(parents=True, exist_ok=True)
    corpus_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    config = BenchConfig(allocations, threads, max_batch_tokens, max(4, allocations), 32)
    rows = [m.to_json() for m in bench_engine(str(package), case.task, texts, [config], repeats, case.task_config,
                                               progress=lambda line: print(line, file=sys.stderr))]
    rows.append(run_child("transformers-pipeline", str(source), case.task, str(corpus_file), limit, repeats,
                          case.task_config))
    limit_meta = attach_limits(rows, str(package), texts, case.task_config,
                               {config.label(): (allocations, threads)},
                               progress=lambda line: print(line, file=sys.stderr))
    engine_row, pipeline_row = rows
    return {"case": case.name, "task": case.task, "architecture": case.architecture, "texts": len(texts),
            "load_average_at_start": load_at_start,
            "allowed_cores": allowed_cores(), "load_average": os.getloadavg()[0], "limit": limit_meta,
            "rows": rows, "engine_over_pipeline": engine_row["docs_per_s"] / pipeline_row["docs_per_s"]}


def compare_packages(packages: dict[str, str], task: str, texts: list[str], rounds: int, allocations: int,
                     threads: int) -> list[dict[str, Any]]:
    """Each package's docs/s per round (every package once per round, in order), with its fused operators."""
    from engine.manifest import read_manifest

    from .throughput import BenchConfig, allowed_cores, bench_engine

    config = BenchConfig(allocations, threads, 2048, max(4, allocations), 32)
    rates: dict[str, list[float]] = {name: [] for name in packages}
    cpu_ms: dict[str, list[float]] = {name: [] for name in packages}
    for _ in range(rounds):
        for name, path in packages.items():
            (measurement,) = bench_engine(path, task, texts, [config], 1, {},
                                          progress=lambda line: print(line, file=sys.stderr))
            rates[name].append(measurement.docs_per_s)
            cpu_ms[name].append(1000.0 * measurement.cpu_utilisation * allowed_cores() / measurement.docs_per_s)
    rows = []
    for name, path in packages.items():
        manifest = read_manifest(Path(path))
        rows.append({"package": name, "path": path, "config": config.label(), "texts": len(texts),
                     "fusions": manifest.optimization.get("fusions", {}),
                     "quantization": manifest.quantization.get("mode"), "rounds": rates[name],
                     "docs_per_s": statistics.median(rates[name]), "cpu_ms_rounds": cpu_ms[name],
                     "cpu_ms_per_text": statistics.median(cpu_ms[name]), "load_average": os.getloadavg()[0]})
    return rows


def compare_graphs(packages: dict[str, str], texts: list[str], rounds: int) -> list[dict[str, Any]]:
    """Each package's ``session.run`` CPU ms per text (one thread, the scheduler's batches) per round."""
    import time

    from engine.batch import collate
    from engine.package import load_package
    from engine.session import create_session

    from .bench_profile import scheduled_batches

    graphs = {}
    for name, path in packages.items():
        loaded = load_package(path)
        config = loaded.runner.parse_config({})
        prepared = [loaded.runner.prepare(text, config) for text in texts]
        batches = scheduled_batches(prepared, DEFAULT_MAX_BATCH_TOKENS, 32)
        feeds = [collate(windows, loaded.manifest.inputs, loaded.tokenizer.pad_token_id).inputs
                 for windows in batches]
        session = create_session(loaded.graph_path, 1)
        session.run(loaded.manifest.output_names, feeds[0])  # warm-up
        graphs[name] = (session, loaded.manifest.output_names, feeds)
    cpu_ms: dict[str, list[float]] = {name: [] for name in packages}
    for _ in range(rounds):
        for name, (session, outputs, feeds) in graphs.items():
            started = time.process_time()
            for feed in feeds:
                session.run(outputs, feed)
            cpu_ms[name].append(1000.0 * (time.process_time() - started) / len(texts))
    return [{"package": name, "path": path, "texts": len(texts), "batches": len(graphs[name][2]),
             "cpu_ms_rounds": cpu_ms[name], "cpu_ms_per_text": statistics.median(cpu_ms[name]),
             "load_average": os.getloadavg()[0]} for name, path in packages.items()]


def graphs_markdown(rows: list[dict[str, Any]]) -> str:
    first = rows[0]["cpu_ms_per_text"]
    lines = ["| package | session.run CPU ms per text (median) | rounds | first ÷ this |", "|---|---:|---|---:|"]
    for row in rows:
        rounds = ", ".join(f"{ms:.2f}" for ms in row["cpu_ms_rounds"])
        lines.append(f"| {row['package']} | {row['cpu_ms_per_text']:.2f} | {rounds} | "
                     f"{first / row['cpu_ms_per_text']:.2f}× |")
    return "\n".join(lines)


def packages_markdown(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    lines = ["| package | quantization | attention fused | docs/s (median) | rounds | CPU ms per text (median) "
             "| rounds | first ÷ this (CPU) |", "|---|---|---|---:|---|---:|---|---:|"]
    for row in rows:
        attention = {op: n for op, n in row["fusions"].items() if "Attention" in op} or "none"
        rounds = ", ".join(f"{rate:.1f}" for rate in row["rounds"])
        cpu_rounds = ", ".join(f"{ms:.1f}" for ms in row["cpu_ms_rounds"])
        lines.append(f"| {row['package']} | {row['quantization']} | {attention} | {row['docs_per_s']:.1f} | "
                     f"{rounds} | {row['cpu_ms_per_text']:.1f} | {cpu_rounds} | "
                     f"{first['cpu_ms_per_text'] / row['cpu_ms_per_text']:.2f}× |")
    return "\n".join(lines)


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| case | texts | GOP/doc | system | docs/s | share of int8 limit | share of package limit | engine ÷ pipeline |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for result in results:
        for row in result["rows"]:
            ratio = f"{result['engine_over_pipeline']:.2f}×" if row["system"] == "engine" else ""
            lines.append(f"| {result['case']} | {result['texts']} | {row['gop_per_doc']:.2f} | {row['system']} "
                         f"{row['config']} | {row['docs_per_s']:.2f} | {row['limit_share']:.1%} | "
                         f"{row['ideal_share']:.1%} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sizes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma list of {sorted(CASES)}")
    parser.add_argument("--limit", type=int, default=200, help="texts per case")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--allocations", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-batch-tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS,
                        help="the engine's token budget per batch (default: the engine's own)")
    parser.add_argument("--home", type=Path, default=None, help="cache of models and packages")
    parser.add_argument("--build-only", action="store_true", help="build and export the packages, measure nothing")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--packages", default=None,
                        help="NAME=DIR,... packages of one model to compare side by side (instead of --cases)")
    parser.add_argument("--task", default="ner", help="the packages' task (with --packages)")
    parser.add_argument("--corpus", default="conll", help="texts for --packages (a corpus name or file)")
    parser.add_argument("--graph-only", action="store_true",
                        help="with --packages: time session.run alone (one thread, CPU ms per text)")
    args = parser.parse_args(argv)
    if args.packages:
        packages = dict(item.split("=", 1) for item in args.packages.split(",") if item.strip())
        texts = load_corpus(args.corpus, args.limit)
        if args.graph_only:
            rows = compare_graphs(packages, texts, args.repeats)
        else:
            rows = compare_packages(packages, args.task, texts, args.repeats, args.allocations, args.threads)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(graphs_markdown(rows) if args.graph_only else packages_markdown(rows))
        return 0
    home = args.home or Path(os.environ.get("ENGINE_HOME", Path.home() / ".cache" / "engine")) / "sizes"
    names = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASES)}")
    results = []
    for name in names:
        case = CASES[name]
        if args.build_only:
            export(case, build_model(case, home / "models" / case.model_key), home / "packages" / case.model_key)
            print(f"built {name}", file=sys.stderr)
            continue
        print(f"case {name} ...", file=sys.stderr)
        results.append(run_case(case, home, args.limit, args.repeats, args.allocations, args.threads,
                                args.max_batch_tokens))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    if results:
        print(markdown(results))
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.bench_sizes"))
