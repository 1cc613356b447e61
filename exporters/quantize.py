"""int8 with activation scales calibrated once and stored in the graph, and an accuracy guard.

Weights: ONNX Runtime's quantiser turns the weights of ``MatMul`` and fused ``Attention`` nodes
into int8 per output channel, symmetric, with ``reduce_range`` (7-bit). ``reduce_range`` is not
optional on CPUs without VNNI (AVX2, AVX-512 without VNNI): their u8×s8 kernels add pairs of
products in saturating int16, and full-range weights overflow it. Measured on all-mpnet-base-v2
(AMD EPYC, AVX2): mean cosine to fp32 0.009 per-channel without reduce_range, 0.916 with it.

Activations: uint8 per tensor with a *static* scale and zero point, the min/max of that tensor
over the real tokens of the calibration texts, written into the graph as constants. ORT's dynamic
mode instead computes one scale per tensor per ``session.run`` from the whole padded batch, so a
text's result depended on its batch-mates: "You got it right." alone and beside a long, unusual
text gave embeddings with cosine 0.971 to each other. With static scales a row's result is a
function of that row alone (batch-invariant), and the per-batch min/max pass of every
``DynamicQuantizeLinear`` disappears: the package runs ``QuantizeLinear`` → ``MatMulIntegerToFloat``
(scale multiply fused into the GEMM) and ``QAttention`` with constant input scales. On
all-MiniLM-L6-v2 (400 STS-B sentences, each run alone) static scales cost 0.0008 of mean cosine
against dynamic ones (0.9921 vs 0.9929); bench/RESULTS.md, "int8 fidelity", has the full numbers.

The guard then keeps the most sensitive nodes in fp32 until the task's agreement metric reaches
its targets, measured per length bucket (``short`` queries and titles, ``sentence``, ``passage``):
the mean per bucket against ``threshold`` and each bucket's tail figure (:data:`TAIL_FIGURES`:
the 1st percentile of short texts, the minimum of sentences and passages) against the tail
threshold. Nodes are chosen on one part of the calibration text (``feeds``) and the result is
measured again on another part that chose nothing (``held_out``); both go in the manifest.

1. quantise everything (static) and measure; done if both parts pass;
2. build one *probe* graph from the fp32 graph in which every candidate node can switch, through a
   boolean gate input, between fp32 and a simulation of its int8 path (the same static
   quantise/dequantise of its activation, the exact int8 weights ONNX Runtime produced);
3. rank the nodes by the output error each one causes alone (a few rows of every feed, one probe
   run per node: no re-quantisation), then find by bisection the shortest prefix of that ranking
   that passes on ``feeds``;
4. quantise for real with that prefix excluded and measure both parts; widen the prefix while
   either falls short, by 1, 2, 4, ... nodes (the held-out part usually misses by one sentence, and
   one node more lifts it; it never picks nodes, it can only ask for more of the ranking to stay
   fp32).
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from engine.errors import ExportError
from engine.progress import progress_bar
from engine.session import checking_session

METRICS = ("cosine", "argmax", "token_argmax", "sparse_cosine", "score")
DEFAULT_THRESHOLD = 0.99
# What each length bucket's tail figure must reach (the mean alone let a 4-word query fall to cosine
# 0.960 while the mean read 0.984). Label metrics score 0/1 per row, so their mean is already the
# share of flipped predictions and their tail is left unbounded. Each fp32 node costs speed: int8
# GEMMs run 5-8x fp32 ones on a VNNI CPU, and at one short query an fp32 projection reads 4x the
# weight bytes. Cosine holds sentences and passages to 0.97 and short texts to 0.96: on
# all-MiniLM-L6-v2 with static scales, every node int8 reads p1 0.963 on the calibration's short
# bucket (one- and two-word texts such as "thanks!" and "OK") and a sentence minimum of 0.979, and on
# 400 unseen STS-B sentences min 0.978, on 1-8 word ones min 0.986, so it keeps no node fp32 (a
# short-bucket tail of 0.97 kept 2 of 24 nodes, 11 % of the weights, for +0.002 of mean cosine and
# made the package 0.83x as fast on single queries); all-mpnet-base-v2 at its mean target reads a
# held-out sentence minimum of 0.967 (one sentence with a URL), which the 0.97 asks one more node
# to lift (bench/RESULTS.md, "int8 fidelity"). ``--accuracy-tail`` sets one value for every bucket.
DEFAULT_TAIL_THRESHOLDS: dict[str, float | dict[str, float]] = {
    "cosine": {"short": 0.96, "sentence": 0.97, "passage": 0.97},
    "sparse_cosine": 0.9,
    "score": 0.9,
    "argmax": 0.0,
    "token_argmax": 0.0,
}
# A classifier's label may flip only where fp32 itself hesitates: a flip counts as a disagreement
# when fp32's top logit leads the runner-up by more than this (a flip inside it is a coin toss
# that moves accuracy by nothing on average).
LABEL_MARGIN = 0.25
# Length buckets by real tokens per row (specials included): 1-8 word queries and titles, single
# sentences, passages. Each bucket is held to the thresholds on its own.
BUCKETS = (("short", 12), ("sentence", 64), ("passage", None))
# Each bucket's tail figure: the 1st percentile of short texts (their bottom is one- and two-word
# texts, where one token's rounding moves the whole vector: a lone "OK" is not a query to keep
# nodes fp32 for, and no single node lifts it), the minimum of sentences and passages (their worst
# rows are real text of the kind users index, and the minimum was stable between the two
# calibration parts: MiniLM 0.979 and 0.987, mpnet 0.974 and 0.967). Buckets under 101 rows have the
# minimum as their p1 anyway.
TAIL_FIGURES = {"short": "p1", "sentence": "min", "passage": "min"}
QUANTIZED_OP_TYPES = ("MatMul", "Attention")
METHOD = (
    "int8: MatMul/Attention weights per-channel symmetric 7-bit (reduce_range); activations uint8 per "
    "tensor with static scales (calibrated min/max over real tokens)"
)
# Rows of every calibration batch used to rank node sensitivity (up to RANKING_SAMPLES in all), so
# the ranking sees short, sentence and passage rows alike.
RANKING_ROWS_PER_FEED = 2
RANKING_SAMPLES = 32
# Real quantisations tried after the simulated search before giving up (each widens the prefix by
# twice the step before, from 1).
REAL_TRIES = 6
GATES = "quantization_gates"
MS_DOMAIN = "com.microsoft"

Outputs = list[list[np.ndarray]]  # per feed, per graph output
Ranges = dict[str, tuple[float, float]]  # activation tensor -> (min, max) over real tokens


def _figures(scores: np.ndarray) -> dict[str, float]:
    """The tail figures a bucket can be held to (:data:`TAIL_FIGURES`); p1 as a sample."""
    return {"p1": float(np.percentile(scores, 1, method="lower")), "min": float(scores.min())}


def _tails(metric: str, tail_threshold: float | None) -> dict[str, float]:
    """Each bucket's tail threshold: one given value for all, else the metric's default."""
    given = DEFAULT_TAIL_THRESHOLDS.get(metric, 0.0) if tail_threshold is None else tail_threshold
    return dict(given) if isinstance(given, dict) else {name: float(given) for name, _ in BUCKETS}


def _bucket_of(lengths: np.ndarray) -> np.ndarray:
    names = np.empty(lengths.shape, dtype=object)
    lower = 0
    for name, upper in BUCKETS:
        names[(lengths > lower) & (lengths <= (upper if upper is not None else np.inf))] = name
        lower = upper if upper is not None else lower
    return names


@dataclass
class Agreement:
    """One measurement of the int8 graph against fp32: per-sample scores, their rows' lengths."""

    metric: str
    scores: np.ndarray
    lengths: np.ndarray

    @property
    def value(self) -> float:
        return float(self.scores.mean())

    @property
    def min(self) -> float:
        return float(self.scores.min())

    def buckets(self) -> dict[str, np.ndarray]:
        names = _bucket_of(self.lengths)
        return {name: self.scores[names == name] for name, _ in BUCKETS if (names == name).any()}

    def passes(self, threshold: float, tails: dict[str, float]) -> bool:
        return all(
            float(s.mean()) >= threshold and _figures(s)[TAIL_FIGURES[name]] >= tails[name]
            for name, s in self.buckets().items()
        )

    def summary(self) -> dict[str, Any]:
        def figures(scores: np.ndarray) -> dict[str, Any]:
            return {
                "mean": round(float(scores.mean()), 6),
                **{name: round(value, 6) for name, value in _figures(scores).items()},
                "n": int(scores.size),
            }

        return {
            "value": round(self.value, 6),
            "min": round(self.min, 6),
            "n_samples": int(self.scores.size),
            "buckets": {name: figures(scores) for name, scores in self.buckets().items()},
        }


@dataclass
class _Parts:
    """The fp32 reference on both calibration parts, and how to score a candidate graph on them."""

    metric: str
    feeds: list[dict[str, np.ndarray]]
    held_out: list[dict[str, np.ndarray]]
    reference: Outputs
    held_reference: Outputs

    def chosen(self, outputs: Outputs) -> Agreement:
        return _agreement(self.metric, self.reference, outputs, self.feeds)

    def unseen(self, graph: Path) -> Agreement:
        return _agreement(self.metric, self.held_reference, _run(graph, self.held_out), self.held_out)


def quantize_with_guard(
    fp32: Path,
    dst: Path,
    feeds: list[dict[str, np.ndarray]],
    metric: str,
    threshold: float = DEFAULT_THRESHOLD,
    progress: bool = True,
    *,
    held_out: list[dict[str, np.ndarray]] | None = None,
    tail_threshold: float | None = None,
) -> dict[str, Any]:
    """Quantise ``fp32`` to int8 at ``dst``, keeping nodes in fp32 until ``metric`` reaches its targets.

    Args:
        fp32: the fp32 ONNX graph (fused or not).
        dst: where the int8 graph is written.
        feeds: calibration batches, each a dict of input arrays: they calibrate the activation
            scales and choose the nodes kept fp32. ``attention_mask`` is required (only real
            tokens calibrate, token-level metrics compare real tokens, rows are bucketed by
            length). Keys the graph does not take are ignored.
        metric: ``cosine`` (cosine of the rows of the first output; text_embedding; for
            ``[batch, seq, hidden]`` outputs, pass_through, the mean cosine of each sample's real
            tokens), ``sparse_cosine`` (the same on sparse weight vectors; text_expansion),
            ``argmax`` (same last-axis label, a flip forgiven where fp32's top-2 logits are within
            :data:`LABEL_MARGIN`; classification-like), ``token_argmax`` (argmax agreement over real
            tokens; ``[batch, seq]`` outputs such as QA start/end logits are compared by their
            argmax over the sequence), ``score`` (``1 - max|int8 - fp32| / max|fp32|`` per sample;
            scalar outputs such as text_similarity's one logit, where a cosine only compares signs).
        threshold: the mean per-sample score every length bucket must reach, in [0, 1].
        progress: print one line per stage to stderr.
        held_out: batches that choose nothing and are measured after the choice (the manifest's
            ``agreement``); None measures ``feeds`` again (and says so: ``held_out`` false).
        tail_threshold: what every bucket's tail figure (:data:`TAIL_FIGURES`) must reach; None:
            the metric's :data:`DEFAULT_TAIL_THRESHOLDS` (cosine: short 0.96, sentence and passage
            0.97).

    Returns:
        The manifest ``quantization`` block: ``mode``, ``method``, ``activations`` (``static``),
        ``op_types``, ``kept_fp32`` (node names), ``candidates`` (quantisable nodes),
        ``fp32_weight_share`` (share of the candidates' weights left fp32: what the kept nodes
        cost: int8 GEMMs run ~2x fp32 ones on AVX2, 5-8x with VNNI or AMX), ``agreement`` (on the
        held-out part: metric, threshold, tail_threshold and tail (each bucket's threshold and
        figure), value = mean, min, n_samples, and per bucket mean, p1, min, n), ``chosen_on`` (the same figures on ``feeds``) and
        ``reached_threshold`` (both parts pass). When no prefix of the ranking passes within the
        tries, ``reached_threshold`` is false and ``dst`` holds the best graph measured; the
        caller decides whether to ship it. Nothing in it depends on the clock, so two exports
        of the same model write the same manifest.

    Raises:
        ExportError: unknown metric, thresholds outside [0, 1], no feeds, feeds without
            ``attention_mask``, or a missing fp32 graph.
    """
    _check_arguments(fp32, feeds, metric, threshold)
    tail = _tails(metric, tail_threshold)
    for value in tail.values():
        _check_arguments(fp32, held_out or feeds, metric, value)
    started = time.perf_counter()
    say = _reporter(progress)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    reference = _run(fp32, feeds)
    parts = _Parts(
        metric, feeds, held_out or feeds, reference, _run(fp32, held_out) if held_out else reference
    )
    with tempfile.TemporaryDirectory(prefix="engine-quantize-") as tmp:
        work = Path(tmp)
        dynamic = work / "dynamic.onnx"
        _quantize(fp32, dynamic, exclude=[])
        candidates = _candidates(fp32, dynamic)
        ranges = _calibrate(fp32, _activations(dynamic), feeds)
        everything = work / "all.onnx"
        _make_static(dynamic, everything, ranges)
        measured = parts.chosen(_run(everything, feeds))
        unseen = parts.unseen(everything)
        targets = ", ".join(f"{name} {TAIL_FIGURES[name]} {value}" for name, value in tail.items())
        say(f"int8, all nodes: {_line(measured)}; held out {_line(unseen)}; targets mean {threshold}, {targets}")
        kept: list[str] = []
        best = everything
        if not (measured.passes(threshold, tail) and unseen.passes(threshold, tail)) and candidates:
            probe = _Probe(fp32, dynamic, candidates, ranges, work)
            order = probe.rank(parts.reference, feeds, metric, say)
            count = probe.shortest_prefix(order, parts, threshold, tail, say)
            for attempt in range(REAL_TRIES):
                trial = work / f"guarded-{attempt}.onnx"
                _quantize(fp32, work / "trial-dynamic.onnx", exclude=order[:count])
                _make_static(work / "trial-dynamic.onnx", trial, ranges)
                result, result_unseen = parts.chosen(_run(trial, feeds)), parts.unseen(trial)
                say(f"int8, {count} nodes kept fp32: {_line(result)}; held out {_line(result_unseen)}")
                if attempt == 0 or result_unseen.value > unseen.value:
                    measured, unseen, best, kept = result, result_unseen, trial, order[:count]
                if result.passes(threshold, tail) and result_unseen.passes(threshold, tail):
                    measured, unseen, best, kept = result, result_unseen, trial, order[:count]
                    break
                if count == len(order):
                    break
                count = min(len(order), count + 2**attempt)
        shutil.copyfile(best, dst)
    say(
        f"quantised in {time.perf_counter() - started:.1f} s; kept {len(kept)} of {len(candidates)} nodes in fp32"
    )
    agreement = {"metric": metric, "threshold": threshold, "tail_threshold": tail, "tail": dict(TAIL_FIGURES)}
    return {
        "mode": "int8",
        "method": METHOD,
        "activations": "static",
        "op_types": list(QUANTIZED_OP_TYPES),
        "kept_fp32": kept,
        "candidates": len(candidates),
        "fp32_weight_share": _weight_share(fp32, candidates, kept),
        "agreement": {**agreement, **unseen.summary(), "held_out": bool(held_out)},
        "chosen_on": measured.summary(),
        "reached_threshold": measured.passes(threshold, tail) and unseen.passes(threshold, tail),
    }


def _line(agreement: Agreement) -> str:
    worst = ", ".join(
        f"{name} {float(s.mean()):.4f}/{float(s.min()):.4f}" for name, s in agreement.buckets().items()
    )
    return f"{agreement.metric} mean/min {worst}"


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

    say.enabled = progress  # type: ignore[attr-defined]  # _steps reads it
    return say


def _steps(total: int, what: str, say: Any) -> Iterable[int]:
    """``range(total)``, shown as a tqdm bar when progress is on and stderr is a terminal; elsewhere
    the stage lines ``say`` prints are the progress."""
    return progress_bar(total, unit="node", desc=f"quantize: {what}", enabled=getattr(say, "enabled", False),
                        iterable=range(total))


@contextmanager
def _without_preprocessing_advice() -> Iterator[None]:
    """Drop the quantiser's "Please consider to run pre-processing" warning: the pre-processing it
    suggests (shape inference, ORT's graph optimisation) is what the fusion step already did."""

    def advice(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _quantize(fp32: Path, dst: Path, exclude: Sequence[str]) -> None:
    """ORT's dynamic quantisation: int8 weights, ``DynamicQuantizeLinear`` on each activation
    (which :func:`_make_static` then replaces by constant scales)."""
    # DefaultTensorType: outputs of contrib ops (fused Attention, SkipLayerNormalization) have no
    # inferred type, and the quantiser refuses to guess; they are all float here.
    with _without_preprocessing_advice():
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


def _activations(dynamic: Path) -> list[str]:
    """The activation tensors the dynamic graph quantises at run time (fp32 tensor names)."""
    model = onnx.load(str(dynamic), load_external_data=False)
    return sorted({node.input[0] for node in model.graph.node if node.op_type == "DynamicQuantizeLinear"})


def _calibrate(fp32: Path, tensors: list[str], feeds: list[dict[str, np.ndarray]]) -> Ranges:
    """Min and max of each tensor over the real tokens of ``feeds``, run through the fp32 graph.

    Padded positions are left out: they carry no meaning, and with static scales they cannot
    affect a real row anyway.
    """
    model = onnx.load(str(fp32))
    present = {output.name for output in model.graph.output}
    for name in tensors:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = checking_session(model.SerializeToString())
    low = dict.fromkeys(tensors, 0.0)
    high = dict.fromkeys(tensors, 0.0)
    for feed in feeds:
        real = feed["attention_mask"].astype(bool)
        for name, values in zip(tensors, session.run(tensors, _feed_for(session, feed)), strict=True):
            if values.ndim >= 2 and values.shape[:2] == real.shape:
                values = values[real]
            low[name] = min(low[name], float(values.min(initial=0.0)))
            high[name] = max(high[name], float(values.max(initial=0.0)))
    return {name: (low[name], high[name]) for name in tensors}


def _scale_and_zero_point(low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """uint8 parameters for a tensor within [low, high], computed as DynamicQuantizeLinear does
    (the range always includes 0, so 0 is exact)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = np.float32((high - low) / 255.0) if high > low else np.float32(1.0)
    zero = np.uint8(np.clip(np.rint(-low / scale), 0, 255))
    return np.array(scale, np.float32), np.array(zero, np.uint8)


def _make_static(dynamic: Path, dst: Path, ranges: Ranges) -> None:
    """Rewrite ORT's dynamic int8 graph with constant activation scales.

    Every ``DynamicQuantizeLinear`` becomes a ``QuantizeLinear`` whose scale and zero point are
    initializers (under the names the dynamic node's outputs had, so ``QAttention`` and the rest
    read them unchanged), and every ``MatMulInteger → Cast → Mul(scale)`` chain becomes one
    ``MatMulIntegerToFloat``, which applies the scales inside the GEMM, and the bias ``Add`` after
    it too (the projections' biases: the residual LayerNorm no longer takes them, optimize.py says why;
    the FFN-in bias, taken from ``BiasGelu``, which becomes a plain ``Gelu``).
    """
    model = onnx.load(str(dynamic))
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {output: node for node in graph.node for output in node.output}
    initializers = {item.name: item for item in graph.initializer}
    graph_outputs = {item.name for item in graph.output}
    removed: set[int] = set()
    replacement: dict[int, onnx.NodeProto] = {}
    for node in graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            if node.input[0] not in ranges:
                raise ExportError(f"no calibration range for activation [{node.input[0]}]")
            scale, zero = _scale_and_zero_point(*ranges[node.input[0]])
            graph.initializer.extend(
                [
                    numpy_helper.from_array(scale, node.output[1]),
                    numpy_helper.from_array(zero, node.output[2]),
                ]
            )
            replacement[id(node)] = helper.make_node(
                "QuantizeLinear",
                [node.input[0], node.output[1], node.output[2]],
                [node.output[0]],
                name=node.name,
            )
        elif node.op_type == "MatMulInteger":
            chain = _scaled_matmul(node, consumers, producer)
            if chain is None:
                continue
            cast, mul, scales = chain
            a_scale, b_scale = (name for name in scales.input)
            inputs = [node.input[0], node.input[1], a_scale, b_scale, *node.input[2:4]]
            output = mul.output[0]
            weight = initializers.get(node.input[1])
            width = weight.dims[-1] if weight is not None else None
            bias = _bias_add(output, width, consumers, initializers, graph_outputs)
            if bias is not None:
                reader, bias_name = bias
                inputs.append(bias_name)
                if reader.op_type == "Add":
                    output = reader.output[0]
                    removed.add(id(reader))
                else:  # BiasGelu(x, b) = Gelu(x + b): the GEMM adds b, a plain Gelu is left
                    replacement[id(reader)] = helper.make_node(
                        "Gelu", [output], list(reader.output), name=reader.name, domain=MS_DOMAIN
                    )
            replacement[id(node)] = helper.make_node(
                "MatMulIntegerToFloat", inputs, [output], name=node.name, domain=MS_DOMAIN
            )
            removed |= {id(cast), id(mul), id(scales)}
    nodes = [replacement.get(id(node), node) for node in graph.node if id(node) not in removed]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(item.domain == MS_DOMAIN for item in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(dst))


def _bias_add(
    output: str,
    width: int | None,
    consumers: dict[str, list[onnx.NodeProto]],
    initializers: dict[str, onnx.TensorProto],
    graph_outputs: set[str],
) -> tuple[onnx.NodeProto, str] | None:
    """The only reader of ``output`` when it adds a constant fp32 vector of ``width`` (the GEMM's output
    columns), and the vector's name: a bias ``MatMulIntegerToFloat`` adds itself (else None). The reader is
    an ``Add`` or a ``BiasGelu`` (the FFN-in bias): its add runs inside the GEMM's output loop instead of as
    one more pass over the activations, and the ``Gelu`` left without it is 1.6x faster than ``BiasGelu``
    in ORT 1.32 (1.0 of 2.6 ms at 944 x 1536; bench/RESULTS.md "BiasGelu's bias in the int8 GEMM")."""
    after = consumers.get(output, [])
    if output in graph_outputs or len(after) != 1 or after[0].op_type not in ("Add", "BiasGelu"):
        return None
    reader = after[0]
    if reader.op_type == "BiasGelu" and (reader.input[0] != output or reader.domain != MS_DOMAIN):
        return None
    other = reader.input[1] if reader.input[0] == output else reader.input[0]
    tensor = initializers.get(other)
    if tensor is None or list(tensor.dims) != [width] or tensor.data_type != onnx.TensorProto.FLOAT:
        return None
    return reader, other


def _scaled_matmul(
    node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], producer: dict[str, onnx.NodeProto]
) -> tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto] | None:
    """The ``Cast``, ``Mul`` and scale-product ``Mul`` ORT's quantiser writes after a
    ``MatMulInteger``, when that is exactly what follows it (else None: left as it is)."""
    after = consumers.get(node.output[0], [])
    if len(after) != 1 or after[0].op_type != "Cast":
        return None
    cast = after[0]
    after = consumers.get(cast.output[0], [])
    if len(after) != 1 or after[0].op_type != "Mul":
        return None
    mul = after[0]
    scale_name = next(name for name in mul.input if name != cast.output[0])
    scales = producer.get(scale_name)
    if scales is None or scales.op_type != "Mul" or len(consumers.get(scale_name, [])) != 1:
        return None
    if len(node.input) < 4 or list(scales.input) != [
        name.replace("_zero_point", "_scale") for name in node.input[2:4]
    ]:
        return None
    return cast, mul, scales


def _weight_share(fp32: Path, candidates: list[str], kept: list[str]) -> float:
    """Share of the candidates' weight elements in the nodes kept fp32."""
    model = onnx.load(str(fp32), load_external_data=False)
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    weight = {node.name: sizes.get(node.input[1], 0) for node in model.graph.node if node.name in candidates}
    total = sum(weight.values())
    return round(sum(weight[name] for name in kept) / total, 4) if total else 0.0


def _feed_for(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {item.name: feed[item.name] for item in session.get_inputs() if item.name in feed}


def _run(path: Path, feeds: list[dict[str, np.ndarray]]) -> Outputs:
    session = checking_session(path)
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


def _label_agreement(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-sample share of last-axis labels kept, a flip forgiven where fp32's top two logits are
    within :data:`LABEL_MARGIN` of each other."""
    same = reference.argmax(-1) == candidate.argmax(-1)
    if reference.shape[-1] > 1:
        top2 = np.sort(reference, axis=-1)[..., -2:]
        same |= (top2[..., 1] - top2[..., 0]) <= LABEL_MARGIN
    return same.reshape(reference.shape[0], -1).mean(1)


def _agreement(
    metric: str, reference: Outputs, candidate: Outputs, feeds: list[dict[str, np.ndarray]]
) -> Agreement:
    lengths = np.concatenate([feed["attention_mask"].sum(1) for feed in feeds])
    if metric == "score":
        return Agreement(metric, _score_closeness(reference, candidate), lengths)
    scores = []
    for ref, cand, feed in zip(reference, candidate, feeds, strict=True):
        if metric in ("cosine", "sparse_cosine"):
            scores.append(_sample_cosines(ref[0], cand[0], feed["attention_mask"]))
        elif metric == "argmax":
            scores.append(_label_agreement(ref[0], cand[0]))
        else:
            scores.append(_token_agreement(ref, cand, feed["attention_mask"]))
    return Agreement(metric, np.concatenate(scores), lengths)


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
    (with the calibrated static scale the package will use) and the int8 weights the real
    quantisation produced, dequantised once here. Any set of quantised nodes is one ``session.run`` away, and a
    node that is switched off costs nothing, so ranking N nodes costs N short runs instead of N
    quantisations. Measured on all-mpnet-base-v2: simulated and real cosine agree to 1e-4.
    """

    def __init__(
        self, fp32: Path, quantized: Path, candidates: list[str], ranges: Ranges, work: Path
    ) -> None:
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
            scale, zero = _scale_and_zero_point(*ranges[node.input[0]])
            nodes.extend(self._switch(node, position, weight.name, scale, zero))
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.input.append(helper.make_tensor_value_info(GATES, TensorProto.BOOL, [len(candidates)]))
        # Written with external data: fp32 plus dequantised weights can pass protobuf's 2 GB limit.
        path = work / "probe.onnx"
        onnx.save(model, str(path), save_as_external_data=True, location="probe.data")
        self.session = checking_session(path)

    @staticmethod
    def _dequantized_weight(weight: str, int8: dict[str, onnx.TensorProto], name: str) -> onnx.TensorProto:
        """``(q - zero_point) * scale`` in float32, exactly what DequantizeLinear computes."""
        values = numpy_helper.to_array(int8[f"{weight}_quantized"]).astype(np.int32)
        scale = numpy_helper.to_array(int8[f"{weight}_scale"]).astype(np.float32)
        zero = numpy_helper.to_array(int8[f"{weight}_zero_point"]).astype(np.int32)
        # Per-channel parameters are per output column of the [in, out] weight.
        return numpy_helper.from_array((values - zero).astype(np.float32) * scale, name)

    @staticmethod
    def _switch(
        node: onnx.NodeProto, position: int, weight: str, scale: np.ndarray, zero: np.ndarray
    ) -> list[onnx.NodeProto]:
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

        constants = [
            helper.make_node("Constant", [], [f"{tag}_xs"], value=numpy_helper.from_array(scale)),
            helper.make_node("Constant", [], [f"{tag}_xz"], value=numpy_helper.from_array(zero)),
        ]
        simulated = [
            *constants,
            helper.make_node("QuantizeLinear", [activation, f"{tag}_xs", f"{tag}_xz"], [f"{tag}_xq"]),
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
        ``RANKING_ROWS_PER_FEED`` rows of every feed (``RANKING_SAMPLES`` rows at most)."""
        subset, expected, rows = [], [], 0
        for feed, outputs in zip(feeds, reference, strict=True):
            take = min(RANKING_SAMPLES - rows, RANKING_ROWS_PER_FEED, feed["attention_mask"].shape[0])
            if take <= 0:
                break
            subset.append({name: values[:take] for name, values in feed.items()})
            expected.append([values[:take] for values in outputs])
            rows += take
        started = time.perf_counter()
        damage = []
        for position in _steps(len(self.candidates), "ranking nodes", say):
            gates = np.zeros(len(self.candidates), dtype=bool)
            gates[position] = True
            outputs = self.run(gates, subset)
            damage.append(_relative_error(metric, expected, outputs, subset))
        say(f"ranked {len(self.candidates)} nodes on {rows} samples in {time.perf_counter() - started:.1f} s")
        return [self.candidates[i] for i in np.argsort(damage, kind="stable")[::-1]]

    def shortest_prefix(
        self, order: list[str], parts: _Parts, threshold: float, tail: dict[str, float], say: Any
    ) -> int:
        """Fewest leading nodes of ``order`` to keep in fp32 for the simulated metric to pass on
        the choosing part, every bucket's mean and tail figure.

        Bisection assumes keeping more nodes never hurts, which holds closely enough in practice;
        the real measurement afterwards catches the exceptions.
        """
        position = {name: i for i, name in enumerate(self.candidates)}

        def passes(count: int) -> bool:
            gates = np.ones(len(self.candidates), dtype=bool)
            gates[[position[name] for name in order[:count]]] = False
            result = parts.chosen(self.run(gates, parts.feeds))
            say(f"simulated, {count} nodes kept fp32: {_line(result)}")
            return result.passes(threshold, tail)

        low, high = 0, len(order)  # all quantised fails (measured); none quantised is fp32
        while high - low > 1:
            middle = (low + high) // 2
            if passes(middle):
                high = middle
            else:
                low = middle
        return high
