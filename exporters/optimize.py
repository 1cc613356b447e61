"""Transformer graph fusion for CPU, checked against the unfused graph.

ONNX Runtime's ``onnxruntime.transformers.optimizer`` rewrites the exported op soup into the
contrib ops its CPU kernels implement in one pass each (Attention, EmbedLayerNormalization,
LayerNormalization, BiasGelu); the attention its fuser leaves alone (MPNet's position bias,
MobileBERT's bottleneck) becomes MultiHeadAttention in :mod:`exporters.attention_bias`. Pattern
fusion can silently change results when a model's graph only looks like BERT's (RoBERTa's position
ids, DeBERTa's disentangled attention, MobileBERT's NoNorm), so every fused graph is run against the
unfused one on random but valid inputs, and the unfused graph is kept when they differ. Measured on all-MiniLM-L6-v2, one thread, see
bench/RESULTS.md "Exporters".
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

from engine.errors import ExportError
from engine.session import checking_session

from .attention_bias import fuse_attention_with_bias

# Hugging Face model_type -> the ONNX Runtime fuser that knows its graph. All encoders here share
# BERT's layer structure closely enough for the "bert" fuser to try; whatever it gets wrong the
# parity check rejects. The bart fuser covers encoder-decoder attention.
FUSER_BY_ARCHITECTURE = {
    "albert": "bert",
    "bert": "bert",
    "camembert": "bert",
    "deberta": "bert",
    "deberta-v2": "bert",
    "distilbert": "bert",
    "dpr": "bert",
    "electra": "bert",
    "mobilebert": "bert",
    "mpnet": "bert",
    "retribert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "bart": "bart",
    "mbart": "bart",
}
PARITY_TOLERANCE = 1e-3
# Right-padded rows of different lengths (what engine/batch.py feeds), then a single short row,
# so dynamic axes and masking are both exercised. 13 is chosen to differ from common label counts,
# so sequence axes are recognisable by size.
PARITY_LENGTHS = ((13, 9, 4), (6,))
# Token ids below this exist in every vocabulary we export (byte-level BPE has 256 base tokens).
SAFE_TOKEN_IDS = 100
# protobuf cannot serialise a single message over 2 GB; bigger graphs keep their weights beside them.
PROTOBUF_LIMIT = 2**31 - 2**24


def optimize_graph(
    src: Path, dst: Path, architecture: str, num_heads: int, hidden_size: int
) -> dict[str, Any]:
    """Write the fused fp32 graph of ``src`` to ``dst``, or ``src`` unchanged when fusion cannot be trusted.

    Args:
        src: the exported fp32 ONNX graph.
        dst: where the graph to ship is written (fused, or a copy of ``src``).
        architecture: Hugging Face ``config.model_type``.
        num_heads: attention heads (``config.num_attention_heads``).
        hidden_size: model width (``config.hidden_size``).

    Returns:
        The manifest ``optimization`` block: ``fused`` (bool), ``fusions`` ({op type: count},
        only the non-zero ones), ``opset`` (default-domain opset of ``dst``), and either
        ``fuser`` and ``parity`` ({``max_rel_err``, ``tolerance``}) when fused, or ``reason``
        when the unfused graph was kept.

    Raises:
        ExportError: ``src`` is missing, or ``num_heads`` / ``hidden_size`` are not positive.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ExportError(f"graph [{src}] does not exist")
    if num_heads <= 0 or hidden_size <= 0:
        raise ExportError(
            f"num_heads and hidden_size must be positive, got [{num_heads}] and [{hidden_size}]"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    fuser = FUSER_BY_ARCHITECTURE.get(architecture)
    if fuser is None:
        return _keep_unfused(src, dst, f"ONNX Runtime has no fusion rules for architecture [{architecture}]")

    options = FusionOptions(fuser)
    # A raw 2-D mask instead of the default per-row length ("mask index"): correct for any padding
    # pattern, not only right padding, at no measurable cost on CPU.
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    # Residual + LayerNorm stay ``Add`` + ``LayerNormalization``: ORT's ``SkipLayerNormalization`` CPU
    # kernel (1.32) takes 4x as long as the two plain kernels on the same [940, 384] rows, and was
    # a quarter of an int8 MiniLM batch (bench/RESULTS.md "The residual LayerNorm, unfused").
    # engine.session keeps ORT from fusing them back at load.
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    try:
        fused = optimize_model(
            str(src),
            model_type=fuser,
            num_heads=num_heads,
            hidden_size=hidden_size,
            optimization_options=options,
            opt_level=0,
            use_gpu=False,
        )
    except Exception as error:  # noqa: BLE001 - a fuser crash must not stop the export; record it
        return _keep_unfused(src, dst, f"the {fuser} fuser failed: {type(error).__name__}: {error}")
    fusions = dict(fused.get_fused_operator_statistics())
    # Attention ORT's fuser leaves alone because of a position bias on its scores (MPNet).
    fusions["MultiHeadAttention"] = fusions.get("MultiHeadAttention", 0) + fuse_attention_with_bias(fused, num_heads)
    fusions = {op: count for op, count in fusions.items() if count > 0}
    if not fusions:
        return _keep_unfused(src, dst, f"the {fuser} fuser matched no pattern in this graph")
    fused.save_model_to_file(str(dst), use_external_data_format=fused.model.ByteSize() > PROTOBUF_LIMIT)

    try:
        error = max_relative_error(src, dst)
    except Exception as failure:  # noqa: BLE001 - a fused graph ORT cannot run is one the parity check rejects
        _remove_graph(dst)
        return _keep_unfused(src, dst, f"the fused graph does not run: {type(failure).__name__}: {failure}")
    if not error <= PARITY_TOLERANCE:
        _remove_graph(dst)
        return _keep_unfused(
            src,
            dst,
            f"fused graph differs from the unfused one: max relative error {error:.2e} > {PARITY_TOLERANCE}",
        )
    return {
        "fused": True,
        "fuser": fuser,
        "fusions": fusions,
        "parity": {"max_rel_err": float(error), "tolerance": PARITY_TOLERANCE},
        "opset": _opset(dst),
    }


def max_relative_error(reference: Path, candidate: Path) -> float:
    """Largest ``|candidate - reference| / max|reference|`` over all outputs on random valid inputs.

    Outputs with a ``[batch, sequence]`` prefix are compared on real tokens only: padded positions
    carry no meaning and the engine trims them. NaN anywhere makes the result NaN.
    """
    ref_session, cand_session = checking_session(reference), checking_session(candidate)
    worst = 0.0
    for feed in parity_feeds(ref_session, reference):
        real = feed["attention_mask"].astype(bool)
        expected = ref_session.run(None, feed)
        actual = cand_session.run(None, {name: feed[name] for name in _input_names(cand_session)})
        for ref, cand in zip(expected, actual, strict=True):
            if ref.ndim >= 2 and ref.shape[:2] == real.shape:
                ref, cand = ref[real], cand[real]
            scale = max(float(np.abs(ref).max(initial=0.0)), 1e-6)
            worst = max(worst, float(np.abs(cand.astype(np.float64) - ref).max(initial=0.0)) / scale)
            if np.isnan(cand).any() or np.isnan(ref).any():
                return float("nan")
    return worst


def parity_feeds(session: ort.InferenceSession, path: Path) -> list[dict[str, np.ndarray]]:
    """Random right-padded batches valid for the graph at ``path``: ids within its vocabulary,
    token types within its type vocabulary, masks that match the row lengths."""
    rows = _embedding_rows(onnx.load(str(path), load_external_data=False))
    rng = np.random.default_rng(0)
    feeds = []
    for lengths in PARITY_LENGTHS:
        width = max(lengths)
        mask = (np.arange(width)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
        values = {
            "input_ids": rng.integers(
                1, min(SAFE_TOKEN_IDS, rows.get("input_ids", SAFE_TOKEN_IDS)), mask.shape
            )
            * mask,
            "attention_mask": mask,
            "token_type_ids": rng.integers(0, rows.get("token_type_ids", 1), mask.shape) * mask,
        }
        feeds.append({item.name: _as_input(values[item.name], item.type) for item in session.get_inputs()})
    return feeds


def _embedding_rows(model: onnx.ModelProto) -> dict[str, int]:
    """Rows of the embedding tables looked up directly by each graph input (vocabulary sizes)."""
    inputs = {item.name for item in model.graph.input}
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    rows: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[1] in inputs and node.input[0] in shapes:
            rows[node.input[1]] = shapes[node.input[0]][0]
    return rows


def _as_input(values: np.ndarray, onnx_type: str) -> np.ndarray:
    return values.astype(np.int32 if onnx_type == "tensor(int32)" else np.int64)


def _input_names(session: ort.InferenceSession) -> list[str]:
    return [item.name for item in session.get_inputs()]


def _opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next(item.version for item in model.opset_import if item.domain in ("", "ai.onnx"))


def _external_files(path: Path) -> set[str]:
    """Names of the external-data files a graph keeps its weights in (relative to its folder)."""
    model = onnx.load(str(path), load_external_data=False)
    return {
        entry.value
        for tensor in model.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }


def _remove_graph(path: Path) -> None:
    for name in _external_files(path):
        (path.parent / name).unlink(missing_ok=True)
    path.unlink()


def _keep_unfused(src: Path, dst: Path, reason: str) -> dict[str, Any]:
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
        for name in _external_files(src):
            shutil.copyfile(src.parent / name, dst.parent / name)
    return {"fused": False, "fusions": {}, "reason": reason, "opset": _opset(src)}
