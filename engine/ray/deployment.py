"""A deployment whose allocations are Ray Serve replicas: ``engine.ray.deploy`` and ``RayDeployment``.

``RayDeployment`` has the interface of :class:`engine.deployment.Deployment` (``engine.protocol.
DeploymentLike``), so the HTTP server and every caller use either unchanged. Each deployment is one
Serve *application* (named after the deployment id) holding one Serve deployment, ``allocation``,
whose replicas are :class:`engine.ray.replica.Allocation` actors; settings are mapped by
:func:`engine.ray.options.plan`. Serve runs without its HTTP proxies: the engine's own front end (or
the caller's process) talks to the replicas through a deployment handle.

Errors keep their type and status across Ray: an ``engine.errors`` class raised in a replica is raised
again here as itself; Serve's back-pressure rejection becomes ``QueueFull`` (429), a timer running out
``InferenceTimeout`` (408), a deleted application ``NotDeployed``. A replica that dies with a request
in flight (its node lost) fails only that attempt: inference has no side effects, so the request is
sent again to a live replica while its timeout allows, at most ``REPLICA_LOSS_RETRIES`` times, and
then fails with ``InferenceFailed`` (500).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..adaptive import AdaptiveAllocations
from ..deployment import QUEUE_FULL_MESSAGE, STOPPING_MESSAGE
from ..errors import (
    DeploymentStopped,
    EngineError,
    InferenceFailed,
    InferenceTimeout,
    InvalidInput,
    ModelError,
    NotDeployed,
    QueueFull,
)
from ..scheduler import check_request
from ..units import format_time_value
from . import options as ray_options
from .replica import SHIPPED, Allocation
from .stats import combine

if TYPE_CHECKING:
    from ..package import LoadedPackage

log = logging.getLogger(__name__)

SERVE_DEPLOYMENT_NAME = "allocation"
REPLICA_LOSS_RETRIES = 2
CONTROL_TIMEOUT_S = 30.0
_LIVE_REPLICA_STATES = ("STARTING", "UPDATING", "RECOVERING", "RUNNING")
T = TypeVar("T")


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), or the one
    ``RAY_ADDRESS`` names, or start a local one; then make sure Serve runs, without HTTP proxies.
    Does nothing to a Ray session the process already has."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    serve.start(proxy_location="Disabled")


def _off_loop(function: Callable[[], T]) -> T:
    """Run a blocking Serve call; Serve refuses its sync calls inside an asyncio loop, and the HTTP
    server calls ``stats`` from one, so there it runs in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return function()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function).result()


def translate(error: BaseException) -> tuple[EngineError, bool]:
    """An exception from a Serve call as the engine error it stands for, and whether a retry may help
    (the replica was lost, not the request refused)."""
    from ray import exceptions as ray_errors
    from ray.serve import exceptions as serve_errors

    if isinstance(error, ray_errors.RayTaskError) and isinstance(error.cause, BaseException):
        error = error.cause
    if isinstance(error, EngineError):
        return error, False
    if isinstance(error, serve_errors.BackPressureError):
        return QueueFull(QUEUE_FULL_MESSAGE), False
    if isinstance(error, serve_errors.DeploymentUnavailableError):
        return NotDeployed(f"deployment is not running on Ray: {error}"), False
    lost = (ray_errors.RayActorError, ray_errors.ActorUnavailableError, serve_errors.ReplicaUnavailableError,
            ray_errors.NodeDiedError, ray_errors.ObjectLostError, ray_errors.WorkerCrashedError)
    if isinstance(error, lost):
        return InferenceFailed(f"Error in inference process: [replica lost: {type(error).__name__}]"), True
    return InferenceFailed(f"Error in inference process: [{type(error).__name__}: {error}]"), False


class RayDeployment:
    """A started model whose allocations are Serve replicas (see the module docstring).

    Create it with :func:`deploy`. ``infer``/``ainfer`` from any thread or task, ``update`` to resize
    it in place, ``stats`` for Elasticsearch's deployment stats with one ``nodes[]`` entry per replica,
    ``stop`` to delete the Serve application.
    """

    def __init__(self, *, package: LoadedPackage, app_name: str, package_arg: str,
                 plan: ray_options.RayPlan, settings: Mapping[str, Any]) -> None:
        self._package = package
        self.deployment_id = app_name
        self.model_id = package.path.name
        self._app_name = app_name
        self._package_arg = package_arg
        self._plan = plan
        self._settings = dict(settings)
        self._lock = threading.Lock()
        self._state = "starting"
        self._front = {"rejected_execution_count": 0, "timeout_count": 0, "error_count": 0}
        self._in_flight: set[Any] = set()
        self.start_time = int(time.time() * 1000)
        self._handle = self._run(plan)
        self._state = "started"

    # -- the Serve application -----------------------------------------------------------------

    def _version(self, plan: ray_options.RayPlan) -> str:
        """Serve restarts replicas when the deployment's version changes and resizes in place when it
        does not; ``serve.run`` would otherwise draw a random version on every call, so a resize would
        replace every replica. The version covers everything a replica is built from."""
        identity = {
            "files": self._package.manifest.files,
            "package": self._package_arg,
            "replica": plan.replica_config,
            "actor": plan.serve_options["ray_actor_options"],
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _run(self, plan: ray_options.RayPlan) -> Any:
        from ray import serve

        options = dict(plan.serve_options)
        actor_options = dict(options.pop("ray_actor_options"))
        if self._package_arg == SHIPPED:
            actor_options["runtime_env"] = {"working_dir": _ship(self._package.path)}
        deployment = serve.deployment(Allocation, name=SERVE_DEPLOYMENT_NAME, ray_actor_options=actor_options,
                                      **options)
        # Deployment.options(version=...) is Serve's internal (``_internal``) way to pin the version.
        deployment = deployment.options(version=self._version(plan), _internal=True)
        app = deployment.bind(self._package_arg, plan.replica_config, self.deployment_id)
        try:
            return _off_loop(lambda: serve.run(app, name=self._app_name, route_prefix=None))
        except EngineError:
            raise
        except Exception as error:
            raise ModelError(f"deployment [{self.deployment_id}] could not start on Ray: {error}") from error

    @property
    def package(self) -> LoadedPackage:
        return self._package

    @property
    def state(self) -> str:
        return self._state

    @property
    def config(self) -> Any:
        """The validated engine settings of the whole deployment (:class:`DeploymentConfig`)."""
        return self._plan.config

    @property
    def threads_per_allocation(self) -> int:
        return self._plan.config.threads_per_allocation

    def _replica_states(self) -> dict[str, int]:
        from ray import serve

        application = serve.status().applications.get(self._app_name)
        if application is None:
            return {}
        overview = application.deployments.get(SERVE_DEPLOYMENT_NAME)
        if overview is None:
            return {}
        return {str(getattr(state, "value", state)): count for state, count in overview.replica_states.items()}

    @property
    def number_of_allocations(self) -> int:
        """Replicas running now."""
        return _off_loop(lambda: self._replica_states().get("RUNNING", 0))

    # -- requests ------------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state == "stopping":
            raise DeploymentStopped(STOPPING_MESSAGE)
        if self._state == "stopped":
            raise NotDeployed(f"Trained model deployment [{self.deployment_id}] is not deployed")

    def _count(self, key: str) -> None:
        with self._lock:
            self._front[key] += 1

    def _timed_out(self, timeout: float) -> InferenceTimeout:
        self._count("timeout_count")
        return InferenceTimeout(f"timeout [{format_time_value(timeout)}] waiting for inference result")

    def _failed(self, error: BaseException) -> tuple[EngineError, bool]:
        if self._state in ("stopping", "stopped"):
            return DeploymentStopped(STOPPING_MESSAGE), False
        from ray.serve.exceptions import BackPressureError

        if isinstance(error, BackPressureError):  # refused by Serve's queue: no replica counted it
            self._count("rejected_execution_count")
        return translate(error)

    def _remaining(self, deadline: float | None, timeout: float | None) -> float | None:
        """Seconds left of the caller's timeout (None: no timeout); InferenceTimeout when none are."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise self._timed_out(timeout or 0.0)
        return remaining

    def _retry_or_raise(self, error: BaseException, attempt: int) -> None:
        """Return to send again (a lost replica, attempts left), else raise the engine error."""
        engine_error, retry = self._failed(error)
        if not retry or attempt == REPLICA_LOSS_RETRIES:
            if retry:
                self._count("error_count")
            raise engine_error from None
        log.warning("deployment [%s]: %s; sending the request again", self.deployment_id, engine_error)

    def _send(self, texts: list[str], remaining: float | None, priority: str, config: Mapping[str, Any]) -> Any:
        response = self._handle.infer.remote(texts, remaining, priority, dict(config))
        with self._lock:
            self._in_flight.add(response)
        return response

    def _done(self, response: Any) -> None:
        with self._lock:
            self._in_flight.discard(response)

    def infer(self, texts: str | Sequence[str], timeout: float | None = None, priority: str = "normal",
              **config: Any) -> list[dict[str, Any]]:
        """Run the task on texts on the cluster and wait (``Deployment.infer``'s contract and errors)."""
        texts = check_request(texts, timeout, priority)
        self._check_running()
        if not texts:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in range(REPLICA_LOSS_RETRIES + 1):
            remaining = self._remaining(deadline, timeout)
            response = self._send(texts, remaining, priority, config)
            try:
                return response.result(timeout_s=remaining)
            except TimeoutError:
                response.cancel()
                raise self._timed_out(timeout or 0.0) from None
            except Exception as error:
                self._retry_or_raise(error, attempt)
            finally:
                self._done(response)
        raise AssertionError("unreachable")

    async def ainfer(self, texts: str | Sequence[str], timeout: float | None = None, priority: str = "normal",
                     **config: Any) -> list[dict[str, Any]]:
        """``infer`` for asyncio; cancelling the awaiting task cancels the request on its replica."""
        texts = check_request(texts, timeout, priority)
        self._check_running()
        if not texts:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in range(REPLICA_LOSS_RETRIES + 1):
            remaining = self._remaining(deadline, timeout)
            response = self._send(texts, remaining, priority, config)
            try:
                return await asyncio.wait_for(_awaited(response), remaining)
            except asyncio.TimeoutError:
                response.cancel()
                raise self._timed_out(timeout or 0.0) from None
            except asyncio.CancelledError:
                response.cancel()
                raise
            except Exception as error:
                self._retry_or_raise(error, attempt)
            finally:
                self._done(response)
        raise AssertionError("unreachable")

    # -- control -------------------------------------------------------------------------------

    def update(self, number_of_allocations: int | None = None,
               adaptive_allocations: AdaptiveAllocations | Mapping[str, Any] | None = None) -> None:
        """Resize in place: a new replica count, or new adaptive settings (replicas are not restarted).

        Raises:
            InvalidInput: a bad count, or a count while adaptive allocations are (or become) enabled.
            NotDeployed / DeploymentStopped: the deployment is stopping or stopped.
        """
        self._check_running()
        if number_of_allocations is None and adaptive_allocations is None:
            return
        current = self._settings.get("adaptive_allocations")
        adaptive = adaptive_allocations if adaptive_allocations is not None else current
        if isinstance(adaptive, AdaptiveAllocations):
            adaptive = dict(adaptive.to_json(), **{key: getattr(adaptive, key) for key in (
                "evaluation_interval_s", "scale_up_cooldown_s", "scale_down_cooldown_s", "smoothing")})
        enabled = isinstance(adaptive, Mapping) and adaptive.get("enabled", True)
        if number_of_allocations is not None and enabled:
            raise InvalidInput("[number_of_allocations] cannot be set if adaptive allocations is enabled")
        if number_of_allocations is None and not enabled:
            number_of_allocations = self.number_of_allocations or 1
        settings = dict(self._settings, number_of_allocations=number_of_allocations if not enabled else None,
                        adaptive_allocations=adaptive)
        plan = ray_options.plan(**settings)
        self._run(plan)
        self._plan, self._settings = plan, settings

    def stats(self) -> dict[str, Any]:
        """Elasticsearch's deployment stats, totals over the replicas and ``nodes`` = one per replica."""
        from ray.serve import exceptions as serve_errors

        def collect() -> tuple[list[dict[str, Any]], dict[str, int]]:
            states = self._replica_states()
            if self._state != "started" or not states.get("RUNNING"):
                return [], states
            try:
                results = self._handle.broadcast("stats").results(timeout_s=CONTROL_TIMEOUT_S,
                                                                  return_exceptions=True)
            except (serve_errors.DeploymentUnavailableError, TimeoutError):
                return [], states
            return [item for item in results if isinstance(item, dict)], states

        replicas, states = _off_loop(collect)
        config = self._plan.config
        settings: dict[str, Any] = {
            "deployment_id": self.deployment_id,
            "model_id": self.model_id,
            "state": self._state,
            "start_time": self.start_time,
            "threads_per_allocation": config.threads_per_allocation,
            "queue_capacity": config.queue_capacity,
            "cache_size": self._cache_bytes(),
            "priority": config.priority,
            "thread_settings": {"num_threads_per_allocation": config.threads_per_allocation,
                                "num_allocations": len(replicas), "cores": None},
            "backend": "ray",
        }
        adaptive = self._settings.get("adaptive_allocations")
        if isinstance(adaptive, Mapping):
            settings["adaptive_allocations"] = {key: adaptive[key] for key in (
                "enabled", "min_number_of_allocations", "max_number_of_allocations") if key in adaptive}
        target = sum(states.get(state, 0) for state in _LIVE_REPLICA_STATES) if self._state == "started" else 0
        with self._lock:
            front = dict(self._front)
        return combine(replicas, front=front, settings=settings, target_replicas=target)

    def _cache_bytes(self) -> int:
        size = self._plan.config.cache_bytes
        return self._package.size_bytes if size is None else size

    def clear_cache(self) -> None:
        """Empty every replica's inference cache."""
        if self._state != "started":
            return
        _off_loop(lambda: self._handle.broadcast("clear_cache").results(timeout_s=CONTROL_TIMEOUT_S,
                                                                       return_exceptions=True))

    def stop(self, drain: bool = True) -> None:
        """Delete the Serve application. ``drain``: replicas finish what they hold (Serve's graceful
        shutdown); otherwise requests still in flight are cancelled and fail with DeploymentStopped."""
        from ray import serve

        with self._lock:
            if self._state in ("stopping", "stopped"):
                return
            self._state = "stopping"
            cancelled = [] if drain else list(self._in_flight)
        for response in cancelled:
            response.cancel()
        try:
            _off_loop(lambda: serve.delete(self._app_name))
        finally:
            self._state = "stopped"

    def __enter__(self) -> RayDeployment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _ship(path: Path) -> str:
    """Upload a package into the cluster's storage (GCS) once, content-addressed, and give its URI:
    Serve cannot upload a local directory for a deployment itself (only ``ray.init`` can for a job), so
    this does what ``ray.init(runtime_env={"working_dir": ...})`` does, through the same (internal)
    packaging functions. Every node then fetches and caches the package as the replicas' working
    directory. Ray keeps an upload while actors use it; a deployment scaled to zero for longer than
    ``RAY_RUNTIME_ENV_TEMPORARY_REFERENCE_EXPIRATION_S`` can lose it, so use a shared path there."""
    import tempfile

    from ray._private.runtime_env.packaging import get_uri_for_directory, upload_package_if_needed

    uri = get_uri_for_directory(str(path), include_gitignore=False)
    upload_package_if_needed(uri, tempfile.gettempdir(), str(path), include_gitignore=False)
    return uri


async def _awaited(response: Any) -> Any:
    return await response


def deploy(model: str | os.PathLike[str] | None, *, task: str | None = None, number_of_allocations: int | None = 1,
           threads_per_allocation: int = 1,
           adaptive_allocations: AdaptiveAllocations | Mapping[str, Any] | None = None,
           queue_capacity: int = 1024, priority: str = "normal", cache_size: int | str | None = None,
           address: str | None = None, name: str | None = None, deployment_id: str | None = None,
           ship_package: bool = False, **engine_settings: Any) -> RayDeployment:
    """Start a deployment on a Ray cluster: ``number_of_allocations`` Serve replicas of
    ``threads_per_allocation`` CPUs each (see :mod:`engine.ray.options` for the whole mapping).

    Args:
        model: a package directory, or a Hugging Face source / None with ``task`` (exported here first).
        task: the task to check the package against (or to export the source for).
        address: the Ray cluster (None: ``RAY_ADDRESS``, a local ``ray start`` cluster, or a new one).
        name: the Serve application name and deployment id (default: ``deployment_id``, else the
            package directory's name).
        ship_package: send the package to the replicas through Ray (the actors' working directory)
            instead of reading it from the same path on every node.
        **engine_settings: further engine settings for every replica's scheduler (``max_batch_tokens``,
            ``max_batch_rows``, ``grouping_window``, ``stats_period_s``, ``session_options``).

    Raises:
        InvalidInput: a setting Elasticsearch (or the engine) refuses.
        PackageError / ModelError: the package is not valid here, or the replicas could not start.
    """
    from ..api import _open_package, resolve_model
    from ..manifest import MANIFEST_NAME

    if model is not None and (Path(str(model)) / MANIFEST_NAME).is_file():
        path = Path(str(model)).resolve()
    else:
        if task is None:
            raise InvalidInput("deploy() needs task=... when model is not a model package directory")
        path = resolve_model(model, task).resolve()
    package = _open_package(path, task)
    settings = dict(number_of_allocations=number_of_allocations, threads_per_allocation=threads_per_allocation,
                    adaptive_allocations=adaptive_allocations, queue_capacity=queue_capacity, priority=priority,
                    cache_size=cache_size, model_bytes=package.size_bytes, **engine_settings)
    plan = ray_options.plan(**settings)
    connect(address)
    app_name = name or deployment_id or package.path.name
    return RayDeployment(package=package, app_name=app_name, package_arg=SHIPPED if ship_package else str(path),
                         plan=plan, settings=settings)
