"""Read a sentence-transformers folder's module pipeline (``modules.json``) into what the graph needs.

Two layouts are in use and both are read:

* before sentence-transformers 5: modules typed ``sentence_transformers.models.Pooling`` (etc.) and a
  Pooling config of booleans (``pooling_mode_mean_tokens: true``, ...), concatenated in the fixed
  order cls, max, mean, mean_sqrt_len;
* 5.x: modules typed by their new paths (``sentence_transformers.base.modules.transformer.Transformer``,
  ``sentence_transformers.sentence_transformer.modules.pooling.Pooling``, ...) and a Pooling config
  with ``"pooling_mode": "mean"`` (a string, or a list concatenated in the order given) and
  ``include_prompt``.

The module kind is the class name at the end of the type path, which both layouts share. Prompts from
``config_sentence_transformers.json`` are reported, never applied: the graph embeds the text it is
given, and a user who wants a prompt prepends it (the manifest's ``task_options.prompts`` says which).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import ExportError

from .source import ModelSource, read_modules
from .wrappers import DenseLayer

_ST_PREFIX = "sentence_transformers."
# Pre-5 Pooling keys → sentence-transformers 5 mode names, in the order the old Pooling concatenated them.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# sentence-transformers mode names → the graph's (wrappers.POOLING_MODES); others are refused.
_POOLING_MODES = {"cls": "cls", "max": "max", "mean": "mean", "mean_sqrt_len_tokens": "mean_sqrt_len"}
_KNOWN_POOLING_MODES = (*_POOLING_MODES, "weightedmean", "lasttoken")
# Dense activations we rebuild; sentence-transformers stores the class's import path.
_DENSE_ACTIVATIONS = {"Identity", "Tanh", "ReLU", "GELU", "Sigmoid"}
_EMBEDDING_KEY = "sentence_embedding"


@dataclasses.dataclass(frozen=True)
class SentencePipeline:
    """The parts of a sentence-transformers pipeline that follow the encoder, and its prompts.

    Attributes:
        pooling: graph pooling modes, concatenated in this order.
        dense: Dense layers after pooling.
        normalize: a Normalize module ends the pipeline.
        similarity: ``similarity_fn_name`` from ``config_sentence_transformers.json``.
        prompts: non-empty prompts by name (``config_sentence_transformers.json``), not applied.
        default_prompt_name: the prompt sentence-transformers' ``encode`` applies when given none.
        include_prompt: ``False`` when the Pooling leaves prompt tokens out of the pool.
    """

    pooling: tuple[str, ...]
    dense: tuple[DenseLayer, ...]
    normalize: bool
    similarity: str | None = None
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str | None = None
    include_prompt: bool = True

    def task_options(self) -> dict[str, Any]:
        """What the manifest's ``task_options`` records: pooling always, prompt settings when present."""
        options: dict[str, Any] = {"pooling": list(self.pooling)}
        if self.prompts:
            options["prompts"] = dict(self.prompts)
        if self.default_prompt_name is not None:
            options["default_prompt_name"] = self.default_prompt_name
        if not self.include_prompt:
            options["include_prompt"] = False
        return options

    def notices(self) -> list[str]:
        """Lines the export prints so the user learns what sentence-transformers does that the graph
        does not."""
        lines = []
        prompt = self.prompts.get(self.default_prompt_name or "")
        if prompt:
            lines.append(
                f"sentence-transformers prepends the default prompt [{self.default_prompt_name}] "
                f"({prompt!r}) to every text; the package embeds texts as given, so prepend it yourself "
                "(task_options.prompts lists the model's prompts)"
            )
        if not self.include_prompt and self.prompts:
            lines.append(
                "the model's Pooling leaves prompt tokens out (include_prompt: false); the graph pools "
                "every token, so prompted texts embed slightly differently from sentence-transformers"
            )
        return lines


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot read {file}: {error}") from error
    if not isinstance(data, dict):
        raise ExportError(f"{file} must hold a JSON object")
    return data


def module_kind(module: dict[str, Any]) -> str | None:
    """``Pooling``, ``Dense``, ... for a sentence-transformers module of either layout, else ``None``
    (a custom module class, which this exporter cannot rebuild)."""
    type_path = str(module.get("type", ""))
    return type_path.rsplit(".", 1)[-1] if type_path.startswith(_ST_PREFIX) else None


def pooling_modes(config: dict[str, Any], directory: Path) -> tuple[str, ...]:
    """The graph's pooling modes from a Pooling config of either layout, in concatenation order.

    sentence-transformers 5 prefers ``pooling_mode`` over the legacy keys and treats a config that
    enables nothing as mean pooling; so does this, since the installed library is the reference.
    """
    if "pooling_mode" in config:
        value = config["pooling_mode"]
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
            raise ExportError(
                f"[pooling_mode] in {directory} must be a mode name or a non-empty list of them"
            )
    else:
        names = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
    unknown = [name for name in names if name not in _KNOWN_POOLING_MODES]
    if unknown:
        raise ExportError(
            f"unknown sentence-transformers pooling mode {unknown} in {directory}; "
            f"expected one of {', '.join(_KNOWN_POOLING_MODES)}"
        )
    unsupported = [name for name in names if name not in _POOLING_MODES]
    if unsupported:
        raise ExportError(
            f"sentence-transformers pooling {unsupported} in {directory} is not supported; "
            f"supported: {', '.join(_POOLING_MODES)}"
        )
    return tuple(_POOLING_MODES[name] for name in names)


def _dense_layer(directory: Path, allow_pickle: bool) -> DenseLayer:
    config = _read_json(directory / "config.json")
    for key in ("module_input_name", "module_output_name"):
        if config.get(key, _EMBEDDING_KEY) != _EMBEDDING_KEY:
            raise ExportError(
                f"the Dense module in {directory} reads or writes [{config[key]}]; only Dense layers on "
                f"the [{_EMBEDDING_KEY}] are supported"
            )
    activation_path = str(config.get("activation_function") or "torch.nn.modules.linear.Identity")
    activation_name = activation_path.rsplit(".", 1)[-1]
    if not activation_path.startswith("torch.") or activation_name not in _DENSE_ACTIVATIONS:
        raise ExportError(
            f"unsupported Dense activation [{activation_path}] in {directory}; "
            f"supported: {', '.join(sorted(_DENSE_ACTIVATIONS))}"
        )
    try:
        linear = nn.Linear(
            int(config["in_features"]), int(config["out_features"]), bias=bool(config.get("bias", True))
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(
            f"the Dense config in {directory} needs integer in_features and out_features"
        ) from error
    safetensors_file = directory / "model.safetensors"
    pickle_file = directory / "pytorch_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        state = load_file(str(safetensors_file))
    elif pickle_file.is_file() and allow_pickle:
        state = torch.load(str(pickle_file), map_location="cpu", weights_only=True)
    elif pickle_file.is_file():
        raise ExportError(
            f"[{directory}] has only pickle weights (pytorch_model.bin), and unpickling can run arbitrary code; "
            "convert them to safetensors or pass --allow-pickle"
        )
    else:
        raise ExportError(
            f"[{directory}] holds no Dense weights (model.safetensors; pickle weights need --allow-pickle)"
        )
    try:
        linear.load_state_dict({key.removeprefix("linear."): value for key, value in state.items()})
    except RuntimeError as error:
        raise ExportError(
            f"the Dense weights in {directory} do not fit its config: {str(error).splitlines()[0]}"
        ) from error
    return DenseLayer(linear, getattr(nn, activation_name)())


def _prompt_settings(path: Path) -> tuple[str | None, dict[str, str], str | None]:
    """``similarity_fn_name``, the non-empty prompts and ``default_prompt_name``."""
    file = path / "config_sentence_transformers.json"
    if not file.is_file():
        return None, {}, None
    config = _read_json(file)
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict):
        raise ExportError(f"[prompts] in {file} must be an object of prompt strings")
    kept = {str(name): str(prompt) for name, prompt in sorted(prompts.items()) if prompt}
    default = config.get("default_prompt_name")
    return config.get("similarity_fn_name"), kept, (str(default) if default else None)


def read_sentence_pipeline(source: ModelSource, allow_pickle: bool) -> SentencePipeline:
    """Pooling, Dense and Normalize from ``modules.json``; a plain HF model gets mean pooling, as
    sentence-transformers (and therefore eland) gives it."""
    pooling: tuple[str, ...] = ("mean",)
    dense: list[DenseLayer] = []
    normalize, include_prompt = False, True
    for module in read_modules(source.path):
        kind = module_kind(module)
        directory = source.path / str(module.get("path", ""))
        if kind in ("Transformer", "Dropout"):  # the encoder itself; dropout is the identity at inference
            continue
        if kind == "Pooling":
            config = _read_json(directory / "config.json")
            pooling = pooling_modes(config, directory)
            include_prompt = bool(config.get("include_prompt", True))
        elif kind == "Dense":
            dense.append(_dense_layer(directory, allow_pickle))
        elif kind == "Normalize":
            normalize = True
        else:
            raise ExportError(
                f"unsupported sentence-transformers module [{module.get('type')}] in {source.path}; "
                "supported: Transformer, Pooling, Dense, Normalize, Dropout"
            )
    similarity, prompts, default_prompt = _prompt_settings(source.path)
    return SentencePipeline(
        pooling=pooling,
        dense=tuple(dense),
        normalize=normalize,
        similarity=similarity,
        prompts=prompts,
        default_prompt_name=default_prompt,
        include_prompt=include_prompt,
    )
