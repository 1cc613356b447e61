"""Where a model comes from: a local directory or a Hugging Face hub id, checked before anything loads.

The checks here run before transformers touches the files, because two of them are about what loading
would *do*: a ``trust_remote_code`` model runs its own Python, and a ``pytorch_model.bin`` is a pickle
that can run arbitrary code when unpickled. Both are refused unless the user opts in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from engine.errors import ExportError

# What an export needs from a hub repository; weights in other formats are never fetched.
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "**/*.json", "**/*.safetensors"]
_PICKLE_PATTERNS = ["*.bin", "**/*.bin"]
_SNAPSHOT_REVISION = re.compile(r"/snapshots/([0-9a-f]{40})(/|$)")
# A hub repository id: ``namespace/name``, each of word characters, '-' and '.', starting and ending
# with a word character (huggingface_hub's REPO_ID_REGEX, namespace required).
_HUB_ID = re.compile(r"\w(?:[\w.-]*\w)?/\w(?:[\w.-]*\w)?", re.ASCII)
_HUB_ID_MAX_LENGTH = 96


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A model directory on disk and where it came from (recorded in the manifest ``source``).

    ``path`` is the directory given (or downloaded); ``model_path`` is where the Hugging Face model lives,
    which differs for sentence-transformers folders that keep it in a module subfolder (``0_Transformer``).
    """

    path: Path
    model_path: Path
    id: str
    revision: str | None
    config: dict[str, Any]

    @property
    def is_sentence_transformer(self) -> bool:
        return (self.path / "modules.json").is_file()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "revision": self.revision}


def is_hub_id(source: str) -> bool:
    """Whether ``source`` can name a hub repository: ``org/name`` in the hub's syntax (huggingface_hub's
    ``validate_repo_id`` rules, with the namespace required). Anything else that is not a directory is
    a mistyped local path, and is reported as one instead of being sent to the network."""
    return (
        len(source) <= _HUB_ID_MAX_LENGTH
        and _HUB_ID.fullmatch(source) is not None
        and "--" not in source
        and ".." not in source
        and not source.endswith(".git")
    )


def _local_candidate(source: str) -> str:
    """Where a source was looked for on disk, for messages (absolute, ``~`` expanded)."""
    return str(Path(source).expanduser().absolute())


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download(repo_id: str, revision: str | None, allow_pickle: bool) -> Path:
    """Fetch a hub snapshot, turning every hub or network failure into one ``ExportError`` line that
    also says where the source was looked for locally (the user may have meant a directory)."""
    local = f"no directory {_local_candidate(repo_id)}"
    if _hub_offline():
        raise ExportError(
            f"[{repo_id}] is not a local directory ({local}) and the Hugging Face hub is offline "
            "(HF_HUB_OFFLINE is set); download the model first and pass its directory"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    patterns = _HUB_PATTERNS + (_PICKLE_PATTERNS if allow_pickle else [])
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as error:
        raise ExportError(
            f"cannot find [{repo_id}]: {local}, and the Hugging Face hub is unreachable or offline "
            f"({_first_line(error)}); download the model first and pass its directory"
        ) from error
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise ExportError(
            f"cannot find [{repo_id}]: {local}, and the Hugging Face hub answered: {_first_line(error)}"
        ) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ExportError(f"[{path}] has no config.json: not a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as error:
        raise ExportError(f"cannot parse {config_file}: {error}") from error
    if not isinstance(config, dict):
        raise ExportError(f"{config_file} must hold a JSON object")
    return config


def read_modules(path: Path) -> list[dict[str, Any]]:
    """A sentence-transformers ``modules.json`` (the module pipeline), or ``[]`` for a plain HF model."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return []
    try:
        modules = json.loads(modules_file.read_text())
    except ValueError as error:
        raise ExportError(f"cannot parse {modules_file}: {error}") from error
    if not isinstance(modules, list) or not all(isinstance(module, dict) for module in modules):
        raise ExportError(f"{modules_file} must hold a list of module objects")
    return modules


def _model_path(path: Path) -> Path:
    for module in read_modules(path):
        if str(module.get("type", "")).endswith(".Transformer"):
            return (path / str(module.get("path", ""))).resolve()
    return path


def check_safety(path: Path, config: dict[str, Any], trust_remote_code: bool, allow_pickle: bool) -> None:
    """Refuse remote code and pickle-only weights unless the user asked for them."""
    custom_code = sorted(file.name for file in path.glob("*.py"))
    if ("auto_map" in config or custom_code) and not trust_remote_code:
        what = "an auto_map in config.json" if "auto_map" in config else f"code files {custom_code}"
        raise ExportError(
            f"[{path}] ships its own model code ({what}); loading it would run that code. "
            "Pass --trust-remote-code if you trust it"
        )
    has_safetensors = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin"))
    if not has_safetensors and has_pickle and not allow_pickle:
        raise ExportError(
            f"[{path}] has only pickle weights (pytorch_model.bin), and unpickling can run arbitrary code; "
            "convert them to safetensors or pass --allow-pickle"
        )
    if not has_safetensors and not has_pickle:
        raise ExportError(
            f"[{path}] holds no model weights (*.safetensors; a hub repository with only pytorch_model.bin "
            "needs --allow-pickle)"
        )


def resolve_source(
    source: str | Path,
    revision: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> ModelSource:
    """A local directory as is, or a hub id downloaded (safetensors only unless ``allow_pickle``).

    Only a string in the hub's ``org/name`` syntax is ever sent to the hub; anything else that is not
    a directory (``my-model-dir``, ``./model``, ``~/models/x``, ``a/b/c``) is a missing directory.

    Raises:
        ExportError: a missing directory, an unreachable hub, remote code, pickle-only weights,
            or no config.json.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path.resolve()
        match = _SNAPSHOT_REVISION.search(path.as_posix())
        found_revision = match.group(1) if match else revision
        source_id = path.as_posix()
    elif path.exists():
        raise ExportError(f"[{text}] is a file; pass a model directory or a Hugging Face hub id")
    elif isinstance(source, Path) or not is_hub_id(text):
        hint = "" if "/" in text or text.startswith((".", "~")) else " (a Hugging Face hub id is org/name)"
        raise ExportError(
            f"model directory [{text}] does not exist (looked for {_local_candidate(text)}){hint}"
        )
    else:
        path = _download(text, revision, allow_pickle)
        match = _SNAPSHOT_REVISION.search(path.as_posix())
        found_revision = match.group(1) if match else revision
        source_id = text
    model_path = _model_path(path)
    config = _read_config(model_path)
    check_safety(model_path, config, trust_remote_code, allow_pickle)
    return ModelSource(path=path, model_path=model_path, id=source_id, revision=found_revision, config=config)
