"""``engine serve``: the HTTP routes, on Starlette.

Three API families over the same deployments (see docs of each handler group below):

* Elasticsearch: ``GET /``, ``_ml/trained_models`` (get, put, delete, stats, deployment start/stop/
  update/cache clear, ``_infer``) and ``_inference`` (put/get/delete/perform for text_embedding,
  sparse_embedding and rerank with the ``elasticsearch`` service);
* Text Embeddings Inference: ``/embed``, ``/embed_sparse``, ``/rerank``, ``/predict``,
  ``/similarity``, ``/tokenize``, ``/info``, ``/health``, and ``POST /`` as the Hugging Face
  Inference API posts to a model URL;
* OpenAI: ``POST /v1/embeddings`` (also ``/embeddings``) and ``GET /v1/models``;

plus ``GET /metrics`` (Prometheus). Every response carries ``X-Elastic-Product: Elasticsearch`` so the
official Elasticsearch clients accept the server; errors are rendered in the route's dialect with the
status the error class carries (:data:`engine.server_schemas.STATUS_TABLE`).

Models are model packages (``engine export``). Register one with ``--model ID=DIR``, the config file's
``models``, or ``PUT _ml/trained_models/<id>`` with ``{"location": "DIR"}`` (``metadata.location`` is
read too, for clients that send only Elasticsearch's fields; ``--model-root`` restricts where). Models
from flags and config are started at boot; registered ones need ``_start``. TEI and OpenAI routes use
the deployment named by ``model`` in the body (or ``/models/<id>``), else ``--default-model``, else the
only started deployment of a suitable task. Unlike TEI, inputs over the model's length are truncated
unless the request says ``truncate: false`` (``--no-auto-truncate`` restores TEI's default), because
Elasticsearch truncates and its ``hugging_face`` service sends no flag. ``/embed_sparse?format=tokens``
answers ``{token: weight}`` per input, the form Elasticsearch's ``hugging_face`` sparse service reads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .errors import EngineError, InferenceFailed, InferenceTimeout, InvalidInput, ModelError, QueueFull
from .metrics import ServerMetrics
from .server_schemas import (
    INFERENCE_TASK_TYPES,
    MethodNotAllowed,
    NoHandler,
    PayloadTooLarge,
    Unauthorized,
    build_assignment,
    build_es_info,
    build_inference_response,
    build_model_config,
    build_model_stats,
    build_openai_embeddings,
    build_tei_info,
    check_registration_task,
    check_task_type,
    error_body,
    normalized,
    parse_bool,
    parse_endpoint_body,
    parse_infer_body,
    parse_inference_request,
    parse_int,
    parse_json,
    parse_openai_embeddings,
    parse_predict_inputs,
    parse_registration,
    parse_start_params,
    parse_tei_inputs,
    parse_time_value,
    positive_or_none,
    rank,
    require_object,
    results_value,
    sigmoid,
    tei_body,
    tei_tokenization,
)
from .server_state import DeploymentEntry, ServerState

access_log = logging.getLogger("engine.access")
log = logging.getLogger(__name__)

# Query parameters every Elasticsearch API accepts; the clients may send them, we ignore them.
ES_COMMON_PARAMS = frozenset({"error_trace", "filter_path", "human", "pretty"})
Handler = Callable[[Request], Awaitable[Any]]


def dialect_for(path: str) -> str:
    """Which error format a path answers in: Elasticsearch, OpenAI, or TEI for everything else."""
    if path.startswith("/_") or path == "/":
        return "es"
    if path.startswith(("/v1/", "/embeddings")):
        return "openai"
    return "tei"


def error_response(path: str, error: EngineError) -> JSONResponse:
    headers = {"WWW-Authenticate": 'ApiKey, Bearer realm="engine"'} if error.status == 401 else None
    return JSONResponse(error_body(dialect_for(path), error), status_code=error.status, headers=headers)


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
        self.metrics.requests.inc(route, scope.get("method", ""), str(status))
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


async def read_body(request: Request, required: bool = True) -> Any:
    """The request's JSON, counting bytes as they arrive so a chunked body cannot pass the limit."""
    limit = request.app.state.engine.config.max_body_bytes
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of [{limit}] bytes")
        chunks.append(chunk)
    return parse_json(b"".join(chunks), required=required)


def query_params(request: Request, allowed: Sequence[str]) -> dict[str, str]:
    """Query parameters, refusing unknown ones as Elasticsearch does."""
    params = {key: value for key, value in request.query_params.items() if key not in ES_COMMON_PARAMS}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidInput(
            f"request [{request.url.path}] contains unrecognized parameter{'s' if len(unknown) > 1 else ''}: "
            f"[{', '.join(unknown)}]"
        )
    return params


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
        return JSONResponse(result)

    return Route(path, run, methods=methods)


async def infer(request: Request, entry: DeploymentEntry, texts: list[str], timeout: float | None,
                priority: str = "normal", **config: Any) -> list[dict[str, Any]]:
    """Run texts on a deployment, recording the outcome, document count and latency metrics."""
    metrics: ServerMetrics = request.app.state.metrics
    request.scope["engine.deployment"] = entry.deployment_id
    request.scope["engine.docs"] = len(texts)
    metrics.documents.inc(entry.deployment_id, amount=len(texts))
    started = time.perf_counter()
    outcome = "error"
    try:
        results = await entry.deployment.ainfer(texts, timeout=timeout, priority=priority, **config)
        outcome = "ok"
        return results
    except QueueFull:
        outcome = "rejected"
        raise
    except InferenceTimeout:
        outcome = "timeout"
        raise
    finally:
        metrics.inferences.inc(entry.deployment_id, outcome)
        metrics.latency.observe(time.perf_counter() - started, entry.deployment_id)


def engine_state(request: Request) -> ServerState:
    return request.app.state.engine


# ------------------------------------------------------------------------------ Elasticsearch
async def es_info(request: Request) -> Any:
    if request.method == "HEAD":
        return Response(status_code=200)
    return build_es_info("engine", "engine-node")


async def get_models(request: Request) -> Any:
    params = query_params(request, ("allow_no_match", "from", "size", "tags", "include",
                                    "decompress_definition", "exclude_generated", "include_model_definition"))
    state = engine_state(request)
    allow = parse_bool(params.get("allow_no_match", "true"), "allow_no_match")
    models = state.find_models(request.path_params.get("model_id"), allow)
    if "tags" in params:
        wanted = {tag for tag in params["tags"].split(",") if tag}
        models = [entry for entry in models if wanted <= set(entry.tags)]
    start = parse_int(params.get("from", 0), "from")
    size = parse_int(params.get("size", 100), "size")
    chosen = models[start:start + size]
    return {"count": len(models), "trained_model_configs": [build_model_config(entry) for entry in chosen]}


async def put_model(request: Request) -> Any:
    query_params(request, ("defer_definition_decompression", "wait_for_completion"))
    state = engine_state(request)
    if not state.config.allow_registration:
        raise InvalidInput("model registration over HTTP is disabled on this server (allow_registration)")
    model_id = request.path_params["model_id"]
    spec = parse_registration(model_id, await read_body(request))
    entry = await run_in_threadpool(
        state.register_model, model_id, spec["location"], description=spec["description"], tags=spec["tags"],
        metadata=spec["metadata"], prefix_strings=spec["prefix_strings"], check_roots=True)
    try:
        check_registration_task(entry, spec["inference_config"])
    except EngineError:
        state.delete_model(model_id, force=True)
        raise
    return build_model_config(entry)


async def delete_model(request: Request) -> Any:
    params = query_params(request, ("force", "timeout"))
    state = engine_state(request)
    force = parse_bool(params.get("force", "false"), "force")
    await run_in_threadpool(state.delete_model, request.path_params["model_id"], force)
    return {"acknowledged": True}


async def get_stats(request: Request) -> Any:
    params = query_params(request, ("allow_no_match", "from", "size"))
    state = engine_state(request)
    allow = parse_bool(params.get("allow_no_match", "true"), "allow_no_match")
    expression = request.path_params.get("model_id")
    models = state.find_models(expression, allow) if expression else state.find_models(None)
    items: list[dict[str, Any]] = []
    for entry in models:
        items.extend(build_model_stats(entry, state.deployments(entry.model_id)))
    if expression and not models:
        deployments = [item for item in state.deployments() if item.deployment_id == expression]
        for item in deployments:
            items.extend(build_model_stats(item.model, [item]))
    start = parse_int(params.get("from", 0), "from")
    size = parse_int(params.get("size", 100), "size")
    return {"count": len(items), "trained_model_stats": items[start:start + size]}


async def start_deployment(request: Request) -> Any:
    params: dict[str, Any] = query_params(request, sorted({
        "deployment_id", "number_of_allocations", "model_threads", "threads_per_allocation", "inference_threads",
        "queue_capacity", "cache_size", "priority", "timeout", "wait_for"}))
    body = await read_body(request, required=False)
    if body is not None:
        body = require_object(body)
        unknown = sorted(set(body) - {"adaptive_allocations"})
        if unknown:
            raise InvalidInput(f"[_start] unknown body field {unknown}; only [adaptive_allocations] goes in the body")
        params.update(body)
    state = engine_state(request)
    model_id = request.path_params["model_id"]
    state.get_model(model_id)
    start = parse_start_params(model_id, params, state.config.threads_per_allocation, state.config.queue_capacity)
    entry = await run_in_threadpool(state.start_deployment, model_id, start)
    return build_assignment(entry)


async def stop_deployment(request: Request) -> Any:
    params = query_params(request, ("allow_no_match", "force", "id"))
    state = engine_state(request)
    body = await read_body(request, required=False)
    if body is not None:
        params.update({key: str(value).lower() for key, value in require_object(body).items()})
    force = parse_bool(params.get("force", "false"), "force")
    allow = parse_bool(params.get("allow_no_match", "true"), "allow_no_match")
    await run_in_threadpool(state.stop_deployment, request.path_params["model_id"], force=force,
                            allow_no_match=allow)
    return {"stopped": True}


async def update_deployment(request: Request) -> Any:
    params: dict[str, Any] = query_params(request, ("number_of_allocations",))
    body = await read_body(request, required=False)
    if body is not None:
        body = require_object(body)
        unknown = sorted(set(body) - {"number_of_allocations", "adaptive_allocations"})
        if unknown:
            raise InvalidInput(f"[_update] unknown field {unknown}")
        params.update(body)
    if "number_of_allocations" not in params and "adaptive_allocations" not in params:
        raise InvalidInput("[_update] needs [number_of_allocations] or [adaptive_allocations]")
    entry = engine_state(request).get_deployment(request.path_params["model_id"])
    allocations = params.get("number_of_allocations")
    if allocations is not None:
        allocations = parse_int(allocations, "number_of_allocations")
        if allocations < 1:
            raise InvalidInput("[number_of_allocations] must be a positive integer")
    adaptive = params.get("adaptive_allocations")
    if adaptive is not None:
        adaptive = require_object(adaptive, "[adaptive_allocations]")
    await run_in_threadpool(entry.deployment.update, number_of_allocations=allocations,
                            adaptive_allocations=adaptive)
    return build_assignment(entry)


async def clear_cache(request: Request) -> Any:
    query_params(request, ())
    entry = engine_state(request).resolve(request.path_params["model_id"])
    entry.deployment.clear_cache()
    return {"cleared": True}


async def infer_model(request: Request) -> Any:
    params = query_params(request, ("timeout",))
    state = engine_state(request)
    entry = state.resolve(request.path_params["model_id"])
    texts, config = parse_infer_body(await read_body(request), state.config.max_docs_per_request)
    timeout = (parse_time_value(params["timeout"], "timeout") if "timeout" in params
               else state.config.default_timeout_s)
    results = await infer(request, entry, texts, timeout, **(config or {}))
    return {"inference_results": results}


async def infer_model_legacy(request: Request) -> Any:
    """The deprecated ``deployment/_infer`` (8.1): one doc, one unwrapped result."""
    answer = await infer_model(request)
    return answer["inference_results"][0]


# ---------------------------------------------------------------------------- _inference API
def _inference_path(request: Request) -> tuple[str | None, str | None]:
    """(task_type, inference_id) from ``/_inference[/<task>][/<id>]``; a lone segment that is a task
    type names the task, anything else names an endpoint."""
    first = request.path_params.get("first")
    second = request.path_params.get("second")
    if second is not None:
        return first, second
    if first in INFERENCE_TASK_TYPES:
        return first, None
    return None, first if first not in (None, "_all", "*") else None


async def put_inference(request: Request) -> Any:
    query_params(request, ("timeout",))
    task_type, inference_id = _inference_path(request)
    if task_type is None or inference_id is None:
        raise InvalidInput("creating an inference endpoint needs the path _inference/<task_type>/<inference_id>")
    check_task_type(task_type)
    state = engine_state(request)
    settings, task_settings, start, chunking = parse_endpoint_body(
        task_type, inference_id, await read_body(request), state.config.threads_per_allocation,
        state.config.queue_capacity)
    endpoint_entry = await run_in_threadpool(state.put_endpoint, task_type, inference_id, settings, task_settings,
                                             start, chunking)
    return endpoint_entry.to_json()


async def get_inference(request: Request) -> Any:
    query_params(request, ())
    task_type, inference_id = _inference_path(request)
    found = engine_state(request).find_endpoints(task_type, inference_id)
    return {"endpoints": [item.to_json() for item in found]}


async def delete_inference(request: Request) -> Any:
    query_params(request, ("dry_run", "force"))
    task_type, inference_id = _inference_path(request)
    if inference_id is None:
        raise InvalidInput("deleting an inference endpoint needs its id")
    await run_in_threadpool(engine_state(request).delete_endpoint, task_type, inference_id)
    return {"acknowledged": True}


async def perform_inference(request: Request) -> Any:
    params = query_params(request, ("timeout",))
    task_type, inference_id = _inference_path(request)
    if inference_id is None:
        raise InvalidInput("performing inference needs the path _inference/<task_type>/<inference_id>")
    state = engine_state(request)
    endpoint_entry = state.get_endpoint(task_type, inference_id)
    task_type = endpoint_entry.task_type
    body = require_object(await read_body(request))
    parsed = parse_inference_request(task_type, body, state.config.max_docs_per_request,
                                     endpoint_entry.task_settings)
    entry = state.get_deployment(endpoint_entry.deployment_id)
    timeout_value = params.get("timeout", body.get("timeout"))
    timeout = (parse_time_value(timeout_value, "timeout") if timeout_value is not None
               else state.config.default_timeout_s)
    input_type = str(body.get("input_type", "")).lower()
    prefix = entry.model.prefix_strings.get("search" if input_type == "search" else "ingest", "") \
        if input_type in ("search", "ingest") else ""
    texts = [prefix + text for text in parsed["inputs"]]
    # Elasticsearch serves search-time inference ahead of ingest (ELASTIC_REFERENCE.md §6.4).
    priority = "high" if input_type == "search" else "normal"
    if task_type == "rerank":
        results = await infer(request, entry, texts, timeout, priority, text=parsed["query"])
    else:
        results = await infer(request, entry, texts, timeout, priority)
    return build_inference_response(task_type, results, parsed)


# ------------------------------------------------------------------------------------ TEI
async def tei_embed(request: Request) -> Any:
    state = engine_state(request)
    body = tei_body(await read_body(request))
    entry = state.default_deployment(body.get("model"), ("text_embedding",))
    return await _embed(request, state, entry, body)


async def _embed(request: Request, state: ServerState, entry: DeploymentEntry, body: Mapping[str, Any]) -> Any:
    texts, _ = parse_tei_inputs(body.get("inputs"), state.config.max_docs_per_request)
    normalize = parse_bool(body.get("normalize", True), "normalize")
    dimensions = body.get("dimensions")
    size = entry.model.manifest.embedding_size
    if dimensions is not None and parse_int(dimensions, "dimensions") != size:
        raise InvalidInput(f"[dimensions] must be the model's embedding size [{size}]; got [{dimensions}]")
    results = await infer(request, entry, texts, None, **tei_tokenization(body, state.config.auto_truncate))
    vectors = [[float(x) for x in results_value(result)] for result in results]
    return [normalized(vector) if normalize else vector for vector in vectors]


async def tei_embed_sparse(request: Request) -> Any:
    state = engine_state(request)
    body = tei_body(await read_body(request))
    entry = state.default_deployment(body.get("model"), ("text_expansion",))
    return await _embed_sparse(request, state, entry, body)


async def _embed_sparse(request: Request, state: ServerState, entry: DeploymentEntry,
                        body: Mapping[str, Any]) -> Any:
    texts, _ = parse_tei_inputs(body.get("inputs"), state.config.max_docs_per_request)
    results = await infer(request, entry, texts, None, **tei_tokenization(body, state.config.auto_truncate))
    weights = [results_value(result) for result in results]
    # ?format=tokens answers {token: weight} per input: what Elasticsearch's hugging_face_elser service reads.
    if request.query_params.get("format") == "tokens":
        return [{token: float(weight) for token, weight in item.items()} for item in weights]
    ids = await run_in_threadpool(entry.sparse_keys)  # first call walks the vocabulary
    return [[{"index": ids[token], "value": float(weight)} for token, weight in item.items() if token in ids]
            for item in weights]


async def tei_rerank(request: Request) -> Any:
    state = engine_state(request)
    body = tei_body(await read_body(request))
    entry = state.default_deployment(body.get("model"), ("text_similarity",))
    query = body.get("query")
    if not isinstance(query, str) or not query:
        raise InvalidInput("[query] must be a non-empty string")
    texts, _ = parse_tei_inputs(body.get("texts"), state.config.max_docs_per_request, name="texts")
    raw_scores = parse_bool(body.get("raw_scores", False), "raw_scores")
    return_text = parse_bool(body.get("return_text", body.get("return_documents", False)), "return_text")
    top_n = positive_or_none(body.get("top_n"), "top_n")
    results = await infer(request, entry, texts, None, text=query,
                          **tei_tokenization(body, state.config.auto_truncate))
    return rank(results, texts, top_n, return_text, score_key="score", text_key="text",
                transform=None if raw_scores else sigmoid)


async def tei_predict(request: Request) -> Any:
    state = engine_state(request)
    body = tei_body(await read_body(request))
    entry = state.default_deployment(body.get("model"), ("text_classification", "text_similarity"))
    return await _predict(request, state, entry, body)


async def _predict(request: Request, state: ServerState, entry: DeploymentEntry, body: Mapping[str, Any],
                   wrap_single: bool = False) -> Any:
    """TEI ``/predict``; ``wrap_single`` answers a single input as ``[[...]]`` like the Hugging Face
    Inference API does. ``top_k`` (an Inference API parameter) keeps the best k labels."""
    items, single = parse_predict_inputs(body.get("inputs"), state.config.max_docs_per_request)
    raw_scores = parse_bool(body.get("raw_scores", False), "raw_scores")
    if body.get("function_to_apply") not in (None, "softmax"):
        raise InvalidInput("[function_to_apply] can only be [softmax]: results carry softmax probabilities")
    top_k = positive_or_none(body.get("top_k"), "top_k")
    tokenization = tei_tokenization(body, state.config.auto_truncate)
    manifest = entry.model.manifest
    answers: list[list[dict[str, Any]]] = []
    if manifest.task == "text_similarity":
        if any(len(item) != 2 for item in items):
            raise InvalidInput("a cross-encoder predicts on pairs: send [query, text] items")
        results = await asyncio.gather(*(
            infer(request, entry, [second], None, text=first, **tokenization) for first, second in items))
        for result in results:
            score = float(results_value(result[0]))
            answers.append([{"score": score if raw_scores else sigmoid(score), "label": "LABEL_0"}])
    else:
        if raw_scores:
            raise InvalidInput("[raw_scores] is not available: text_classification results carry probabilities")
        if any(len(item) != 1 for item in items):
            raise InvalidInput(f"a [{manifest.task}] model predicts on single texts, not pairs")
        labels = manifest.labels or []
        results = await infer(request, entry, [item[0] for item in items], None,
                              num_top_classes=len(labels), **tokenization)
        for result in results:
            answers.append([{"score": float(top["class_probability"]), "label": str(top["class_name"])}
                            for top in result.get("top_classes", [])][:top_k])
    return answers[0] if single and not wrap_single else answers


async def tei_similarity(request: Request) -> Any:
    state = engine_state(request)
    body = tei_body(await read_body(request))
    entry = state.default_deployment(body.get("model"), ("text_embedding",))
    return await _similarity(request, state, entry, body)


async def _similarity(request: Request, state: ServerState, entry: DeploymentEntry,
                      body: Mapping[str, Any]) -> Any:
    inputs = require_object(body.get("inputs"), "[inputs]")
    source = inputs.get("source_sentence")
    sentences = inputs.get("sentences")
    if not isinstance(source, str):
        raise InvalidInput("[inputs.source_sentence] must be a string")
    texts, _ = parse_tei_inputs(sentences, state.config.max_docs_per_request, name="sentences")
    results = await infer(request, entry, [source, *texts], None,
                          **tei_tokenization(body, state.config.auto_truncate))
    vectors = [normalized(results_value(result)) for result in results]
    return [sum(a * b for a, b in zip(vectors[0], vector, strict=True)) for vector in vectors[1:]]


async def tei_tokenize(request: Request) -> Any:
    state = engine_state(request)
    body = tei_body(await read_body(request))
    entry = state.default_deployment(body.get("model"))
    texts, single = parse_tei_inputs(body.get("inputs"), state.config.max_docs_per_request)
    special = parse_bool(body.get("add_special_tokens", True), "add_special_tokens")
    tokenizer = entry.deployment.package.tokenizer
    truncate = "first" if state.config.auto_truncate else "none"

    def tokenize() -> list[list[dict[str, Any]]]:
        answer = []
        for text in texts:
            window = tokenizer.single(text, truncate, -1).windows[0]
            tokens = []
            for token_id, (start, stop), sequence in zip(window.input_ids.tolist(), window.offsets.tolist(),
                                                        window.sequence_ids.tolist(), strict=True):
                is_special = sequence == -1
                if is_special and not special:
                    continue
                tokens.append({"id": int(token_id), "text": tokenizer.id_to_token(int(token_id)),
                               "special": is_special, "start": None if is_special else int(start),
                               "stop": None if is_special else int(stop)})
            answer.append(tokens)
        return answer

    return await run_in_threadpool(tokenize)


async def tei_info(request: Request) -> Any:
    state = engine_state(request)
    entry = state.default_deployment(request.query_params.get("model"))
    return build_tei_info(entry, state.config, __version__)


async def health(request: Request) -> Any:
    state = engine_state(request)
    failed = [entry.deployment_id for entry in state.deployments() if entry.deployment.state != "started"]
    if failed:
        return JSONResponse({"status": "unhealthy", "deployments_not_started": failed}, status_code=503)
    return {"status": "ok", "deployments": len(state.deployments())}


async def tei_root(request: Request) -> Any:
    """``POST /`` and ``POST /models/<id>``: the Hugging Face Inference API posts every task to the
    model URL; dispatch on the body shape (``source_sentence`` → similarity) and the deployment's task.
    ``/models/<id>`` (the Inference API's own URL form) names the model or deployment."""
    state = engine_state(request)
    body = tei_body(await read_body(request))
    name = request.path_params.get("model_id") or body.get("model")
    inputs = body.get("inputs")
    if isinstance(inputs, dict) and "source_sentence" in inputs:
        return await _similarity(request, state, state.default_deployment(name, ("text_embedding",)), body)
    entry = state.default_deployment(name)
    task = entry.model.manifest.task
    if task == "text_embedding":
        return await _embed(request, state, entry, body)
    if task == "text_expansion":
        return await _embed_sparse(request, state, entry, body)
    if task in ("text_classification", "text_similarity"):
        return await _predict(request, state, entry, body, wrap_single=True)
    raise ModelError(f"POST / serves embedding, sparse and classification models; [{entry.deployment_id}] is "
                     f"[{task}]: use _ml/trained_models/{entry.deployment_id}/_infer")


# ---------------------------------------------------------------------------------- OpenAI
async def openai_embeddings(request: Request) -> Any:
    state = engine_state(request)
    parsed = parse_openai_embeddings(await read_body(request), state.config.max_docs_per_request)
    entry = state.default_deployment(parsed["model"], ("text_embedding",))
    size = entry.model.manifest.embedding_size
    if parsed["dimensions"] is not None and parsed["dimensions"] != size:
        raise InvalidInput(
            f"[dimensions] must be the model's embedding size [{size}]; this model cannot shorten its embeddings"
        )
    texts = parsed["inputs"]
    results = await infer(request, entry, texts, None)
    vectors = [results_value(result) for result in results]
    tokenizer = entry.deployment.package.tokenizer
    truncate = entry.model.manifest.tokenization.truncate
    counts = await run_in_threadpool(
        lambda: [sum(len(window.input_ids) for window in tokenizer.single(text, truncate, -1).windows)
                 for text in texts])
    return build_openai_embeddings(vectors, parsed["model"] or entry.deployment_id, parsed["encoding_format"],
                                   counts)


async def openai_models(request: Request) -> Any:
    state = engine_state(request)
    created = int(state.started_at)
    ids = [entry.deployment_id for entry in state.deployments()
           if entry.model.manifest.task == "text_embedding"]
    return {"object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "engine"} for name in ids]}


async def metrics_route(request: Request) -> Any:
    metrics: ServerMetrics = request.app.state.metrics
    return Response(metrics.registry.render(), media_type=metrics.registry.CONTENT_TYPE)


# -------------------------------------------------------------------------------- the app
ROUTES: tuple[tuple[str, list[str], Handler], ...] = (
    ("/", ["GET", "HEAD"], es_info),
    ("/_ml/trained_models", ["GET"], get_models),
    ("/_ml/trained_models/_stats", ["GET"], get_stats),
    ("/_ml/trained_models/{model_id}/_stats", ["GET"], get_stats),
    ("/_ml/trained_models/{model_id}", ["GET"], get_models),
    ("/_ml/trained_models/{model_id}", ["PUT"], put_model),
    ("/_ml/trained_models/{model_id}", ["DELETE"], delete_model),
    ("/_ml/trained_models/{model_id}/deployment/_start", ["POST"], start_deployment),
    ("/_ml/trained_models/{model_id}/deployment/_stop", ["POST"], stop_deployment),
    ("/_ml/trained_models/{model_id}/deployment/_update", ["POST"], update_deployment),
    ("/_ml/trained_models/{model_id}/deployment/cache/_clear", ["POST"], clear_cache),
    ("/_ml/trained_models/{model_id}/_infer", ["POST"], infer_model),
    ("/_ml/trained_models/{model_id}/deployment/_infer", ["POST"], infer_model_legacy),
    ("/_inference", ["GET"], get_inference),
    ("/_inference/{first}", ["GET"], get_inference),
    ("/_inference/{first}/{second}", ["GET"], get_inference),
    ("/_inference/{first}/{second}", ["PUT"], put_inference),
    ("/_inference/{first}", ["DELETE"], delete_inference),
    ("/_inference/{first}/{second}", ["DELETE"], delete_inference),
    ("/_inference/{first}", ["POST"], perform_inference),
    ("/_inference/{first}/{second}", ["POST"], perform_inference),
    ("/", ["POST"], tei_root),
    ("/models/{model_id}", ["POST"], tei_root),
    ("/embed", ["POST"], tei_embed),
    ("/embed_sparse", ["POST"], tei_embed_sparse),
    ("/rerank", ["POST"], tei_rerank),
    ("/predict", ["POST"], tei_predict),
    ("/similarity", ["POST"], tei_similarity),
    ("/tokenize", ["POST"], tei_tokenize),
    ("/info", ["GET"], tei_info),
    ("/health", ["GET"], health),
    ("/v1/embeddings", ["POST"], openai_embeddings),
    ("/embeddings", ["POST"], openai_embeddings),
    ("/v1/models", ["GET"], openai_models),
    ("/metrics", ["GET"], metrics_route),
)


def _group_routes() -> list[Route]:
    """One Starlette route per path, dispatching on the method, so a method not served on a known path
    reaches our own "no handler" error rather than Starlette's plain-text 405."""
    by_path: dict[str, dict[str, Handler]] = {}
    for path, methods, handler in ROUTES:
        for method in methods:
            by_path.setdefault(path, {})[method] = handler
    routes = []
    for path, handlers in by_path.items():
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


def create_app(state: ServerState) -> Starlette:
    """The ASGI application serving ``state``'s deployments. Stopping the app (uvicorn's graceful
    shutdown, after it stopped accepting and finished open requests) drains and stops them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(_shutdown, state)

    app = Starlette(routes=_group_routes(), lifespan=lifespan, exception_handlers={404: not_found})
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


__all__ = ["ServerMetrics", "create_app", "dialect_for"]
