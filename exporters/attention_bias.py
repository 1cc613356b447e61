"""Fuse the self-attention ONNX Runtime's bert fuser leaves unfused (MPNet, MobileBERT) into ``MultiHeadAttention``.

The fuser knows ``Softmax(QKᵀ / √d + mask)`` with Q, K and V projected from one input. MPNet computes
``Softmax(QKᵀ / √d + position_bias + mask)`` (one relative-position bias and one additive mask shared by
every layer); MobileBERT projects Q and K from its bottleneck but V from the layer input. The fuser leaves
either as ~20 separate operators per layer. Here each such layer becomes one
``com.microsoft.MultiHeadAttention`` (separate Q, K and V inputs) whose ``attention_bias`` input is the sum
of the added terms, computed once for all layers, so the scores see the same additions as PyTorch.

``MultiHeadAttention`` rather than ``Attention``: the Q, K and V projections stay plain ``MatMul`` nodes
that the int8 quantiser turns into int8 GEMMs, while its ``QAttention`` has no ``attention_bias`` input
and would silently drop the bias of a fused ``Attention``. The caller checks the rewritten graph against
the unfused one, as for every fusion.
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto, helper, numpy_helper
from onnxruntime.transformers.onnx_model import OnnxModel

# Where the scores' additive terms come from must not depend on this layer's values: shape reads of the
# hidden states are fine (MPNet's bias is sized from them), anything else means a term computed from
# the layer's own queries or keys (DeBERTa's disentangled attention), which attention_bias cannot express.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
MAX_ADDED_TERMS = 2  # the mask, and a position bias


def fuse_attention_with_bias(model: OnnxModel, num_heads: int) -> int:
    """Rewrite every matching attention in ``model`` in place; returns how many were fused."""
    producers = model.output_name_to_node()
    fused, bias_sums, to_remove = 0, {}, []
    for softmax in [node for node in model.nodes() if node.op_type == "Softmax"]:
        match = _match(model, softmax, producers)
        if match is None:
            continue
        terms = tuple(sorted(match["terms"]))
        if terms not in bias_sums:
            bias_sums[terms] = _add_bias_sum(model, terms)
        model.add_node(_attention_node(model, match, bias_sums[terms], num_heads))
        to_remove.extend(match["nodes"])
        fused += 1
    if fused:
        model.remove_nodes(to_remove)
        model.prune_graph(allow_remove_graph_inputs=False)
    return fused


def _match(model: OnnxModel, softmax: NodeProto, producers: dict[str, NodeProto]) -> dict | None:
    """The nodes of one ``Softmax(MatMul(Q, Kᵀ) / c + term + term) @ V`` attention, or None."""
    consumers = model.input_name_to_nodes()
    scores, terms, chain = softmax.input[0], [], []
    while (node := producers.get(scores)) is not None and node.op_type == "Add" and len(terms) < MAX_ADDED_TERMS:
        chain.append(node)
        # The scores side continues up the chain; the other input is one added term.
        left = producers.get(node.input[0])
        side = 0 if left is not None and left.op_type in ("Add", "Div") else 1
        scores, terms = node.input[side], [*terms, node.input[1 - side]]
    div = producers.get(scores)
    if not terms or div is None or div.op_type != "Div":
        return None
    divisor = model.get_constant_value(div.input[1])
    qk = producers.get(div.input[0])
    if divisor is None or np.size(divisor) != 1 or qk is None or qk.op_type != "MatMul":
        return None
    context = [node for node in consumers.get(softmax.output[0], []) if node.op_type == "MatMul"]
    if len(context) != 1 or len(consumers[softmax.output[0]]) != 1:
        return None
    output_path = _single_path(context[0], ["Transpose", "Reshape"], consumers, (0, 2, 1, 3))
    q = model.match_parent_path(qk, ["Transpose", "Reshape", "Add", "MatMul"], [0, 0, 0, None], producers)
    k = model.match_parent_path(qk, ["Transpose", "Reshape", "Add", "MatMul"], [1, 0, 0, None], producers)
    v = model.match_parent_path(context[0], ["Transpose", "Reshape", "Add", "MatMul"], [1, 0, 0, None], producers)
    if output_path is None or q is None or k is None or v is None:
        return None
    if not (_perm(q[0]) == _perm(v[0]) == (0, 2, 1, 3) and _perm(k[0]) == (0, 2, 3, 1)):
        return None
    roots = {path[-1].input[0] for path in (q, k, v)}
    biases = [_bias(model, path[2], path[3]) for path in (q, k, v)]
    if any(bias is None for bias in biases):
        return None
    if any(_depends_on(term, roots, producers) for term in terms):
        return None
    nodes = [softmax, *chain, div, qk, context[0], *output_path, *(node for path in (q, k, v) for node in path[:3])]
    # Nothing outside the attention may read what it removes (attention probabilities as an output, say).
    inside, graph_outputs = {id(node) for node in nodes}, {item.name for item in model.model.graph.output}
    removed = [name for node in nodes if node is not output_path[-1] for name in node.output]
    if any(name in graph_outputs or any(id(reader) not in inside for reader in consumers.get(name, []))
           for name in removed):
        return None
    return {
        "terms": terms,
        "scale": 1.0 / float(np.asarray(divisor).item()),
        "q": q[-1], "k": k[-1], "v": v[-1],
        "biases": biases,
        "output": output_path[-1].output[0],
        "nodes": nodes,
    }


def _single_path(
    start: NodeProto, op_types: list[str], consumers: dict, perm: tuple[int, ...]
) -> list[NodeProto] | None:
    """The chain of sole consumers of ``start`` with ``op_types`` (the first a Transpose with ``perm``)."""
    path, node = [], start
    for op_type in op_types:
        children = consumers.get(node.output[0], [])
        if len(children) != 1 or children[0].op_type != op_type:
            return None
        node = children[0]
        path.append(node)
    return path if _perm(path[0]) == perm else None


def _perm(node: NodeProto) -> tuple[int, ...]:
    return next((tuple(attr.ints) for attr in node.attribute if attr.name == "perm"), ())


def _bias(model: OnnxModel, add: NodeProto, matmul: NodeProto) -> np.ndarray | None:
    """The projection's bias vector: the Add's other input, a constant."""
    other = add.input[1] if add.input[0] == matmul.output[0] else add.input[0]
    value = model.get_constant_value(other)
    return None if value is None or np.ndim(value) != 1 else np.asarray(value)


def _depends_on(name: str, roots: set[str], producers: dict[str, NodeProto]) -> bool:
    """Whether the values of ``name`` are computed from any of ``roots`` (shape reads excepted)."""
    stack, seen = [name], set()
    while stack:
        current = stack.pop()
        if current in roots:
            return True
        node = producers.get(current)
        if current in seen or node is None or node.op_type in SHAPE_ONLY_OPS:
            continue
        seen.add(current)
        stack.extend(node.input)
    return False


def _add_bias_sum(model: OnnxModel, terms: tuple[str, ...]) -> str:
    """``attention_bias`` for ``terms``: their sum, broadcast to ``[batch, heads or 1, T, T]``.

    MultiHeadAttention wants the query axis spelled out, which a padding mask (``[batch, 1, 1, T]``)
    leaves at 1, so the sum is expanded against ``[1, 1, T, 1]`` (a no-op for a full position bias)."""
    name = model.create_node_name("Add", "AttentionBias")
    total = terms[0]
    if len(terms) > 1:
        total = f"{name}_sum"
        model.add_node(helper.make_node("Add", list(terms), [total], f"{name}_Add"))
    for constant, value in (("one", [1]), ("last", [-1]), ("end", [2**62])):
        model.add_initializer(numpy_helper.from_array(np.array(value, dtype=np.int64), f"{name}_{constant}"))
    model.add_node(helper.make_node("Shape", [total], [f"{name}_shape"], f"{name}_Shape"))
    model.add_node(helper.make_node(
        "Slice", [f"{name}_shape", f"{name}_last", f"{name}_end"], [f"{name}_keys"], f"{name}_Slice"))
    model.add_node(helper.make_node(
        "Concat", [f"{name}_one", f"{name}_one", f"{name}_keys", f"{name}_one"], [f"{name}_target"],
        f"{name}_Concat", axis=0))
    model.add_node(helper.make_node("Expand", [total, f"{name}_target"], [f"{name}_output"], f"{name}_Expand"))
    return f"{name}_output"


def _attention_node(model: OnnxModel, match: dict, attention_bias: str, num_heads: int) -> NodeProto:
    name = model.create_node_name("MultiHeadAttention")
    packed = np.concatenate(match["biases"]).astype(match["biases"][0].dtype)
    model.add_initializer(numpy_helper.from_array(packed, f"{name}_qkv_bias"))
    return helper.make_node(
        "MultiHeadAttention",
        [match["q"].output[0], match["k"].output[0], match["v"].output[0], f"{name}_qkv_bias", "", attention_bias],
        [match["output"]],
        name,
        domain="com.microsoft",
        num_heads=num_heads,
        scale=match["scale"],
    )
