"""A model package loaded and checked: manifest, tokenizer and the task bound to them, ready for a deployment."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .graph_check import check_graph
from .manifest import Manifest, read_manifest
from .tasks import TaskRunner, get_task
from .tokenization import Tokenizer


@dataclasses.dataclass(frozen=True)
class LoadedPackage:
    """Everything a deployment needs from a package, loaded once and shared by its allocations."""

    path: Path
    manifest: Manifest
    tokenizer: Tokenizer
    # The package's task bound to its manifest and tokenizer, once: every request goes through it.
    runner: TaskRunner[Any, Any, Any]

    @property
    def graph_path(self) -> Path:
        return self.path / self.manifest.graph

    @property
    def size_bytes(self) -> int:
        """Size of the graph file: Elasticsearch's default inference-cache size is the model size."""
        return self.graph_path.stat().st_size


def load_package(path: str | Path, verify: bool = True) -> LoadedPackage:
    """Read and verify a package directory (sha256 of every file, unless ``verify`` is false), and
    what its graph may do (engine.graph_check: operator domains, external data inside the package).

    Raises:
        PackageError: missing, corrupt or hostile package.
    """
    path = Path(path).resolve()
    manifest = read_manifest(path, verify=verify)
    check_graph(path, manifest)
    tokenizer = Tokenizer.from_file(path / manifest.tokenizer, manifest.tokenization, manifest.special_tokens)
    runner = get_task(manifest.task).bind(manifest, tokenizer, package=path.name)
    return LoadedPackage(path=path, manifest=manifest, tokenizer=tokenizer, runner=runner)
