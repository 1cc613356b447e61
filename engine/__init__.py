"""ONNX-optimised CPU inference for transformer NLP models, shaped like Elasticsearch's NLP tasks.

>>> import engine
>>> sorted(engine.TASK_NAMES)[:3]
['fill_mask', 'ner', 'pass_through']

Importing the package is light: only the error classes load here. ``run``, ``load`` and the rest
resolve on first access (PEP 562), so ``import engine._kernels`` needs only numpy and a tool that
only catches :class:`EngineError` does not start ONNX Runtime.
"""

from __future__ import annotations

import atexit
import importlib
import sys
from typing import TYPE_CHECKING, Any

from .errors import (
    DeploymentStopped,
    EngineError,
    ExportError,
    InferenceFailed,
    InferenceTimeout,
    InputTooLarge,
    InvalidInput,
    ModelError,
    NotDeployed,
    PackageError,
    QueueFull,
    ResourceNotFound,
    UnknownTask,
)

if TYPE_CHECKING:
    from .api import engine_home, load, resolve_model, run, shutdown
    from .tasks import TASK_NAMES

__version__ = "0.1.0"

# public name → the module that defines it, imported on first access
_LAZY = {
    "engine_home": "engine.api",
    "load": "engine.api",
    "resolve_model": "engine.api",
    "run": "engine.api",
    "shutdown": "engine.api",
    "TASK_NAMES": "engine.tasks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _shutdown_at_exit() -> None:
    """Stop the deployments ``run`` started, if the API was ever imported."""
    api = sys.modules.get("engine.api")
    if api is not None:
        api.shutdown()


atexit.register(_shutdown_at_exit)

__all__ = [
    "TASK_NAMES",
    "DeploymentStopped",
    "EngineError",
    "ExportError",
    "InferenceFailed",
    "InferenceTimeout",
    "InputTooLarge",
    "InvalidInput",
    "ModelError",
    "NotDeployed",
    "PackageError",
    "QueueFull",
    "ResourceNotFound",
    "UnknownTask",
    "engine_home",
    "load",
    "resolve_model",
    "run",
    "shutdown",
]
