"""What a user would run instead of the engine, measured the same way on the same cores.

Each baseline runs in its own child process (``python -m bench.baselines KIND ...``), so its PyTorch or ONNX
Runtime thread pools, allocator and peak RSS do not mix with the engine's; the child inherits the parent's
CPU affinity, so both use the same cores. It prints one JSON measurement on stdout.

Kinds:
- ``sentence-transformers``: ``SentenceTransformer.encode`` (PyTorch fp32; sorts by length internally).
- ``cross-encoder``: ``sentence_transformers.CrossEncoder.predict`` on (query, text) pairs.
- ``transformers-pipeline``: the ``transformers`` pipeline for the task (PyTorch fp32).
- ``optimum-int8-naive``: an Optimum ONNX export, ``quantize_dynamic``-style int8 via ``ORTQuantizer``, run in
  corpus order in fixed batches (no graph fusion, no length grouping): the plain ONNX route.
- ``fastembed``: FastEmbed's ``TextEmbedding.embed`` (ONNX Runtime fp32, its default batch of 256 in corpus
  order) on our fp32 graph of the source's encoder (``engine export --task pass_through --quantize none``:
  token states out, the layout of the Qdrant conversions FastEmbed downloads, with our Attention and
  SkipLayerNormalization fusions, which ONNX Runtime does not find at load in a plain export), pooled and
  normalised by FastEmbed as the source's sentence-transformers pipeline says. Loaded from a local directory
  (``specific_model_path``), so it never touches the hub.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .corpus import load_corpus
from .throughput import allowed_cores, drive, summarise

PIPELINE_TASKS = {
    "text_embedding": "feature-extraction",
    "ner": "token-classification",
    "text_classification": "text-classification",
    "fill_mask": "fill-mask",
    "question_answering": "question-answering",
    "zero_shot_classification": "zero-shot-classification",
    "text_similarity": "text-classification",
}
BATCH = 32
# Where a baseline's own default batch is what its users run (FastEmbed's embed() default); the others run BATCH.
OWN_BATCH = {"fastembed": 256}


def _sentence_transformers(source: str, task: str, config: dict[str, Any]) -> Callable[[list[str]], object]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(source, device="cpu")
    return lambda texts: model.encode(texts, batch_size=BATCH)


def _cross_encoder(source: str, task: str, config: dict[str, Any]) -> Callable[[list[str]], object]:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(source, device="cpu")
    query = config.get("text", "query")
    return lambda texts: model.predict([(query, text) for text in texts], batch_size=BATCH)


def _pipeline(source: str, task: str, config: dict[str, Any]) -> Callable[[list[str]], object]:
    from transformers import pipeline

    kwargs: dict[str, Any] = {"aggregation_strategy": "simple"} if task == "ner" else {}
    runner = pipeline(PIPELINE_TASKS[task], model=source, device=-1, **kwargs)
    if task == "question_answering":
        return lambda texts: runner(question=[config["question"]] * len(texts), context=texts, batch_size=BATCH)
    if task == "zero_shot_classification":
        return lambda texts: runner(texts, candidate_labels=config["labels"], batch_size=BATCH)
    return lambda texts: runner(texts, batch_size=BATCH)


def _optimum_int8(source: str, task: str, config: dict[str, Any]) -> Callable[[list[str]], object]:
    from optimum.onnxruntime import (
        ORTModelForFeatureExtraction,
        ORTModelForSequenceClassification,
        ORTModelForTokenClassification,
        ORTQuantizer,
    )
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoTokenizer

    model_class = {
        "text_embedding": ORTModelForFeatureExtraction,
        "ner": ORTModelForTokenClassification,
        "text_classification": ORTModelForSequenceClassification,
        "text_similarity": ORTModelForSequenceClassification,
    }[task]
    workdir = Path(tempfile.mkdtemp(prefix="bench-optimum-"))
    model_class.from_pretrained(source, export=True).save_pretrained(workdir / "fp32")
    quantizer = ORTQuantizer.from_pretrained(workdir / "fp32")
    quantizer.quantize(save_dir=workdir / "int8",
                       quantization_config=AutoQuantizationConfig.avx2(is_static=False, per_channel=False))
    model = model_class.from_pretrained(workdir / "int8", file_name="model_quantized.onnx")
    tokenizer = AutoTokenizer.from_pretrained(source)

    def call(texts: list[str]) -> object:
        outputs = []
        for start in range(0, len(texts), BATCH):
            encoded = tokenizer(texts[start:start + BATCH], padding=True, truncation=True, return_tensors="np")
            result = model(**encoded)
            if task == "text_embedding":
                hidden = np.asarray(result.last_hidden_state)
                mask = encoded["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(1) / mask.sum(1)
                outputs.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
            else:
                outputs.append(np.asarray(result.logits))
        return outputs

    return call


def _fastembed(source: str, task: str, config: dict[str, Any]) -> Callable[[list[str]], object]:
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    from exporters.export import export
    from exporters.sentence_pipeline import read_sentence_pipeline
    from exporters.source import resolve_source

    pipeline = read_sentence_pipeline(resolve_source(source, None, False, False), allow_pickle=False)
    pooling = {("mean",): PoolingType.MEAN, ("cls",): PoolingType.CLS}.get(pipeline.pooling)
    if pooling is None or pipeline.dense:
        raise RuntimeError(f"FastEmbed pools by mean or CLS only; {source} has pooling {pipeline.pooling} "
                           f"and {len(pipeline.dense)} Dense layers")
    model_dir = export(source, Path(tempfile.mkdtemp(prefix="bench-fastembed-")) / "model", task="pass_through",
                       quantize="none", progress=False)
    # FastEmbed reads the tokenizer files of a hub repo from the model directory: the source's own, with
    # truncation at the sentence-transformers length (its catalogue's "256 input tokens" for MiniLM).
    source_dir = Path(source)
    for name in ("tokenizer.json", "config.json", "special_tokens_map.json"):
        shutil.copy(source_dir / name, model_dir / name)
    tokenizer_config = json.loads((source_dir / "tokenizer_config.json").read_text())
    sentence_config = source_dir / "sentence_bert_config.json"
    if sentence_config.exists():
        tokenizer_config["model_max_length"] = json.loads(sentence_config.read_text())["max_seq_length"]
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    # Registered once per process and postprocessing (FastEmbed refuses a name twice); the graph comes
    # from specific_model_path, dim is only FastEmbed's description.
    name = f"bench/local-{pooling.value.lower()}{'-normalized' if pipeline.normalize else ''}"
    if all(model["model"] != name for model in TextEmbedding.list_supported_models()):
        TextEmbedding.add_custom_model(name, pooling=pooling, normalization=pipeline.normalize,
                                       sources=ModelSource(hf=name), model_file="model.onnx",
                                       dim=json.loads((source_dir / "config.json").read_text())["hidden_size"])
    model = TextEmbedding(name, specific_model_path=str(model_dir), threads=allowed_cores(),
                          providers=["CPUExecutionProvider"], local_files_only=True)
    return lambda texts: list(model.embed(texts, batch_size=OWN_BATCH["fastembed"]))


KINDS: dict[str, Callable[[str, str, dict[str, Any]], Callable[[list[str]], object]]] = {
    "sentence-transformers": _sentence_transformers,
    "cross-encoder": _cross_encoder,
    "transformers-pipeline": _pipeline,
    "optimum-int8-naive": _optimum_int8,
    "fastembed": _fastembed,
}


def baselines_for(task: str) -> list[str]:
    """The baselines a user of this task would otherwise pick; FastEmbed only where it is installed (the
    ``bench`` extra), so a bench without it still runs the others."""
    if task == "text_embedding":
        return ["sentence-transformers", "optimum-int8-naive",
                *(["fastembed"] if importlib.util.find_spec("fastembed") else [])]
    if task == "text_similarity":
        return ["cross-encoder", "optimum-int8-naive"]
    if task in ("ner", "text_classification"):
        return ["transformers-pipeline", "optimum-int8-naive"]
    return ["transformers-pipeline"]


def run_child(kind: str, source: str, task: str, corpus: str, limit: int | None, repeats: int,
              config: dict[str, Any]) -> dict[str, Any]:
    """Run one baseline in a child process and return its measurement (the child prints JSON)."""
    command = [sys.executable, "-m", "bench.baselines", kind, "--source", source, "--task", task,
               "--corpus", corpus, "--repeats", str(repeats), "--config", json.dumps(config)]
    if limit:
        command += ["--limit", str(limit)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False,
                               cwd=Path(__file__).resolve().parents[1])
    if completed.returncode != 0:
        raise RuntimeError(f"baseline {kind} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--source", required=True, help="Hugging Face model directory")
    parser.add_argument("--task", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="{}", help="task options as JSON (question, text, labels)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(allowed_cores())
    texts = load_corpus(args.corpus, args.limit)
    call = KINDS[args.kind](args.source, args.task, json.loads(args.config))
    call(texts[:BATCH])
    runs = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        wall, _, cpu = drive(call, texts, 1, len(texts))
        runs.append((wall, [(time.perf_counter() - started) * 1000.0], cpu))
    from transformers import AutoTokenizer

    n_tokens = sum(len(ids) for ids in AutoTokenizer.from_pretrained(args.source)(texts, truncation=True)["input_ids"])
    print(json.dumps(summarise(args.kind, f"batch {OWN_BATCH.get(args.kind, BATCH)}", texts, n_tokens, runs).to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
