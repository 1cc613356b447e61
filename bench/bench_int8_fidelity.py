"""int8 fidelity and speed of the default export: does the guard's promise hold on text it never saw?

For all-MiniLM-L6-v2 and all-mpnet-base-v2 exported with the defaults (``exporters.export``: int8,
static activation scales, guard on), against sentence-transformers fp32:

- cosine on STS-B sentences (``../shared/data/sts``, dev and the test half, ``--limit`` of them
  evenly spaced over all genres; the guard calibrates on the project's own text, so none of these
  were seen), each sentence run alone and in batches of 32, and likewise on the STS-B sentences of
  1-8 words;
- how far batching moves a text (cosine between its embedding alone and in a batch);
- single-thread throughput of the package against another package of the same model (``--baseline``,
  e.g. one exported by an older commit), interleaved, medians of ``--repeats``: STS sentences in
  batches of 32, DBpedia entity descriptions (``../shared/data/retrieval``) in batches of 16, and one
  short query at a time.

And a MiniLM-size SST-2 classifier (the all-MiniLM-L6-v2 body with a classification head,
fine-tuned here on ``sst2_dev_a.tsv`` rows 1-400, seed 0), exported int8 by default: accuracy of
PyTorch fp32 and of the package on rows 401-600.

Run from the repository root::

    python -m bench.bench_int8_fidelity --work /tmp/fidelity [--models minilm mpnet sst2]
        [--baseline minilm=/path/to/older/package] [--json bench/results/int8_fidelity.json]

Packages are exported into ``--work`` (reused when present). Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from engine.batch import collate
from engine.manifest import read_manifest
from engine.session import create_session

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
STS_FILES = ("sts-dev.csv", "sts-test_a.csv")
SHORT_WORDS = 8


class _Row:
    def __init__(self, ids: list[int], types: list[int]) -> None:
        self.input_ids = np.asarray(ids, dtype=np.int64)
        self.token_type_ids = np.asarray(types, dtype=np.int64)


class Package:
    """A package's graph on one thread, fed as the engine feeds it (right padding, masks)."""

    def __init__(self, path: Path) -> None:
        self.manifest = read_manifest(path)
        self.tokenizer = Tokenizer.from_file(str(path / self.manifest.tokenizer))
        self.tokenizer.enable_truncation(min(self.manifest.tokenization.max_sequence_length, 384))
        self.session = create_session(path / self.manifest.graph, 1)
        self.pad = int(self.manifest.special_tokens["pad"][1])

    def run(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(texts)
        batch = collate([_Row(e.ids, e.type_ids) for e in encoded], self.manifest.inputs, self.pad)
        return self.session.run(None, batch.inputs)[0]

    def batched(self, texts: list[str], size: int) -> np.ndarray:
        return np.concatenate([self.run(texts[i : i + size]) for i in range(0, len(texts), size)])


def sts_sentences() -> list[str]:
    sentences: list[str] = []
    for name in STS_FILES:
        for line in (SHARED_DATA / "sts" / name).read_text(encoding="utf-8").splitlines():
            sentences.extend(line.split("\t")[5:7])
    return list(dict.fromkeys(s.strip() for s in sentences if s.strip()))


def dbpedia_passages(limit: int) -> list[str]:
    path = SHARED_DATA / "retrieval" / "dbpedia_subset" / "corpus.jsonl"
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for _, line in zip(range(limit), handle, strict=False)]
    return [f"{row.get('title', '')}. {row.get('text', '')}".strip() for row in rows]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _figures(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": round(float(values.mean()), 4),
        "p1": round(float(np.percentile(values, 1)), 4),
        "min": round(float(values.min()), 4),
        "n": int(values.size),
    }


def fidelity(model_dir: Path, package: Path, limit: int) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    every = sts_sentences()
    # spread over the files: they start with hundreds of short video captions, then news and forums
    sentences = every[:: max(1, len(every) // limit)][:limit]
    short = [s for s in every if len(s.split()) <= SHORT_WORDS]
    short = short[:: max(1, len(short) // limit)][:limit]
    reference = SentenceTransformer(str(model_dir), device="cpu")
    engine = Package(package)
    result: dict[str, Any] = {"quantization": engine.manifest.quantization}
    for name, texts in (("sts", sentences), ("sts_1_to_8_words", short)):
        expected = reference.encode(texts, batch_size=32, convert_to_numpy=True)
        alone = np.concatenate([engine.run([text]) for text in texts])
        batched = engine.batched(texts, 32)
        result[name] = {
            "alone": _figures(_cosines(expected, alone)),
            "batched_32": _figures(_cosines(expected, batched)),
            "alone_vs_batched": _figures(_cosines(alone, batched)),
        }
    return result


def throughput(packages: dict[str, Path], repeats: int) -> dict[str, Any]:
    """Texts per second per package and workload, the packages interleaved in every repeat."""
    workloads = {
        "sts_sentences_b32": (sts_sentences()[:512], 32),
        "dbpedia_passages_b16": (dbpedia_passages(128), 16),
        "one_query_b1": ([s for s in sts_sentences() if len(s.split()) <= SHORT_WORDS][:128], 1),
    }
    loaded = {name: Package(path) for name, path in packages.items()}
    times: dict[str, dict[str, list[float]]] = {w: {p: [] for p in loaded} for w in workloads}
    for workload, (texts, size) in workloads.items():
        for engine in loaded.values():
            engine.batched(texts[: size * 2], size)  # warm-up
        for _ in range(repeats):
            for name, engine in loaded.items():
                started = time.perf_counter()
                engine.batched(texts, size)
                times[workload][name].append(time.perf_counter() - started)
    return {
        workload: {
            name: {
                "texts_per_s": round(len(workloads[workload][0]) / statistics.median(values), 1),
                "repeats_s": [round(v, 3) for v in values],
            }
            for name, values in per_package.items()
        }
        for workload, per_package in times.items()
    }


def sst2_rows(first: int, last: int) -> list[tuple[str, int]]:
    lines = (SHARED_DATA / "sentiment" / "sst2_dev_a.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line.strip()]
    if not rows[0][-1].strip().isdigit():
        rows = rows[1:]
    return [(sentence.strip(), int(label)) for sentence, label in rows[first - 1 : last]]


def train_sst2(out: Path, epochs: int = 4) -> Path:
    """Fine-tune the MiniLM body with a fresh head on SST-2 rows 1-400 (deterministic: seed 0)."""
    import torch
    import transformers

    from .models import minilm_task_model

    if (out / "config.json").is_file():
        return out
    minilm_task_model("text_classification", out)
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    rows = sst2_rows(1, 400)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    generator = np.random.default_rng(0)
    model.train()
    for _ in range(epochs):
        order = generator.permutation(len(rows))
        for start in range(0, len(rows), 16):
            batch = [rows[i] for i in order[start : start + 16]]
            encoded = tokenizer([s for s, _ in batch], padding=True, truncation=True, return_tensors="pt")
            loss = model(**encoded, labels=torch.tensor([label for _, label in batch])).loss
            loss.backward()
            optimiser.step()
            optimiser.zero_grad()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    return out


def sst2(work: Path) -> dict[str, Any]:
    import torch
    import transformers

    from exporters import export

    model_dir = train_sst2(work / "minilm-sst2")
    package = work / "minilm-sst2-int8"
    if not (package / "engine.json").is_file():
        export(model_dir, package, task="text_classification", force=True)
    rows = sst2_rows(401, 600)
    texts, labels = [s for s, _ in rows], np.array([label for _, label in rows])
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        logits = np.concatenate([
            model(**tokenizer(texts[i : i + 32], padding=True, truncation=True, return_tensors="pt")).logits.numpy()
            for i in range(0, len(texts), 32)
        ])
    engine = Package(package)
    int8 = np.concatenate([engine.run([text]) for text in texts])
    torch_accuracy = float((logits.argmax(1) == labels).mean())
    int8_accuracy = float((int8.argmax(1) == labels).mean())
    return {
        "rows": "sst2_dev_a.tsv 401-600",
        "pytorch_fp32_accuracy": round(torch_accuracy, 4),
        "int8_accuracy": round(int8_accuracy, 4),
        "difference_points": round(100 * (int8_accuracy - torch_accuracy), 2),
        "label_agreement": round(float((logits.argmax(1) == int8.argmax(1)).mean()), 4),
        "quantization": engine.manifest.quantization,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["minilm", "mpnet", "sst2"])
    parser.add_argument("--baseline", action="append", default=[], help="MODEL=PACKAGE to time against")
    parser.add_argument("--limit", type=int, default=1000, help="STS sentences per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from exporters import export

    from .models import minilm_dir
    from .mpnet import mpnet_dir

    args.work.mkdir(parents=True, exist_ok=True)
    baselines = dict(item.split("=", 1) for item in args.baseline)
    results: dict[str, Any] = {}
    for name in args.models:
        if name == "sst2":
            results[name] = sst2(args.work)
            print(json.dumps({name: {k: v for k, v in results[name].items() if k != "quantization"}}))
            continue
        model_dir = minilm_dir() if name == "minilm" else mpnet_dir()
        package = args.work / f"{name}-int8"
        if not (package / "engine.json").is_file():
            export(model_dir, package, force=True)
        results[name] = fidelity(model_dir, package, args.limit)
        if name in baselines:
            results[name]["throughput"] = throughput(
                {"this": package, "baseline": Path(baselines[name])}, args.repeats
            )
        print(json.dumps({name: {k: v for k, v in results[name].items() if k != "quantization"}}))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
