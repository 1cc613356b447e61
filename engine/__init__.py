"""ONNX-optimised CPU inference for transformer NLP models, shaped like Elasticsearch's NLP tasks.

>>> import engine
>>> sorted(engine.TASK_NAMES)[:3]
['fill_mask', 'ner', 'pass_through']
"""

from __future__ import annotations

import atexit

from .api import engine_home, load, resolve_model, run, shutdown
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
from .tasks import TASK_NAMES

__version__ = "0.1.0"

atexit.register(shutdown)

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
