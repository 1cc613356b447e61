"""What an exported graph must equal: the task's graph contract computed with transformers /
sentence-transformers directly, and the package's graph run on the same feeds. One oracle for every
exporter test that compares a graph with PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import torch

from engine.manifest import read_manifest


def torch_outputs(architecture: str, task: str, model_dir: Path, feeds: dict[str, np.ndarray],
                  texts: list[str]) -> list[np.ndarray]:
    """The graph contract's outputs from PyTorch for ``feeds``, which encode ``texts`` (sentence-transformers
    encodes the texts itself, truncated to the feeds' length as the graph sees them)."""
    import transformers as tf

    tensors = {name: torch.from_numpy(value) for name, value in feeds.items()}
    with torch.no_grad():
        if architecture == "retribert":
            # The deprecated model needs a BERT setting its checkpoints never saved (see exporters/loading.py).
            config = tf.RetriBertConfig.from_pretrained(str(model_dir))
            config.position_embedding_type = "absolute"
            model = tf.RetriBertModel.from_pretrained(str(model_dir), config=config)
            return [model.embed_questions(tensors["input_ids"], tensors["attention_mask"]).numpy()]
        if architecture in ("dpr_question", "dpr_context"):
            encoder = tf.DPRQuestionEncoder if architecture == "dpr_question" else tf.DPRContextEncoder
            return [encoder.from_pretrained(str(model_dir))(**tensors).pooler_output.numpy()]
        if task == "text_embedding":
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(model_dir), device="cpu")
            model.max_seq_length = feeds["input_ids"].shape[1]
            return [model.encode(texts, convert_to_numpy=True, batch_size=len(texts))]
        auto = {
            "fill_mask": tf.AutoModelForMaskedLM,
            "text_expansion": tf.AutoModelForMaskedLM,
            "ner": tf.AutoModelForTokenClassification,
            "question_answering": tf.AutoModelForQuestionAnswering,
            "pass_through": tf.AutoModel,
        }.get(task, tf.AutoModelForSequenceClassification)
        output = auto.from_pretrained(str(model_dir)).eval()(**tensors)
    if task == "question_answering":
        return [output.start_logits.numpy(), output.end_logits.numpy()]
    if task == "pass_through":
        return [output.last_hidden_state.numpy()]
    if task == "text_expansion":
        weights = np.log1p(np.maximum(output.logits.numpy(), 0.0)) * feeds["attention_mask"][..., None]
        return [weights.max(axis=1)]
    return [output.logits.numpy()]


def graph_outputs(package: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The package's graph on ``feeds``, outputs in manifest order."""
    manifest = read_manifest(package)
    session = onnxruntime.InferenceSession(str(package / manifest.graph), providers=["CPUExecutionProvider"])
    return session.run(manifest.output_names, {name: feeds[name] for name in manifest.inputs})
