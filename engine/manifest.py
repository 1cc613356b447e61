"""The model package format: a directory with an ONNX graph, ``tokenizer.json`` and ``engine.json``.

This module is the only thing ``exporters/`` and ``engine/`` share: the exporter writes a
:class:`Manifest`, the engine reads it back and refuses a package whose files do not hash to what
the manifest recorded (a package is data; a tampered or half-copied one must not load).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import PackageError

SCHEMA_VERSION = 1
MANIFEST_NAME = "engine.json"

TASKS = (
    "fill_mask",
    "ner",
    "question_answering",
    "text_classification",
    "text_embedding",
    "text_expansion",
    "text_similarity",
    "zero_shot_classification",
    "pass_through",
)
TOKENIZER_TYPES = ("bert", "mpnet", "roberta", "xlm_roberta", "deberta_v2")
TRUNCATE_MODES = ("first", "second", "balanced", "none")
SIMILARITIES = ("cosine", "dot_product", "l2_norm")


@dataclasses.dataclass
class TokenizationConfig:
    """Elasticsearch's tokenization block (ELASTIC_REFERENCE.md §4.1), stored in the manifest."""

    type: str = "bert"
    do_lower_case: bool = False
    max_sequence_length: int = 512
    truncate: str = "first"
    span: int = -1
    with_special_tokens: bool = True
    add_prefix_space: bool | None = None

    def __post_init__(self) -> None:
        if self.type not in TOKENIZER_TYPES:
            raise PackageError(f"unknown tokenization type [{self.type}]; expected one of {TOKENIZER_TYPES}")
        if self.truncate not in TRUNCATE_MODES:
            raise PackageError(f"unknown truncate [{self.truncate}]; expected one of {TRUNCATE_MODES}")
        if self.max_sequence_length <= 0:
            raise PackageError("[max_sequence_length] must be greater than 0")

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["add_prefix_space"] is None:
            del data["add_prefix_space"]
        return data


@dataclasses.dataclass
class Manifest:
    """What ``engine.json`` holds. See DESIGN.md, "Model package"."""

    task: str
    architecture: str
    graph: str
    inputs: list[str]
    outputs: list[dict[str, Any]]
    tokenizer: str
    tokenization: TokenizationConfig
    labels: list[str] | None = None
    embedding_size: int | None = None
    similarity: str | None = None
    quantization: dict[str, Any] = dataclasses.field(default_factory=dict)
    optimization: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    special_tokens: dict[str, Any] = dataclasses.field(default_factory=dict)
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Where exporter-chosen values came from, e.g. {"max_sequence_length": {"value", "origin", "reason"}};
    # informational (the engine runs without it; packages written before it have none).
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise PackageError(f"manifest task [{self.task}] is not one of {TASKS}")
        if self.similarity is not None and self.similarity not in SIMILARITIES:
            raise PackageError(f"manifest similarity [{self.similarity}] is not one of {SIMILARITIES}")
        if isinstance(self.tokenization, dict):
            self.tokenization = TokenizationConfig(**self.tokenization)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tokenization"] = self.tokenization.to_json()
        return data

    @property
    def output_names(self) -> list[str]:
        return [output["name"] for output in self.outputs]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Hash every file in ``directory`` (but the manifest) into ``manifest.files`` and write it."""
    directory = Path(directory)
    manifest.files = {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME
    }
    target = directory / MANIFEST_NAME
    target.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n")
    return target


def read_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """Read ``engine.json`` from a package directory and, by default, check every file's sha256.

    Raises:
        PackageError: the directory or manifest is missing or malformed, a listed file is missing,
            or a file's hash differs from the manifest's.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise PackageError(f"[{directory}] is not a model package: no {MANIFEST_NAME}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PackageError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict):
        raise PackageError(f"{path} must hold a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PackageError(f"{path} has schema_version [{version}]; this engine reads [{SCHEMA_VERSION}]")
    known = {field.name for field in dataclasses.fields(Manifest)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PackageError(f"{path} has unknown keys {unknown}")
    try:
        manifest = Manifest(**data)
    except TypeError as error:
        raise PackageError(f"{path} is missing required keys: {error}") from error
    for name in (manifest.graph, manifest.tokenizer):
        if name not in manifest.files:
            raise PackageError(f"{path} lists no sha256 for [{name}]")
    if verify:
        for name, expected in manifest.files.items():
            file = directory / name
            if not file.is_file():
                raise PackageError(f"model package [{directory}] is missing [{name}]")
            actual = sha256_file(file)
            if actual != expected:
                raise PackageError(
                    f"model package [{directory}] is corrupt: sha256 of [{name}] is {actual}, "
                    f"the manifest says {expected}"
                )
    return manifest
