"""Batch inference on Ray Data: every row of a Dataset through one task, lazily, on an actor pool.

Each actor is one allocation: it verifies the package and opens one ONNX Runtime session with
``threads_per_allocation`` intra-op threads (and reserves that many CPUs), then runs the batches Ray
Data hands it through the engine's own scheduler, as ``engine.run`` would. A row the task refuses
gets an error record instead of a result (``engine.rows.run_rows``, errors that are not about one row
recorded too), so one bad row never fails a block. Ray Data re-runs the blocks of an actor that dies
(its node lost) on the others and keeps only one attempt's output, so every row comes out exactly once; with
``DataContext.execution_options.preserve_order`` they come out in input order.

Results are JSON text (``json.loads`` gives exactly what ``engine.run`` returns): result shapes differ
per task, and per row (truncation flags), which a columnar schema cannot hold across blocks.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

from ..config import DeploymentConfig
from ..deployment import Deployment
from ..package import load_package
from ..rows import DEFAULT_BATCH_SIZE, ERROR_COLUMN, run_rows


class Predictor:
    """The Ray Data actor class: one engine deployment of 1 allocation, unpinned."""

    def __init__(self, package_path: str, task: str, column: str, output_column: str, threads: int,
                 batch_size: int, config: Mapping[str, Any]) -> None:
        from ..errors import ModelError

        package = load_package(package_path, verify=True)
        if package.manifest.task != task:
            raise ModelError(f"model package [{package_path}] was exported for task "
                             f"[{package.manifest.task}], not [{task}]")
        self._deployment = Deployment(package, DeploymentConfig(
            number_of_allocations=1, threads_per_allocation=threads, pin_threads=False,
            queue_capacity=batch_size, cache_size=0))  # no cache: a corpus seldom repeats
        self._column = column
        self._output_column = output_column
        self._config = dict(config)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        values = [value if isinstance(value, str) else None for value in batch[self._column].tolist()]
        rows = run_rows(functools.partial(self._deployment.infer, wait_for_room=True), values, self._config,
                        record_call_errors=True)
        batch[self._output_column] = np.array(
            [None if result is None else json.dumps(result) for result, _ in rows], dtype=object)
        batch[ERROR_COLUMN] = np.array([None if error is None else json.dumps(error) for _, error in rows],
                                       dtype=object)
        return batch


def infer_dataset(ds: Any, model: str | os.PathLike[str] | None, task: str, column: str = "text",
                  output_column: str | None = None, concurrency: int | tuple[int, int] = 1,
                  threads_per_allocation: int = 1, batch_size: int = DEFAULT_BATCH_SIZE, **config: Any) -> Any:
    """A lazy Ray Dataset: ``ds`` plus the task's result of every row's ``column``.

    Args:
        ds: a ``ray.data.Dataset`` with a string column ``column``.
        model: a package directory readable at the same path on every node, a Hugging Face source
            (exported here first, into ``$ENGINE_HOME``), or None for the task's default model.
        task: any engine task (``text_embedding``, ``ner``, ``question_answering``, ...).
        output_column: where the result goes, as JSON text (default ``result``); ``error`` gets the
            JSON error record of a refused row (None otherwise).
        concurrency: actors (allocations), or ``(min, max)`` for an autoscaling pool.
        threads_per_allocation: CPUs reserved per actor and its session's intra-op threads.
        batch_size: rows per call into an actor.
        **config: the task's inference_config update keys (``question``, ``labels``, ...).

    Raises:
        InvalidInput / PackageError / ModelError: a bad setting or model, before anything runs.
    """
    from ..api import _check_task, resolve_model
    from ..errors import InvalidInput

    _check_task(task)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"[batch_size] must be a positive integer, got [{batch_size!r}]")
    DeploymentConfig(threads_per_allocation=threads_per_allocation, queue_capacity=batch_size)
    package = load_package(resolve_model(model, task), verify=True)
    package.runner.parse_config(dict(config))  # a bad config fails here, not in every row
    from ray.data import ActorPoolStrategy

    pool = (ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1]) if isinstance(concurrency, tuple)
            else ActorPoolStrategy(size=concurrency))
    return ds.map_batches(
        Predictor,
        fn_constructor_kwargs={"package_path": str(package.path), "task": task, "column": column,
                               "output_column": output_column or "result", "threads": threads_per_allocation,
                               "batch_size": batch_size, "config": config},
        batch_size=batch_size, batch_format="numpy", compute=pool, num_cpus=threads_per_allocation,
    )
