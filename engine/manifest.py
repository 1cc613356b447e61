"""The model package format: a directory with an ONNX graph, ``tokenizer.json`` and ``engine.json``.

This module is the only thing ``exporters/`` and ``engine/`` share: the exporter writes a
:class:`Manifest`, the engine reads it back and refuses a package whose files do not hash to what
the manifest recorded (a package is data; a tampered or half-copied one must not load).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import PackageError

SCHEMA_VERSION = 1
MANIFEST_NAME = "engine.json"
# The revision of the graph recipe the exporter follows (which fusions, how it quantises), written to
# ``optimization.recipe``. Raised when a recipe change makes re-exported packages faster or closer to
# PyTorch, so that ``engine.api.resolve_model`` re-exports the packages *it cached* from an older recipe;
# a package a user points at is data and loads as it is. 2: the residual LayerNorm is left unfused;
# 3: the int8 FFN-in GEMM adds BiasGelu's bias, a plain Gelu follows.
GRAPH_RECIPE = 3

# A package is data a user downloads: every size is capped before anything is read or parsed. The
# graph cap is protobuf's own 2 GiB limit (bigger weights go to external data files); the package cap
# bounds those (the largest models Elasticsearch deploys are ~2.5 GB); an exported manifest is a few KB,
# the biggest multilingual tokenizer.json files ~20 MB.
MAX_MANIFEST_BYTES = 4 << 20
MAX_TOKENIZER_BYTES = 128 << 20
MAX_GRAPH_BYTES = 2 << 30
MAX_PACKAGE_BYTES = 32 << 30
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
_SHA256 = re.compile(r"[0-9a-f]{64}")

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

    @property
    def graph_recipe(self) -> int:
        """The recipe revision the graph was built with; packages written before it was recorded read 1."""
        return self.optimization.get("recipe", 1)

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


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, with JSON's booleans kept apart from its integers."""
    return isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, (int, float)))


def _require(ok: bool, path: Path, message: str) -> None:
    if not ok:
        raise PackageError(f"{path}: {message}")


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# Manifest fields that are plain JSON values: name -> (JSON type, what the message calls it).
_FIELD_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "task": (str, "a string"),
    "architecture": (str, "a string"),
    "graph": (str, "a string"),
    "tokenizer": (str, "a string"),
    "tokenization": (dict, "an object"),
    "quantization": (dict, "an object"),
    "optimization": (dict, "an object"),
    "source": (dict, "an object"),
    "special_tokens": (dict, "an object"),
    "task_options": (dict, "an object"),
    "provenance": (dict, "an object"),
    "files": (dict, "an object"),
}
_TOKENIZATION_TYPES: dict[str, tuple[type, str]] = {
    "type": (str, "a string"),
    "do_lower_case": (bool, "a boolean"),
    "max_sequence_length": (int, "an integer"),
    "truncate": (str, "a string"),
    "span": (int, "an integer"),
    "with_special_tokens": (bool, "a boolean"),
    "add_prefix_space": (bool, "a boolean"),
}


def _check_fields(data: dict[str, Any], path: Path) -> None:
    """Every manifest field's JSON shape, before a dataclass is built from it, so a hostile or
    hand-edited manifest gets a message naming the field instead of a TypeError deep in a task."""
    required = [field.name for field in dataclasses.fields(Manifest)
                if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in data]
    _require(not missing, path, f"missing required keys {missing}")
    for name, (kind, words) in _FIELD_TYPES.items():
        if name in data:
            _require(_is(data[name], kind), path, f"[{name}] must be {words}, got [{data[name]!r:.80}]")
    _require(data["task"] in TASKS, path, f"task [{data['task']}] is not one of {TASKS}")
    inputs = data["inputs"]
    _require(_is_str_list(inputs) and len(inputs) > 0 and len(set(inputs)) == len(inputs)
             and set(inputs) <= set(INPUT_NAMES), path,
             f"[inputs] must be a non-empty list of distinct names from {INPUT_NAMES}, got [{inputs!r:.120}]")
    outputs = data["outputs"]
    _require(isinstance(outputs, list) and len(outputs) > 0, path, "[outputs] must be a non-empty list")
    for output in outputs:
        _require(isinstance(output, dict) and isinstance(output.get("name"), str) and _is_str_list(output.get("axes"))
                 and len(output["axes"]) > 0 and set(output) <= {"name", "axes", "meaning"}
                 and isinstance(output.get("meaning", ""), str), path,
                 f'each of [outputs] must be {{"name": str, "axes": [str, ...], "meaning": str}}, got [{output!r:.120}]')
    for output in outputs:
        _require(output["axes"][0] == "batch" and len(set(output["axes"])) == len(output["axes"]), path,
                 f"output [{output['name']}] axes {output['axes']} must start with [batch] and not repeat")
    labels = data.get("labels")
    _require(labels is None or _is_str_list(labels), path, f"[labels] must be a list of strings, got [{labels!r:.80}]")
    size = data.get("embedding_size")
    _require(size is None or (_is(size, int) and size > 0), path, f"[embedding_size] must be a positive integer, got [{size!r}]")
    similarity = data.get("similarity")
    _require(similarity is None or similarity in SIMILARITIES, path, f"[similarity] [{similarity}] is not one of {SIMILARITIES}")
    tokenization = data["tokenization"]
    unknown = sorted(set(tokenization) - set(_TOKENIZATION_TYPES))
    _require(not unknown, path, f"[tokenization] has unknown keys {unknown}")
    for name, value in tokenization.items():
        kind, words = _TOKENIZATION_TYPES[name]
        _require(value is None if name == "add_prefix_space" and value is None else _is(value, kind), path,
                 f"[tokenization.{name}] must be {words}, got [{value!r:.80}]")
    for name, pair in data.get("special_tokens", {}).items():
        _require(isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and _is(pair[1], int)
                 and pair[1] >= 0, path, f"[special_tokens.{name}] must be [token, id >= 0], got [{pair!r:.80}]")
    recipe = data.get("optimization", {}).get("recipe", 1)
    _require(_is(recipe, int) and recipe >= 1, path, f"[optimization.recipe] must be an integer >= 1, got [{recipe!r:.80}]")
    for name, digest in data["files"].items():
        _require(isinstance(digest, str) and _SHA256.fullmatch(digest) is not None, path,
                 f"[files.{name}] must be a sha256 hex digest, got [{digest!r:.80}]")


def package_file(directory: Path, name: str, what: str) -> Path:
    """The path of a file a package names, refused unless it stays inside the package: relative, no
    ``..``, no symlink anywhere on the way (a package must not make the engine read outside it).

    Raises:
        PackageError: the name escapes the package, goes through a symlink, or is not a regular file.
    """
    pure = PurePosixPath(name)
    if (not name or "\\" in name or "\0" in name or pure.is_absolute() or os.path.isabs(name)
            or any(part in ("..", ".", "") for part in name.split("/"))):
        raise PackageError(f"model package [{directory}]: {what} [{name}] must be a relative path inside the package")
    current = directory
    for part in pure.parts:
        current = current / part
        if current.is_symlink():
            raise PackageError(f"model package [{directory}]: {what} [{name}] is a symlink; packages may not hold symlinks")
    if not current.exists():
        raise PackageError(f"model package [{directory}] is missing [{name}]")
    if not current.is_file():
        raise PackageError(f"model package [{directory}]: {what} [{name}] is not a regular file")
    return current


def check_package_tree(directory: Path, manifest: Manifest) -> None:
    """No symlinks anywhere in the package, every size under its cap (see MAX_*_BYTES)."""
    total = 0
    for root, dirs, files in os.walk(directory):
        for entry in (*dirs, *files):
            if os.path.islink(os.path.join(root, entry)):
                link = Path(root, entry).relative_to(directory)
                raise PackageError(f"model package [{directory}] holds a symlink [{link}]; packages may not hold symlinks")
        total += sum(os.stat(os.path.join(root, name)).st_size for name in files)
    if total > MAX_PACKAGE_BYTES:
        raise PackageError(f"model package [{directory}] is {total} bytes; the cap is {MAX_PACKAGE_BYTES}")
    for name, what, cap in ((manifest.graph, "graph", MAX_GRAPH_BYTES), (manifest.tokenizer, "tokenizer", MAX_TOKENIZER_BYTES)):
        size = package_file(directory, name, what).stat().st_size
        if size > cap:
            raise PackageError(f"model package [{directory}]: {what} [{name}] is {size} bytes; the cap is {cap}")


def read_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """Read ``engine.json`` from a package directory and, by default, check every file's sha256.

    Before any file is hashed or parsed: the manifest's size, every field's JSON shape, every file
    it names (inside the package, no ``..``, no absolute path, no symlink), no symlinks in the
    package at all, and the graph, tokenizer and package sizes (``MAX_*_BYTES``).

    Raises:
        PackageError: the directory or manifest is missing or malformed, a listed file is missing or
            outside the package, a size is over its cap, or a file's hash differs from the manifest's.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if path.is_symlink():
        raise PackageError(f"model package [{directory}]: {MANIFEST_NAME} is a symlink; packages may not hold symlinks")
    if not path.is_file():
        raise PackageError(f"[{directory}] is not a model package: no {MANIFEST_NAME}")
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise PackageError(f"{path} is {size} bytes; the cap is {MAX_MANIFEST_BYTES}")
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
    _check_fields(data, path)
    manifest = Manifest(**data)
    for name in (manifest.graph, manifest.tokenizer):
        if name not in manifest.files:
            raise PackageError(f"{path} lists no sha256 for [{name}]")
    for name in manifest.files:
        package_file(directory, name, "file")
    check_package_tree(directory, manifest)
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


def package_recipe(directory: str | Path) -> int | None:
    """The graph recipe of the package in ``directory``, or None when there is no package there that
    reads (no manifest, or one this engine refuses): what a cache compares with :data:`GRAPH_RECIPE`
    to decide whether an export it made is still current."""
    if not (Path(directory) / MANIFEST_NAME).is_file():
        return None
    try:
        return read_manifest(directory, verify=False).graph_recipe
    except PackageError:
        return None
