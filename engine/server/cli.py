"""``engine serve``: parse options, build the server state, run uvicorn until SIGINT/SIGTERM.

Every option has an ``ENGINE_*`` environment variable; precedence is flag > environment > config file
> default. Also runnable as ``python -m engine.server.cli [options]``.

Shutdown is uvicorn's graceful one: on SIGTERM/SIGINT it stops accepting connections, lets open
requests finish (up to ``--shutdown-timeout``), then the app's lifespan drains and stops every
deployment before the process exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import EngineError, InvalidInput

if TYPE_CHECKING:
    from .settings import ServerConfig
    from .state import ServerState

# Fail at import when the server extra is missing, so `engine` lists `serve` as "install engine[server]"
# (engine/cli.py) without importing the web stack on every command.
for _module in ("starlette", "uvicorn", "prometheus_client"):
    if importlib.util.find_spec(_module) is None:
        raise ImportError(f"engine serve needs {_module}: pip install 'engine[server]'")

# option dest → its environment variable
ENVIRONMENT: dict[str, str] = {
    "config": "ENGINE_CONFIG",
    "host": "ENGINE_HOST",
    "port": "ENGINE_PORT",
    "api_key": "ENGINE_API_KEY",
    "models": "ENGINE_MODELS",
    "default_model": "ENGINE_DEFAULT_MODEL",
    "max_body_bytes": "ENGINE_MAX_BODY_BYTES",
    "max_docs_per_request": "ENGINE_MAX_DOCS_PER_REQUEST",
    "default_timeout_s": "ENGINE_DEFAULT_TIMEOUT",
    "threads_per_allocation": "ENGINE_THREADS_PER_ALLOCATION",
    "queue_capacity": "ENGINE_QUEUE_CAPACITY",
    "shutdown_timeout_s": "ENGINE_SHUTDOWN_TIMEOUT",
    "no_auto_truncate": "ENGINE_NO_AUTO_TRUNCATE",
    "no_registration": "ENGINE_NO_REGISTRATION",
    "model_roots": "ENGINE_MODEL_ROOTS",
    "no_access_log": "ENGINE_NO_ACCESS_LOG",
    "log_level": "ENGINE_LOG_LEVEL",
    "ray": "ENGINE_RAY",
    "ray_address": "ENGINE_RAY_ADDRESS",
}


def _env(dest: str) -> str | None:
    return os.environ.get(ENVIRONMENT[dest])


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``serve`` verb to the ``engine`` command (its handler starts the server)."""
    parser = subparsers.add_parser(
        "serve",
        help="serve models over HTTP: Elasticsearch trained-model and inference APIs, TEI and OpenAI routes",
        description="Serve model packages over HTTP as a drop-in for Elasticsearch's ML node "
        "(_ml/trained_models, _inference), Text Embeddings Inference (/embed, /rerank, ...) and OpenAI "
        "(/v1/embeddings). Flags override ENGINE_* variables, which override the config file.",
    )
    add_serve_arguments(parser)
    parser.set_defaults(handler=serve)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=_env("config"),
                        help="JSON file with server settings (keys: host, port, api_key, models, deployments, "
                        "default_model, max_body_bytes, ...); use it for settings shared by a fleet. "
                        "Env: ENGINE_CONFIG")
    parser.add_argument("--model", dest="models", action="append", default=None, metavar="ID=SOURCE[:TASK]",
                        help="register SOURCE as ID and start a deployment of it; repeat for several. SOURCE is "
                        "what `engine run --model` takes: a model package, or a Hugging Face folder or hub id "
                        "(exported and cached on first use, for TASK or the task detected from its config). "
                        "Without any --model the bundled all-MiniLM-L6-v2 is served as all-minilm-l6-v2 "
                        "(see `engine models`). Env: ENGINE_MODELS (comma-separated)")
    parser.add_argument("--host", default=None,
                        help="interface to bind (default 127.0.0.1); bind 0.0.0.0 only behind a firewall or "
                        "with --api-key. Env: ENGINE_HOST")
    parser.add_argument("--port", type=int, default=None,
                        help="TCP port (default 9200, Elasticsearch's; 0 picks a free one). Env: ENGINE_PORT")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: ApiKey KEY' or 'Bearer KEY' on every route but /health; "
                        "set it whenever the port is reachable by others. Env: ENGINE_API_KEY")
    parser.add_argument("--default-model", default=None,
                        help="model, deployment or inference id the TEI and OpenAI routes use when several "
                        "deployments run and the request names none. Env: ENGINE_DEFAULT_MODEL")
    parser.add_argument("--max-body-bytes", type=int, default=None,
                        help="larger request bodies get 413 (default 16 MiB); raise it for huge batches of "
                        "long documents. Env: ENGINE_MAX_BODY_BYTES")
    parser.add_argument("--max-docs-per-request", type=int, default=None,
                        help="more docs/inputs in one request get 400 (default 1024); lower it to bound the "
                        "latency one client can cause. Env: ENGINE_MAX_DOCS_PER_REQUEST")
    parser.add_argument("--default-timeout", dest="default_timeout_s", type=float, default=None,
                        help="seconds an _infer waits when the request has no timeout (default 10, as "
                        "Elasticsearch). Env: ENGINE_DEFAULT_TIMEOUT")
    parser.add_argument("--threads-per-allocation", type=int, default=None,
                        help="threads of deployments started at boot and by _start without the parameter "
                        "(default 1, as Elasticsearch; a power of 2). Env: ENGINE_THREADS_PER_ALLOCATION")
    parser.add_argument("--queue-capacity", type=int, default=None,
                        help="queue size of deployments started without the parameter (default 10000); "
                        "lower it to shed load with 429 sooner. Env: ENGINE_QUEUE_CAPACITY")
    parser.add_argument("--shutdown-timeout", dest="shutdown_timeout_s", type=float, default=None,
                        help="seconds to let open requests and queued work finish on SIGTERM (default 30). "
                        "Env: ENGINE_SHUTDOWN_TIMEOUT")
    parser.add_argument("--no-auto-truncate", action="store_true", default=None,
                        help="TEI routes reject inputs over the model's length unless the request says "
                        "truncate: true (TEI's default) instead of truncating. Env: ENGINE_NO_AUTO_TRUNCATE=1")
    parser.add_argument("--no-registration", action="store_true", default=None,
                        help="refuse PUT _ml/trained_models (models only from flags/config). "
                        "Env: ENGINE_NO_REGISTRATION=1")
    parser.add_argument("--model-root", dest="model_roots", action="append", default=None,
                        help="PUT _ml/trained_models locations must lie under this directory; repeatable. "
                        "Env: ENGINE_MODEL_ROOTS (os.pathsep-separated)")
    parser.add_argument("--no-access-log", action="store_true", default=None,
                        help="do not write one JSON line per request on stderr. Env: ENGINE_NO_ACCESS_LOG=1")
    parser.add_argument("--ray", action="store_true", default=_flag(_env("ray")) or False,
                        help="run every deployment on a Ray cluster as a Ray Serve application (one replica "
                        "per allocation; needs engine[ray]); this process stays the HTTP front end. "
                        "Env: ENGINE_RAY=1")
    parser.add_argument("--ray-address", default=_env("ray_address"),
                        help="the Ray cluster for --ray (HOST:PORT of the head, or auto); default: RAY_ADDRESS, "
                        "a local `ray start` cluster, or a new local one. Env: ENGINE_RAY_ADDRESS")
    parser.add_argument("--log-level", default=_env("log_level") or "info",
                        choices=("debug", "info", "warning", "error"),
                        help="server log level (default info). Env: ENGINE_LOG_LEVEL")


def _flag(value: str | None) -> bool | None:
    return None if value is None else value.strip().lower() not in ("", "0", "false", "no")


def _pairs(items: Sequence[str]) -> dict[str, str]:
    models: dict[str, str] = {}
    for item in items:
        model_id, sep, location = item.partition("=")
        if not sep or not model_id or not location:
            raise InvalidInput(f"--model takes ID=SOURCE[:TASK]; got [{item}]")
        models[model_id.strip()] = location.strip()
    return models


def build_config(args: argparse.Namespace) -> ServerConfig:
    """Merge config file, ENGINE_* variables and flags into a :class:`ServerConfig`."""
    from .settings import ServerConfig

    settings: dict[str, Any] = {}
    if args.config:
        settings.update(dataclasses.asdict(ServerConfig.from_file(args.config)))
    converters: dict[str, Any] = {
        "host": str, "port": int, "api_key": str, "default_model": str, "max_body_bytes": int,
        "max_docs_per_request": int, "default_timeout_s": float, "threads_per_allocation": int,
        "queue_capacity": int, "shutdown_timeout_s": float,
    }
    for dest, convert in converters.items():
        value = getattr(args, dest)
        if value is None and _env(dest) is not None:
            try:
                value = convert(_env(dest))
            except ValueError as error:
                raise InvalidInput(f"{ENVIRONMENT[dest]}: {error}") from error
        if value is not None:
            settings[dest] = value
    models = args.models or ([item for item in (_env("models") or "").split(",") if item.strip()])
    if models:
        settings["models"] = {**settings.get("models", {}), **_pairs(models)}
    roots = args.model_roots or [item for item in (_env("model_roots") or "").split(os.pathsep) if item]
    if roots:
        settings["model_roots"] = roots
    for dest, field, inverted in (("no_auto_truncate", "auto_truncate", True),
                                  ("no_registration", "allow_registration", True),
                                  ("no_access_log", "access_log", True)):
        value = getattr(args, dest) or _flag(_env(dest))
        if value is not None and value:
            settings[field] = not inverted
    return ServerConfig.from_mapping(settings)


def configure_logging(level: str, access_log: bool) -> None:
    """Server logs and the JSON access lines go to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("engine.access")
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.INFO if access_log else logging.WARNING)
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def build_state(config: ServerConfig, args: argparse.Namespace) -> ServerState:
    """The registries the server runs on. The one place a deployment backend is chosen: the state
    starts deployments with ``engine.api.load`` (threads on this machine); another backend passes its
    own ``deploy`` function returning a :class:`engine.protocol.DeploymentLike`."""
    from .state import ServerState

    if not getattr(args, "ray", False):
        return ServerState(config)
    from ..ray import connect, deploy

    address = args.ray_address or None
    connect(address)
    return ServerState(config, deploy=lambda path, task, **settings: deploy(path, task=task, address=address,
                                                                            **settings))


def serve(args: argparse.Namespace) -> int:
    """Start the server and block until it is told to stop. Returns the process exit code."""
    import uvicorn

    from .app import create_app
    from .es_schemas import parse_start_params

    config = build_config(args)
    configure_logging(args.log_level, config.access_log)
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logging.getLogger(__name__).warning(
            "serving on %s without --api-key: anyone who can reach the port can run and manage models", config.host)
    state = build_state(config, args)
    try:
        state.boot(lambda model_id, settings: parse_start_params(
            model_id, settings, config.threads_per_allocation, config.queue_capacity))
    except EngineError:
        state.shutdown(drain=False)
        raise
    app = create_app(state)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_level=args.log_level, access_log=False,
        timeout_graceful_shutdown=max(1, int(config.shutdown_timeout_s)), lifespan="on",
    ))
    server.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m engine.server.cli``: the ``serve`` verb on its own."""
    parser = argparse.ArgumentParser(prog="engine serve", description=__doc__.splitlines()[0])
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve(args)
    except EngineError as error:
        print(f"engine serve: {error.message}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
