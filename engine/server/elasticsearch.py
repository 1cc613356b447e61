"""The Elasticsearch routes of ``engine serve``: ``GET /``, ``_ml/trained_models`` (get, put, delete,
stats, deployment start/stop/update/cache clear, ``_infer``) and ``_inference`` (put/get/delete/perform
for text_embedding, sparse_embedding and rerank with the ``elasticsearch`` service).

Handlers read the request, call :mod:`engine.server.state` and answer with the bodies of
:mod:`engine.server.es_schemas`. Models are model packages (``engine export``): register one with
``--model ID=DIR``, the config file's ``models``, or ``PUT _ml/trained_models/<id>`` with
``{"location": "DIR"}`` (``metadata.location`` is read too, for clients that send only
Elasticsearch's fields; ``--model-root`` restricts where). Models from flags and config are started at
boot; registered ones need ``_start``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..errors import EngineError, InvalidInput
from ..units import parse_bool, parse_int, parse_time_value
from .es_schemas import (
    INFERENCE_TASK_TYPES,
    START_KEYS,
    build_assignment,
    build_es_info,
    build_inference_response,
    build_model_config,
    build_model_stats,
    check_registration_task,
    check_task_type,
    parse_endpoint_body,
    parse_infer_body,
    parse_inference_request,
    parse_registration,
    parse_start_params,
)
from .wire import Route, engine_state, infer, read_body, require_object

# Query parameters every Elasticsearch API accepts; the clients may send them, we ignore them.
ES_COMMON_PARAMS = frozenset({"error_trace", "filter_path", "human", "pretty"})


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
    params: dict[str, Any] = query_params(request, sorted(START_KEYS - {"adaptive_allocations"}))
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
    if allocations is not None:  # the deployment checks the count (engine.config.check_update)
        allocations = parse_int(allocations, "number_of_allocations")
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


ROUTES: tuple[Route, ...] = (
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
)
