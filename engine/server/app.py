"""``engine serve``'s application: the Starlette app, its middleware, the error table, the routes of
the three dialects wired together.

Three API families over the same deployments, one module each: :mod:`.elasticsearch` (``GET /``,
``_ml/trained_models``, ``_inference``), :mod:`.tei` (Text Embeddings Inference and the Hugging Face
Inference API) and :mod:`.openai` (``/v1/embeddings``, ``/v1/models``); plus ``GET /metrics``
(Prometheus). Every response carries ``X-Elastic-Product: Elasticsearch`` so the official
Elasticsearch clients accept the server; errors are rendered in the route's dialect with the status
the error class carries (:data:`STATUS_TABLE`).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import EngineError, InferenceFailed, MethodNotAllowed, NoHandler, PayloadTooLarge, Unauthorized
from ..metrics import ServerMetrics
from . import elasticsearch, openai, tei
from .openapi import build_openapi
from .state import ServerState
from .wire import JSON, Handler

access_log = logging.getLogger("engine.access")
log = logging.getLogger(__name__)


# The one table from HTTP status (engine.errors classes carry it as ``.status``) to the error
# ``type`` the two non-Elasticsearch dialects use. TEI's ErrorType values; OpenAI's error types.
STATUS_TABLE: dict[int, tuple[str, str]] = {
    400: ("Validation", "invalid_request_error"),
    401: ("Unauthorized", "authentication_error"),
    404: ("Validation", "not_found_error"),
    405: ("Validation", "invalid_request_error"),
    408: ("Backend", "timeout_error"),
    409: ("Backend", "conflict_error"),
    413: ("Validation", "invalid_request_error"),
    429: ("Overloaded", "rate_limit_error"),
    500: ("Backend", "server_error"),
    503: ("Unhealthy", "server_error"),
}


def error_body(dialect: str, error: EngineError) -> dict[str, Any]:
    """The JSON error body of ``error`` in the route's dialect (``es``, ``tei`` or ``openai``)."""
    tei_type, openai_type = STATUS_TABLE.get(error.status, ("Backend", "server_error"))
    if dialect == "tei":
        return {"error": error.message, "error_type": tei_type}
    if dialect == "openai":
        return {"error": {"message": error.message, "type": openai_type, "param": None, "code": error.status}}
    cause = {"type": error.error_type, "reason": error.message}
    return {"error": {"root_cause": [cause], **cause}, "status": error.status}


def dialect_for(path: str) -> str:
    """Which error format a path answers in: Elasticsearch, OpenAI, or TEI for everything else."""
    if path.startswith("/_") or path == "/":
        return "es"
    if path.startswith(("/v1/", "/embeddings")):
        return "openai"
    return "tei"


def error_response(path: str, error: EngineError) -> JSON:
    headers = {"WWW-Authenticate": 'ApiKey, Bearer realm="engine"'} if error.status == 401 else None
    return JSON(error_body(dialect_for(path), error), status_code=error.status, headers=headers)


class Gate:
    """ASGI middleware around every request: API key, body-size precheck, product header, access log
    and the per-route request counter. Pure ASGI so it sees every response, errors included."""

    def __init__(self, app: ASGIApp, state: ServerState, metrics: ServerMetrics) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        status_holder = {"status": 500}

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-elastic-product", b"Elasticsearch"))
                message = {**message, "headers": headers}
            await send(message)

        refusal = self._refuse(scope)
        if refusal is not None:
            await error_response(path, refusal)(scope, receive, send_with_header)
        else:
            await self.app(scope, receive, send_with_header)
        status = status_holder["status"]
        route = scope.get("engine.route", "unmatched")
        self.metrics.record_request(route, scope.get("method", ""), status)
        if self.state.config.access_log:
            client = scope.get("client")
            access_log.info(json.dumps({
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
                "method": scope.get("method"), "path": path, "route": route, "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "client": f"{client[0]}:{client[1]}" if client else None,
                "deployment": scope.get("engine.deployment"), "docs": scope.get("engine.docs"),
            }, separators=(",", ":")))

    def _refuse(self, scope: Scope) -> EngineError | None:
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        key = self.state.config.api_key
        if key and scope.get("path") != "/health" and not api_key_matches(headers.get("authorization", ""), key):
            return Unauthorized(f"missing authentication credentials for REST request [{scope.get('path')}]")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.state.config.max_body_bytes:
            return PayloadTooLarge(
                f"request body of [{length}] bytes is over the limit of [{self.state.config.max_body_bytes}] bytes"
            )
        return None


def api_key_matches(header: str, key: str) -> bool:
    """``ApiKey <key>``, ``ApiKey base64(id:key)`` (as Elasticsearch issues keys) or ``Bearer <key>``."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in ("apikey", "bearer") or not token:
        return False
    if hmac.compare_digest(token.encode(), key.encode()):
        return True
    if scheme.lower() == "apikey":
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except ValueError:
            return False
        _, _, secret = decoded.partition(":")
        return bool(secret) and hmac.compare_digest(secret.encode(), key.encode())
    return False


def endpoint(path: str, methods: list[str], handler: Handler) -> Route:
    """A route whose handler returns JSON-able data or a Response; EngineErrors become dialect errors."""

    async def run(request: Request) -> Response:
        request.scope["engine.route"] = path
        try:
            result = await handler(request)
        except EngineError as error:
            return error_response(request.url.path, error)
        except Exception as error:  # a bug must still answer in the API's format, and be logged
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return error_response(request.url.path, InferenceFailed(f"internal server error: {error}"))
        if isinstance(result, Response):
            return result
        return JSON(result)

    return Route(path, run, methods=methods)


async def metrics_route(request: Request) -> Any:
    metrics: ServerMetrics = request.app.state.metrics
    body, content_type = metrics.render(request.headers.get("accept", ""))
    return Response(body, headers={"content-type": content_type})


async def openapi_route(request: Request) -> Any:
    return build_openapi(ROUTES)


ROUTES: tuple[tuple[str, list[str], Handler], ...] = (
    *elasticsearch.ROUTES,
    *tei.ROUTES,
    *openai.ROUTES,
    ("/metrics", ["GET"], metrics_route),
    ("/openapi.json", ["GET"], openapi_route),
)


# Starlette tries routes in order, a regex match each: the per-query inference paths go first. Each
# matches only paths no other route matches (its literal segments differ), so the order changes no answer.
HOT_PATHS = ("/embed", "/v1/embeddings", "/_ml/trained_models/{model_id}/_infer", "/_inference/{first}/{second}")


def _group_routes() -> list[Route]:
    """One Starlette route per path, dispatching on the method, so a method not served on a known path
    reaches our own "no handler" error rather than Starlette's plain-text 405. The :data:`HOT_PATHS`
    first, then the others in :data:`ROUTES` order."""
    by_path: dict[str, dict[str, Handler]] = {}
    for path, methods, handler in ROUTES:
        for method in methods:
            by_path.setdefault(path, {})[method] = handler
    routes = []
    for path, handlers in sorted(by_path.items(), key=lambda item: item[0] not in HOT_PATHS):
        routes.append(endpoint(path, sorted({*handlers, "GET", "POST", "PUT", "DELETE", "HEAD"}),
                               _by_method(path, handlers)))
    return routes


def _by_method(path: str, handlers: Mapping[str, Handler]) -> Handler:
    async def dispatch(request: Request) -> Any:
        handler = handlers.get(request.method)
        if handler is None:
            raise MethodNotAllowed(f"Incorrect HTTP method for uri [{request.url.path}] and method [{request.method}], "
                            f"allowed: [{', '.join(sorted(handlers))}]")
        return await handler(request)

    return dispatch


async def not_found(request: Request, exc: Exception) -> Response:
    return error_response(request.url.path, NoHandler(
        f"no handler found for uri [{request.url.path}] and method [{request.method}]"))


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """A method no route lists at all (PATCH, OPTIONS, ...): Starlette's 405, in the route's dialect."""
    return error_response(request.url.path, MethodNotAllowed(
        f"Incorrect HTTP method for uri [{request.url.path}] and method [{request.method}]"))


def create_app(state: ServerState) -> Starlette:
    """The ASGI application serving ``state``'s deployments. Stopping the app (uvicorn's graceful
    shutdown, after it stopped accepting and finished open requests) drains and stops them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(_shutdown, state)

    app = Starlette(routes=_group_routes(), lifespan=lifespan, exception_handlers={404: not_found, 405: method_not_allowed})
    metrics = ServerMetrics(lambda: [(entry.deployment_id, entry.deployment) for entry in state.deployments()])
    app.state.engine = state
    app.state.metrics = metrics
    app.add_middleware(Gate, state=state, metrics=metrics)
    return app


def _shutdown(state: ServerState) -> None:
    """Drain and stop the deployments, waiting at most ``shutdown_timeout_s``; requests still queued
    after that fail with their own timeouts or die with the process."""
    worker = threading.Thread(target=state.shutdown, kwargs={"drain": True}, name="engine-drain", daemon=True)
    worker.start()
    worker.join(state.config.shutdown_timeout_s)
    if worker.is_alive():
        log.warning("deployments did not drain in %ss; exiting anyway", state.config.shutdown_timeout_s)
    else:
        log.info("deployments drained and stopped")
