"""Dynamic int8 quantisation with an accuracy guard.

The base is ONNX Runtime's dynamic quantisation of the weights of ``MatMul`` and fused
``Attention`` nodes: activations are quantised per tensor at run time (uint8), weights per output
channel, symmetric int8 with ``reduce_range`` (7-bit). ``reduce_range`` is not optional on CPUs
without VNNI (AVX2, AVX-512 without VNNI): their u8×s8 kernels add pairs of products in saturating
int16, and full-range weights overflow it. Measured on all-mpnet-base-v2 (AMD EPYC, AVX2): mean
cosine to fp32 0.009 per-channel without reduce_range, 0.916 with it, 0.785 per-tensor.

Some models still lose too much (all-mpnet-base-v2: 0.916), so the guard keeps the most
sensitive nodes in fp32 until the task's agreement metric reaches the threshold:

1. quantise everything and measure; done if it is good enough;
2. build one *probe* graph from the fp32 graph in which every candidate node can switch, through a
   boolean gate input, between fp32 and a simulation of its int8 path (the same
   DynamicQuantizeLinear on the activation, the exact int8 weights ONNX Runtime produced);
3. rank the nodes by the output error each one causes alone (a few samples, one probe run per
   node: no re-quantisation), then find by bisection the shortest prefix of that ranking that
   reaches the threshold over all feeds;
4. quantise for real with that prefix excluded, and measure again; widen the prefix if the real
   graph falls short of the simulation.

On all-mpnet-base-v2 (72 candidate nodes, 128 calibration sentences) the whole guard takes about
95 s on 2 shared cores, 28 s of it ranking; see bench/RESULTS.md, "Exporters".
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from engine.errors import ExportError

METRICS = ("cosine", "argmax", "token_argmax", "sparse_cosine", "score")
DEFAULT_THRESHOLD = 0.99
QUANTIZED_OP_TYPES = ("MatMul", "Attention")
METHOD = "onnxruntime dynamic int8: MatMul/Attention weights per-channel symmetric 7-bit (reduce_range), activations uint8 per tensor"
# Rows used to rank node sensitivity. On all-mpnet-base-v2, 8 and 16 rows rank the same 7 most
# damaging nodes first and lead to the same agreement (0.9909 vs 0.9911); 8 takes 28 s instead of 59 s.
RANKING_SAMPLES = 8
# Real quantisations tried after the simulated search before giving up (each widens the prefix).
REAL_TRIES = 3
GATES = "quantization_gates"

Outputs = list[list[np.ndarray]]  # per feed, per graph output


@dataclass
class Agreement:
    """One measurement of the int8 graph against fp32: per-sample scores and their summary."""

    metric: str
    scores: np.ndarray

    @property
    def value(self) -> float:
        return float(self.scores.mean())

    @property
    def min(self) -> float:
        return float(self.scores.min())

    def block(self, threshold: float) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": round(self.value, 6),
            "min": round(self.min, 6),
            "threshold": threshold,
            "n_samples": int(self.scores.size),
        }


def quantize_with_guard(
    fp32: Path,
    dst: Path,
    feeds: list[dict[str, np.ndarray]],
    metric: str,
    threshold: float = DEFAULT_THRESHOLD,
    progress: bool = True,
) -> dict[str, Any]:
    """Quantise ``fp32`` to int8 at ``dst``, keeping nodes in fp32 until ``metric`` ≥ ``threshold``.

    Args:
        fp32: the fp32 ONNX graph (fused or not).
        dst: where the int8 graph is written.
        feeds: calibration batches, each a dict of input arrays; ``attention_mask`` is required
            (token-level metrics compare real tokens only). Keys the graph does not take are ignored.
        metric: ``cosine`` (mean cosine of the rows of the first output; text_embedding),
            ``sparse_cosine`` (the same on sparse weight vectors; text_expansion), ``argmax``
            (agreement of the last-axis argmax; classification-like), ``token_argmax`` (argmax
            agreement over real tokens; ``[batch, seq]`` outputs such as QA start/end logits are
            compared by their argmax over the sequence), ``score`` (``1 - max|int8 - fp32| /
            max|fp32|`` per sample; scalar outputs such as text_similarity's one logit, where a
            cosine would only compare signs). ``[batch, seq, hidden]`` outputs under ``cosine``
            (pass_through) score the mean cosine of each sample's real tokens.
        threshold: the mean per-sample score the int8 graph must reach.
        progress: print one line per stage to stderr.

    Returns:
        The manifest ``quantization`` block: ``mode``, ``method``, ``op_types``, ``kept_fp32``
        (node names), ``candidates`` (quantisable nodes), ``agreement`` (metric, value = mean
        per-sample score, min = worst sample, threshold, n_samples), ``reached_threshold`` and
        ``seconds``. When no prefix of the ranking reaches the threshold within the tries,
        ``reached_threshold`` is false and ``dst`` holds the best graph measured; the caller
        decides whether to ship it.

    Raises:
        ExportError: unknown metric, threshold outside [0, 1], no feeds, feeds without
            ``attention_mask``, or a missing fp32 graph.
    """
    _check_arguments(fp32, feeds, metric, threshold)
    started = time.perf_counter()
    say = _reporter(progress)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    reference = _run(fp32, feeds)
    with tempfile.TemporaryDirectory(prefix="engine-quantize-") as tmp:
        work = Path(tmp)
        everything = work / "all.onnx"
        _quantize(fp32, everything, exclude=[])
        measured = _agreement(metric, reference, _run(everything, feeds), feeds)
        say(f"int8, all nodes: {metric} {measured.value:.4f} (min {measured.min:.4f}), threshold {threshold}")
        candidates = _candidates(fp32, everything)
        kept: list[str] = []
        best = everything
        if measured.value < threshold and candidates:
            probe = _Probe(fp32, everything, candidates, work)
            order = probe.rank(reference, feeds, metric, say)
            count = probe.shortest_prefix(order, reference, feeds, metric, threshold, say)
            for attempt in range(REAL_TRIES):
                trial = work / f"guarded-{attempt}.onnx"
                _quantize(fp32, trial, exclude=order[:count])
                result = _agreement(metric, reference, _run(trial, feeds), feeds)
                say(f"int8, {count} nodes kept fp32: {metric} {result.value:.4f} (min {result.min:.4f})")
                if attempt == 0 or result.value > measured.value:
                    measured, best, kept = result, trial, order[:count]
                if result.value >= threshold or count == len(order):
                    break
                count = min(len(order), count + max(1, count // 2))
        shutil.copyfile(best, dst)
    seconds = round(time.perf_counter() - started, 1)
    say(f"quantised in {seconds} s; kept {len(kept)} of {len(candidates)} nodes in fp32")
    return {
        "mode": "int8",
        "method": METHOD,
        "op_types": list(QUANTIZED_OP_TYPES),
        "kept_fp32": kept,
        "candidates": len(candidates),
        "agreement": measured.block(threshold),
        "reached_threshold": measured.value >= threshold,
        "seconds": seconds,
    }


def _check_arguments(fp32: Path, feeds: list[dict[str, np.ndarray]], metric: str, threshold: float) -> None:
    if metric not in METRICS:
        raise ExportError(f"unknown quantization metric [{metric}]; expected one of {METRICS}")
    if not 0.0 <= threshold <= 1.0:
        raise ExportError(f"quantization threshold must be in [0, 1], got [{threshold}]")
    if not feeds:
        raise ExportError("quantization needs at least one calibration batch")
    if any("attention_mask" not in feed for feed in feeds):
        raise ExportError("every calibration batch must carry [attention_mask]")
    if not Path(fp32).is_file():
        raise ExportError(f"fp32 graph [{fp32}] does not exist")


def _reporter(progress: bool) -> Any:
    def say(message: str) -> None:
        if progress:
            print(f"quantize: {message}", file=sys.stderr, flush=True)

    return say


def _quantize(fp32: Path, dst: Path, exclude: Sequence[str]) -> None:
    # DefaultTensorType: outputs of contrib ops (fused Attention, SkipLayerNormalization) have no
    # inferred type, and the quantiser refuses to guess; they are all float here.
    quantize_dynamic(
        fp32,
        dst,
        op_types_to_quantize=list(QUANTIZED_OP_TYPES),
        per_channel=True,
        reduce_range=True,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


def _session(model: Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _feed_for(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {item.name: feed[item.name] for item in session.get_inputs() if item.name in feed}


def _run(path: Path, feeds: list[dict[str, np.ndarray]]) -> Outputs:
    session = _session(path)
    return [session.run(None, _feed_for(session, feed)) for feed in feeds]


def _cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Row cosines; two all-zero rows (an empty sparse vector on both sides) agree fully."""
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    cand = candidate.reshape(candidate.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    both_zero = (np.abs(ref).sum(1) == 0) & (np.abs(cand).sum(1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, (ref * cand).sum(1) / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, cos)


def _sample_cosines(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row cosines; for ``[batch, seq, hidden]`` outputs (pass_through) the mean cosine of each
    sample's real token vectors, since padded positions carry no meaning."""
    if reference.ndim == 3 and reference.shape[:2] == mask.shape:
        width = reference.shape[2]
        tokens = _cosines(reference.reshape(-1, width), candidate.reshape(-1, width)).reshape(mask.shape)
        return (tokens * mask).sum(1) / np.maximum(mask.sum(1), 1)
    return _cosines(reference, candidate)


def _score_closeness(reference: Outputs, candidate: Outputs) -> np.ndarray:
    """``1 - max|int8 - fp32| / max|fp32|`` per sample, the scale taken over all samples: for
    scalar outputs (a cross-encoder's one logit), where a cosine only compares signs."""
    ref = [outputs[0].reshape(outputs[0].shape[0], -1).astype(np.float64) for outputs in reference]
    cand = [outputs[0].reshape(outputs[0].shape[0], -1).astype(np.float64) for outputs in candidate]
    scale = max(max(float(np.abs(rows).max(initial=0.0)) for rows in ref), 1e-12)
    gaps = np.concatenate([np.abs(c - r).max(1) for r, c in zip(ref, cand, strict=True)])
    return np.clip(1.0 - gaps / scale, 0.0, 1.0)


def _token_agreement(
    reference: list[np.ndarray], candidate: list[np.ndarray], mask: np.ndarray
) -> np.ndarray:
    """Per-sample share of matching argmaxes over real tokens, across all outputs."""
    real = mask.astype(bool)
    matches = np.zeros(real.shape[0])
    counts = np.zeros(real.shape[0])
    for ref, cand in zip(reference, candidate, strict=True):
        if ref.ndim == 3:
            same = (ref.argmax(-1) == cand.argmax(-1)) & real
            matches += same.sum(1)
            counts += real.sum(1)
        elif ref.ndim == 2 and ref.shape[1] == real.shape[1]:
            # [batch, seq] logits (QA start/end): the answer position is the argmax over real tokens.
            masked_ref = np.where(real, ref, -np.inf)
            masked_cand = np.where(real, cand, -np.inf)
            matches += masked_ref.argmax(1) == masked_cand.argmax(1)
            counts += 1
        else:
            matches += ref.argmax(-1) == cand.argmax(-1)
            counts += 1
    return matches / np.maximum(counts, 1)


def _agreement(
    metric: str, reference: Outputs, candidate: Outputs, feeds: list[dict[str, np.ndarray]]
) -> Agreement:
    if metric == "score":
        return Agreement(metric, _score_closeness(reference, candidate))
    scores = []
    for ref, cand, feed in zip(reference, candidate, feeds, strict=True):
        if metric in ("cosine", "sparse_cosine"):
            scores.append(_sample_cosines(ref[0], cand[0], feed["attention_mask"]))
        elif metric == "argmax":
            scores.append((ref[0].argmax(-1) == cand[0].argmax(-1)).reshape(ref[0].shape[0], -1).mean(1))
        else:
            scores.append(_token_agreement(ref, cand, feed["attention_mask"]))
    return Agreement(metric, np.concatenate(scores))


def _relative_error(
    metric: str, reference: Outputs, candidate: Outputs, feeds: list[dict[str, np.ndarray]]
) -> float:
    """A continuous damage measure for ranking (agreement is too coarse to tell single nodes apart)."""
    error = 0.0
    for ref_outputs, cand_outputs, feed in zip(reference, candidate, feeds, strict=True):
        real = feed["attention_mask"].astype(bool)
        for ref, cand in zip(ref_outputs, cand_outputs, strict=True):
            if metric == "token_argmax" and ref.ndim >= 2 and ref.shape[:2] == real.shape:
                ref, cand = ref[real], cand[real]
            error += float(np.linalg.norm(cand - ref) / max(float(np.linalg.norm(ref)), 1e-12))
    return error


def _candidates(fp32: Path, quantized: Path) -> list[str]:
    """Names of the fp32 nodes that the full quantisation actually turned into int8."""
    quantized_weights = {
        init.name for init in onnx.load(str(quantized), load_external_data=False).graph.initializer
    }
    model = onnx.load(str(fp32), load_external_data=False)
    return [
        node.name
        for node in model.graph.node
        # Unnamed nodes cannot be excluded by name, so the guard can only leave them quantised.
        if node.name
        and node.op_type in QUANTIZED_OP_TYPES
        and f"{node.input[1]}_quantized" in quantized_weights
    ]


class _Probe:
    """The fp32 graph with a switch per candidate node between fp32 and its simulated int8 path.

    Each candidate becomes an ``If`` on one element of a boolean input vector: the else branch is
    the node as it was, the then branch the same node fed with its activation's uint8 round trip
    (the DynamicQuantizeLinear ONNX Runtime inserts) and the int8 weights the real quantisation
    produced, dequantised once here. Any set of quantised nodes is one ``session.run`` away, and a
    node that is switched off costs nothing, so ranking N nodes costs N short runs instead of N
    quantisations. Measured on all-mpnet-base-v2: simulated and real cosine agree to 1e-4.
    """

    def __init__(self, fp32: Path, quantized: Path, candidates: list[str], work: Path) -> None:
        self.candidates = candidates
        model = onnx.load(str(fp32))
        int8 = {init.name: init for init in onnx.load(str(quantized)).graph.initializer}
        index = {name: i for i, name in enumerate(candidates)}
        nodes: list[onnx.NodeProto] = []
        for node in model.graph.node:
            position = index.get(node.name)
            if position is None:
                nodes.append(node)
                continue
            weight = self._dequantized_weight(node.input[1], int8, f"probe{position}_weight")
            model.graph.initializer.append(weight)
            nodes.extend(self._switch(node, position, weight.name))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.input.append(helper.make_tensor_value_info(GATES, TensorProto.BOOL, [len(candidates)]))
        # Written with external data: fp32 plus dequantised weights can pass protobuf's 2 GB limit.
        path = work / "probe.onnx"
        onnx.save(model, str(path), save_as_external_data=True, location="probe.data")
        self.session = _session(path)

    @staticmethod
    def _dequantized_weight(weight: str, int8: dict[str, onnx.TensorProto], name: str) -> onnx.TensorProto:
        """``(q - zero_point) * scale`` in float32, exactly what DequantizeLinear computes."""
        values = numpy_helper.to_array(int8[f"{weight}_quantized"]).astype(np.int32)
        scale = numpy_helper.to_array(int8[f"{weight}_scale"]).astype(np.float32)
        zero = numpy_helper.to_array(int8[f"{weight}_zero_point"]).astype(np.int32)
        # Per-channel parameters are per output column of the [in, out] weight.
        return numpy_helper.from_array((values - zero).astype(np.float32) * scale, name)

    @staticmethod
    def _switch(node: onnx.NodeProto, position: int, weight: str) -> list[onnx.NodeProto]:
        """``node`` wrapped in an ``If``: fp32 as it was, or its simulated int8 path, by gate."""
        tag = f"probe{position}"
        activation = node.input[0]

        def branch(kind: str, inputs: list[str], prelude: list[onnx.NodeProto]) -> onnx.GraphProto:
            outputs = [f"{tag}_{kind}_{i}" for i in range(len(node.output))]
            body = onnx.NodeProto()
            body.CopyFrom(node)
            body.name = f"{node.name}_{kind}"
            del body.input[:]
            body.input.extend(inputs)
            del body.output[:]
            body.output.extend(outputs)
            values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs]
            return helper.make_graph([*prelude, body], f"{tag}_{kind}", [], values)

        simulated = [
            helper.make_node("DynamicQuantizeLinear", [activation], [f"{tag}_xq", f"{tag}_xs", f"{tag}_xz"]),
            helper.make_node("DequantizeLinear", [f"{tag}_xq", f"{tag}_xs", f"{tag}_xz"], [f"{tag}_x"]),
        ]
        int8_inputs = [f"{tag}_x", weight, *node.input[2:]]
        index = numpy_helper.from_array(np.array(position, np.int64))
        return [
            helper.make_node("Constant", [], [f"{tag}_index"], value=index),
            helper.make_node("Gather", [GATES, f"{tag}_index"], [f"{tag}_gate"]),
            helper.make_node(
                "If",
                [f"{tag}_gate"],
                list(node.output),
                name=f"{tag}_if",
                then_branch=branch("int8", int8_inputs, simulated),
                else_branch=branch("fp32", list(node.input), []),
            ),
        ]

    def run(self, gates: np.ndarray, feeds: list[dict[str, np.ndarray]]) -> Outputs:
        return [self.session.run(None, {**_feed_for(self.session, feed), GATES: gates}) for feed in feeds]

    def rank(
        self, reference: Outputs, feeds: list[dict[str, np.ndarray]], metric: str, say: Any
    ) -> list[str]:
        """Candidate names, the most damaging (quantised alone) first, measured on the first
        ``RANKING_SAMPLES`` rows of the feeds."""
        subset, expected, rows = [], [], 0
        for feed, outputs in zip(feeds, reference, strict=True):
            take = min(RANKING_SAMPLES - rows, feed["attention_mask"].shape[0])
            if take <= 0:
                break
            subset.append({name: values[:take] for name, values in feed.items()})
            expected.append([values[:take] for values in outputs])
            rows += take
        started = time.perf_counter()
        damage = []
        for position in range(len(self.candidates)):
            gates = np.zeros(len(self.candidates), dtype=bool)
            gates[position] = True
            outputs = self.run(gates, subset)
            damage.append(_relative_error(metric, expected, outputs, subset))
        say(f"ranked {len(self.candidates)} nodes on {rows} samples in {time.perf_counter() - started:.1f} s")
        return [self.candidates[i] for i in np.argsort(damage, kind="stable")[::-1]]

    def shortest_prefix(
        self,
        order: list[str],
        reference: Outputs,
        feeds: list[dict[str, np.ndarray]],
        metric: str,
        threshold: float,
        say: Any,
    ) -> int:
        """Fewest leading nodes of ``order`` to keep in fp32 for the simulated metric to pass.

        Bisection assumes keeping more nodes never hurts, which holds closely enough in practice;
        the real measurement afterwards catches the exceptions.
        """
        position = {name: i for i, name in enumerate(self.candidates)}

        def passes(count: int) -> bool:
            gates = np.ones(len(self.candidates), dtype=bool)
            gates[[position[name] for name in order[:count]]] = False
            value = _agreement(metric, reference, self.run(gates, feeds), feeds).value
            say(f"simulated, {count} nodes kept fp32: {metric} {value:.4f}")
            return value >= threshold

        low, high = 0, len(order)  # all quantised fails (measured); none quantised is fp32
        while high - low > 1:
            middle = (low + high) // 2
            if passes(middle):
                high = middle
            else:
                low = middle
        return high
