"""The task layer: Elasticsearch's NLP post-processing, one module per task.

``get_task(name)`` is the registry: it returns the task's runner class, whose ``bind(manifest,
tokenizer)`` gives the runner a package keeps. The runner parses a request's config, prepares its
model rows and turns the model outputs into an Elasticsearch result dict.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnknownTask
from .common import Prepared, TaskConfig, TaskRunner
from .fill_mask import TASK as FILL_MASK
from .ner import TASK as NER
from .pass_through import TASK as PASS_THROUGH
from .question_answering import TASK as QUESTION_ANSWERING
from .text_classification import TASK as TEXT_CLASSIFICATION
from .text_embedding import TASK as TEXT_EMBEDDING
from .text_expansion import TASK as TEXT_EXPANSION
from .text_similarity import TASK as TEXT_SIMILARITY
from .zero_shot_classification import TASK as ZERO_SHOT_CLASSIFICATION

Task = type[TaskRunner[Any, Any, Any]]

_TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        FILL_MASK,
        NER,
        QUESTION_ANSWERING,
        TEXT_CLASSIFICATION,
        TEXT_EMBEDDING,
        TEXT_EXPANSION,
        TEXT_SIMILARITY,
        ZERO_SHOT_CLASSIFICATION,
        PASS_THROUGH,
    )
}
TASK_NAMES: tuple[str, ...] = tuple(_TASKS)


def get_task(name: str) -> Task:
    """The runner class of an Elasticsearch task name (``get_task(name).bind(manifest, tokenizer)``).

    Raises:
        UnknownTask: ``name`` is not one of :data:`TASK_NAMES`.
    """
    task = _TASKS.get(name) if isinstance(name, str) else None
    if task is None:
        raise UnknownTask(f"unknown task [{name}]; valid tasks are [{', '.join(TASK_NAMES)}]")
    return task


__all__ = ["TASK_NAMES", "Prepared", "Task", "TaskConfig", "TaskRunner", "get_task"]
