"""What a package's ONNX graph may ask ONNX Runtime to do, checked before a session opens it.

A graph is data from a download, but ONNX Runtime will run whatever operators it names and read
whatever files its external-data entries point to. So before any session is built: every operator
domain must be one ONNX Runtime implements itself (the standard ``ai.onnx`` domain, spelled ``''``,
and ``com.microsoft``, where the exporter's fusions and int8 kernels live; no exporter here emits
``ai.onnx.ml``, so it is refused too), no model-local functions (they would name their own domains),
and every external-data location must be a plain file inside the package (the same rule as the
manifest's files: no ``..``, no absolute path, no symlink) that the manifest hashes. The engine never registers custom-op
libraries (engine/session.py builds every session), so an unknown domain could only fail later in
ONNX Runtime; refusing it here says why, in the engine's words.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import PackageError
from .manifest import Manifest, package_file

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "com.microsoft"})


def _graphs(graph: Any) -> Iterator[Any]:
    """The graph and every subgraph held in node attributes (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor that may carry external data: initializers, sparse initializers, tensor attributes."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices


def check_graph(package_dir: Path, manifest: Manifest) -> None:
    """Refuse a graph with operators outside :data:`ALLOWED_DOMAINS` or external data outside the package.

    Parses the graph's protobuf without its external data (the graph file is size-capped by
    ``read_manifest`` already).

    Raises:
        PackageError: the graph does not parse, names a domain not allowed, defines local functions,
            or points external data outside the package or at a file the manifest does not hash.
    """
    import onnx  # noqa: PLC0415 - only package loading needs it; `import engine` stays light

    graph_name = manifest.graph
    path = package_file(package_dir, graph_name, "graph")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError, onnx its own types
        raise PackageError(f"model package [{package_dir}]: cannot parse graph [{graph_name}]: {error}") from error
    where = f"model package [{package_dir}] graph [{graph_name}]"
    if model.functions:
        names = sorted(f"{function.domain}:{function.name}" for function in model.functions)
        raise PackageError(f"{where} defines local functions {names[:5]}; packages may use only built-in operators")
    for opset in model.opset_import:
        if opset.domain not in ALLOWED_DOMAINS:
            raise PackageError(f"{where} imports operator domain [{opset.domain}]; allowed: {sorted(ALLOWED_DOMAINS)}")
    for graph in _graphs(model.graph):
        for node in graph.node:
            if node.domain not in ALLOWED_DOMAINS:
                raise PackageError(
                    f"{where}: node [{node.name}] runs [{node.domain}:{node.op_type}]; "
                    f"allowed operator domains: {sorted(ALLOWED_DOMAINS)}"
                )
        for tensor in _tensors(graph):
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
            what = f"external data [{location}] of tensor [{tensor.name}]"
            name = (PurePosixPath(graph_name).parent / location).as_posix() if location else ""
            package_file(package_dir, name, what)
            if name not in manifest.files:
                raise PackageError(f"{where}: {what} is not a file the manifest hashes")
