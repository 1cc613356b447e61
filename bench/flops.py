"""How much arithmetic a model package does per row, read from its ONNX graph.

A throughput means little on its own: 100 docs/s is slow for a 6-layer model on 30-token queries and
fast for a 12-layer one on 512-token passages. This module turns a graph and the real token counts of
a corpus into operations (a multiply-add counts 2), so a benchmark can report its throughput as a share
of what the machine's GEMM rate allows (:mod:`bench.limits`).

What is counted, per row of ``S`` real tokens (padding is the engine's waste, not the model's work):

* every GEMM with a weight initializer (``MatMul``, ``Gemm``, ``MatMulInteger``,
  ``MatMulIntegerToFloat``, ``DynamicQuantizeMatMul``, ``QLinearMatMul``, ``QGemm``): ``2·K·N`` per
  token, or once per row when its input is downstream of a reduction of the sequence axis (pooling, a
  ``[CLS]`` pick), split by int8 and fp32 nodes;
* fused ``Attention`` / ``QAttention``: the QKV projection as above (int8 for ``QAttention``) plus
  ``4·S²·H`` for the score and context products (fp32 in both);
* an unfused attention's activation × activation ``MatMul`` (and a ``MultiHeadAttention``'s two
  products): ``2·S²·H`` each, ``H`` the model's hidden size (the commonest GEMM input width).

Embedding lookups, LayerNorm, GELU, softmax and the (de)quantisation are not counted: they are the
overhead the share measures.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# op type → index of the weight input (B); every one of them is a [K, N] (Gemm: maybe [N, K]) initializer.
WEIGHT_INPUT = {
    "MatMul": 1, "Gemm": 1, "MatMulInteger": 1, "MatMulIntegerToFloat": 1, "DynamicQuantizeMatMul": 1,
    "QLinearMatMul": 3, "QGemm": 3,
}
INT8_OPS = {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QGemm",
            "QAttention"}
ATTENTION_OPS = {"Attention", "QAttention"}
# Ops that take the sequence axis away: whatever reads their output runs once per row, not per token.
POOLING_OPS = {"Gather", "ReduceMean", "ReduceSum", "ReduceMax"}


@dataclasses.dataclass(frozen=True)
class GraphFlops:
    """Operations of one row of ``S`` tokens: ``S·(token_int8 + token_fp32) + row_int8 + row_fp32 + S²·quadratic``.

    ``shapes`` counts the weight GEMM shapes ``(K, N, int8?)`` (what :mod:`bench.limits` times).
    """

    token_int8: int
    token_fp32: int
    row_int8: int
    row_fp32: int
    quadratic: int
    hidden: int
    shapes: dict[tuple[int, int, bool], int]

    def of_row(self, length: int) -> tuple[float, float]:
        """(int8 ops, fp32 ops) of one row of ``length`` real tokens."""
        int8 = length * self.token_int8 + self.row_int8
        fp32 = length * self.token_fp32 + self.row_fp32 + length * length * self.quadratic
        return float(int8), float(fp32)

    def of_rows(self, lengths: Iterable[int]) -> tuple[float, float]:
        int8 = fp32 = 0.0
        for length in lengths:
            row_int8, row_fp32 = self.of_row(length)
            int8 += row_int8
            fp32 += row_fp32
        return int8, fp32

    def to_json(self) -> dict[str, Any]:
        return {"token_int8": self.token_int8, "token_fp32": self.token_fp32, "row_int8": self.row_int8,
                "row_fp32": self.row_fp32, "quadratic": self.quadratic, "hidden": self.hidden,
                "shapes": [[k, n, int8, count] for (k, n, int8), count in sorted(self.shapes.items())]}


def _weight_shape(node: Any, dims: dict[str, tuple[int, ...]]) -> tuple[int, int] | None:
    index = WEIGHT_INPUT.get(node.op_type)
    if index is None or len(node.input) <= index:
        return None
    shape = dims.get(node.input[index])
    if shape is None or len(shape) != 2:
        return None
    k, n = shape
    if node.op_type in ("Gemm", "QGemm"):
        trans_b = next((attr.i for attr in node.attribute if attr.name == "transB"), 0)
        if trans_b:
            k, n = n, k
    return k, n


def _attention_hidden(node: Any, weight: tuple[int, ...]) -> int:
    sizes = next((list(attr.ints) for attr in node.attribute if attr.name == "qkv_hidden_sizes"), None)
    return int(sizes[0]) if sizes else int(weight[1]) // 3


def graph_flops(graph_path: str | Path) -> GraphFlops:
    """Count a graph's operations per row (see the module docstring for what counts)."""
    import onnx

    model = onnx.load(str(graph_path), load_external_data=False)
    graph = model.graph
    dims = {init.name: tuple(int(d) for d in init.dims) for init in graph.initializer}
    constants = set(dims) | {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    pooled: set[str] = set()
    token = {True: 0, False: 0}
    row = {True: 0, False: 0}
    shapes: collections.Counter[tuple[int, int, bool]] = collections.Counter()
    widths: collections.Counter[int] = collections.Counter()
    attention_hidden: list[int] = []
    activation_products = 0
    for node in graph.node:
        inputs = [name for name in node.input if name]
        per_row = any(name in pooled for name in inputs)
        int8 = node.op_type in INT8_OPS
        if node.op_type in ATTENTION_OPS and len(node.input) > 1 and node.input[1] in dims:
            weight = dims[node.input[1]]
            token[int8] += 2 * weight[0] * weight[1]
            shapes[(weight[0], weight[1], int8)] += 1
            widths[weight[0]] += 1
            attention_hidden.append(_attention_hidden(node, weight))
        elif node.op_type == "MultiHeadAttention":
            activation_products += 2
        elif (shape := _weight_shape(node, dims)) is not None:
            k, n = shape
            (row if per_row else token)[int8] += 2 * k * n
            shapes[(k, n, int8)] += 1
            widths[k] += 1
        elif node.op_type == "MatMul" and not per_row and not any(name in constants for name in inputs):
            activation_products += 1
        if per_row or (node.op_type in POOLING_OPS and _pools_sequence(node, constants)):
            pooled.update(node.output)
    hidden = widths.most_common(1)[0][0] if widths else 0
    quadratic = 4 * sum(attention_hidden) + 2 * activation_products * hidden
    return GraphFlops(token_int8=token[True], token_fp32=token[False], row_int8=row[True], row_fp32=row[False],
                      quadratic=quadratic, hidden=hidden, shapes=dict(shapes))


def _pools_sequence(node: Any, constants: set[str]) -> bool:
    """Whether a node drops the sequence axis (axis 1 of ``[batch, sequence, hidden]``): a constant-index
    Gather on axis 1 (a ``[CLS]``/EOS pick) or a reduction over axis 1 (mean/max pooling). Shape
    arithmetic (Gather on a Shape) never feeds a GEMM, so it does no harm."""
    axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 0)
    axes = next((list(attr.ints) for attr in node.attribute if attr.name == "axes"), None)
    if node.op_type == "Gather":
        return axis == 1 and len(node.input) > 1 and node.input[1] in constants
    if node.op_type.startswith("Reduce"):
        if axes is not None:
            return 1 in axes
        return len(node.input) > 1 and node.input[1] in constants  # opset 18: axes as an input
    return False


def corpus_lengths(package_path: str | Path, texts: list[str], task_config: dict[str, Any]) -> list[list[int]]:
    """The real length of every row each text runs as (its windows, zero-shot's label pairs), by the
    package's own task runner: exactly the rows the engine sends to the graph."""
    from engine.package import load_package

    runner = load_package(package_path).runner
    cfg = runner.parse_config(dict(task_config))
    return [[len(window.input_ids) for window in runner.prepare(text, cfg).windows] for text in texts]


def corpus_flops(flops: GraphFlops, lengths: list[list[int]]) -> tuple[float, float]:
    """(int8 ops, fp32 ops) of a whole corpus."""
    return flops.of_rows(length for rows in lengths for length in rows)
