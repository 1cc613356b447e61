"""Request parsing and response building for ``engine serve``: the wire formats, without the I/O.

Three dialects share one server: Elasticsearch (``/_ml``, ``/_inference``, ``GET /``), Text
Embeddings Inference (``/embed``, ``/rerank``, ...) and OpenAI (``/v1``). Each parser takes decoded
JSON and returns plain values, raising :mod:`engine.errors` classes with Elasticsearch's message text
where ELASTIC_REFERENCE.md gives one; each builder takes engine results and returns the dialect's JSON.
Errors are rendered in the dialect of the route that failed, from the one status table below.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import EngineError, InvalidInput
from .server_state import (
    BASE_MEMORY_BYTES,
    INFERENCE_TASK_TO_MODEL_TASK,
    DeploymentEntry,
    ModelEntry,
    StartParams,
    validate_id,
)

ES_VERSION = "9.1.0"           # the Elasticsearch version whose API this server answers like
ES_LUCENE_VERSION = "10.2.2"
INPUT_FIELD = "text_field"     # eland's input field name; every model here uses it


class Unauthorized(EngineError):
    """Missing or wrong API key (HTTP 401)."""

    status = 401
    error_type = "security_exception"


class PayloadTooLarge(EngineError):
    """Request body over ``max_body_bytes`` (HTTP 413)."""

    status = 413
    error_type = "content_too_long_exception"


class MalformedBody(InvalidInput):
    """A body that is not JSON, or JSON of the wrong shape (HTTP 400)."""

    error_type = "x_content_parse_exception"


class NoHandler(InvalidInput):
    """An unknown path; Elasticsearch answers 400 "no handler found"."""


class MethodNotAllowed(EngineError):
    """A known path with a method it does not serve (HTTP 405, as Elasticsearch answers)."""

    status = 405
    error_type = "method_not_allowed"


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


# --------------------------------------------------------------------------------- primitives
def parse_json(raw: bytes, required: bool = True) -> Any:
    """Decode a request body; empty is None unless ``required``.

    Raises:
        MalformedBody: not UTF-8 JSON, or missing when required.
    """
    if not raw.strip():
        if required:
            raise MalformedBody("request body is required")
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise MalformedBody(f"Failed to parse request body: {error}") from error


def require_object(value: Any, what: str = "request body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedBody(f"{what} must be a JSON object")
    return value


_TIME_UNITS = {"nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BYTE_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}


def parse_time_value(value: Any, name: str) -> float | None:
    """An Elasticsearch time value (``10s``, ``500ms``, ``1m``; ``-1`` = no limit) in seconds.

    Raises:
        InvalidInput: not a time value.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value == -1:
            return None
        raise InvalidInput(f"failed to parse setting [{name}] with value [{value}] as a time value: unit is missing")
    text = str(value).strip().lower()
    if text == "-1":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(nanos|micros|ms|s|m|h|d)", text)
    if not match:
        raise InvalidInput(
            f"failed to parse setting [{name}] with value [{value}] as a time value: unit is missing or unrecognized"
        )
    return float(match.group(1)) * _TIME_UNITS[match.group(2)]


def parse_byte_size(value: Any, name: str) -> int:
    """An Elasticsearch byte size (``0b``, ``100mb``) in bytes.

    Raises:
        InvalidInput: not a byte size.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|pb)", str(value).strip().lower())
    if not match:
        raise InvalidInput(f"failed to parse setting [{name}] with value [{value}] as a size in bytes")
    return int(float(match.group(1)) * _BYTE_UNITS[match.group(2)])


def parse_bool(value: Any, name: str) -> bool:
    """A boolean from JSON or a query string (``true``/``false``; empty means true, as ES reads ``?force``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "true"):
        return True
    if text == "false":
        return False
    raise InvalidInput(f"Failed to parse value [{value}] as only [true] or [false] are allowed for [{name}]")


def parse_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"[{name}] must be an integer; got [{value}]")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError as error:
        raise InvalidInput(f"[{name}] must be an integer; got [{value}]") from error


def positive_or_none(value: Any, name: str) -> int | None:
    """An optional count such as ``top_n``: None, or an integer of at least 1."""
    if value is None:
        return None
    number = parse_int(value, name)
    if number < 1:
        raise InvalidInput(f"[{name}] must be a positive integer; got [{value}]")
    return number


# ------------------------------------------------------------------------ trained models (§6)
START_KEYS = frozenset({
    "deployment_id", "number_of_allocations", "model_threads", "threads_per_allocation", "inference_threads",
    "queue_capacity", "cache_size", "priority", "timeout", "wait_for", "adaptive_allocations",
})


def parse_start_params(model_id: str, params: Mapping[str, Any], default_threads: int = 1,
                       default_queue_capacity: int = 10000) -> StartParams:
    """Validate ``_start`` query parameters merged with its body (ELASTIC_REFERENCE.md §6.1).

    Raises:
        InvalidInput: unknown parameter or a value Elasticsearch would reject, with its message.
    """
    unknown = sorted(set(params) - START_KEYS)
    if unknown:
        raise InvalidInput(f"request [_start] contains unrecognized parameters: {unknown}")
    deployment_id = params.get("deployment_id") or model_id
    validate_id(deployment_id, "deployment_id")
    adaptive = params.get("adaptive_allocations")
    if adaptive is not None:
        adaptive = dict(require_object(adaptive, "[adaptive_allocations]"))
        if "enabled" in adaptive:
            adaptive["enabled"] = parse_bool(adaptive["enabled"], "enabled")
        for key in ("min_number_of_allocations", "max_number_of_allocations"):
            if adaptive.get(key) is not None:
                adaptive[key] = parse_int(adaptive[key], key)
        low, high = adaptive.get("min_number_of_allocations"), adaptive.get("max_number_of_allocations")
        if low is not None and low < 0:
            raise InvalidInput("[min_number_of_allocations] must be a non-negative integer")
        if high is not None and high < 1:
            raise InvalidInput("[max_number_of_allocations] must be a positive integer")
        if low is not None and high is not None and low > high:
            raise InvalidInput(
                "[max_number_of_allocations] must be greater than or equal to [min_number_of_allocations]"
            )
    enabled = bool(adaptive and adaptive.get("enabled"))
    allocations_value = params.get("number_of_allocations", params.get("model_threads"))
    # None with adaptive allocations: the deployment starts at the adaptive minimum, as Elasticsearch does.
    allocations: int | None = None
    if allocations_value is not None:
        if enabled:
            raise InvalidInput("[number_of_allocations] cannot be set if adaptive allocations is enabled")
        allocations = parse_int(allocations_value, "number_of_allocations")
        if allocations < 1:
            raise InvalidInput("[number_of_allocations] must be a positive integer")
    threads_value = params.get("threads_per_allocation", params.get("inference_threads"))
    threads = default_threads if threads_value is None else parse_int(threads_value, "threads_per_allocation")
    if threads < 1:
        raise InvalidInput("[threads_per_allocation] must be a positive integer")
    if threads > 32 or threads & (threads - 1):
        raise InvalidInput("[threads_per_allocation] must be a power of 2 less than or equal to 32")
    capacity_value = params.get("queue_capacity")
    capacity = default_queue_capacity if capacity_value is None else parse_int(capacity_value, "queue_capacity")
    if capacity < 1:
        raise InvalidInput("[queue_capacity] must be a positive integer")
    if capacity >= 100000:
        raise InvalidInput("[queue_capacity] must be less than 100000")
    priority = str(params.get("priority", "normal")).lower()
    if priority not in ("normal", "low"):
        raise InvalidInput(f"[priority] must be one of [normal, low]; got [{params.get('priority')}]")
    if priority == "low" and (allocations or 1) != 1:
        raise InvalidInput("[number_of_allocations] must be 1 when [priority] is low")
    if priority == "low" and threads != 1:
        raise InvalidInput("[threads_per_allocation] must be 1 when [priority] is low")
    cache = params.get("cache_size")
    cache_bytes = None if cache is None else parse_byte_size(cache, "cache_size")
    if "timeout" in params:
        timeout = parse_time_value(params["timeout"], "timeout")
        if timeout is not None and timeout <= 0:
            raise InvalidInput("[timeout] must be positive")
    wait_for = str(params.get("wait_for", "started"))
    if wait_for not in ("starting", "started", "fully_allocated"):
        raise InvalidInput(f"[wait_for] must be one of [starting, started, fully_allocated]; got [{wait_for}]")
    return StartParams(deployment_id=deployment_id, number_of_allocations=allocations,
                       threads_per_allocation=threads, queue_capacity=capacity, cache_size=cache_bytes,
                       priority=priority, adaptive_allocations=adaptive)


def parse_registration(model_id: str, body: Any) -> dict[str, Any]:
    """``PUT _ml/trained_models/<id>``: where the package is, plus the ES metadata we keep.

    The package directory is ``location`` (our extension) or ``metadata.location`` (for clients that
    send only Elasticsearch's fields). A model definition upload is refused: packages are made by
    ``engine export``.
    """
    body = require_object(body)
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidInput("[metadata] must be an object")
    location = body.get("location", metadata.get("location"))
    if not isinstance(location, str) or not location:
        raise InvalidInput(
            f"model [{model_id}] needs the model package directory in [location] (or [metadata.location]); "
            "make packages with `engine export`"
        )
    for key in ("definition", "compressed_definition"):
        if key in body:
            raise InvalidInput(f"[{key}] is not supported: register an exported model package with [location]")
    if body.get("model_type", "pytorch") != "pytorch":
        raise InvalidInput(f"[model_type] must be [pytorch]; got [{body.get('model_type')}]")
    tags = body.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidInput("[tags] must be a list of strings")
    return {
        "location": location,
        "description": body.get("description"),
        "tags": tags,
        "metadata": {key: value for key, value in metadata.items() if key != "location"},
        "prefix_strings": body.get("prefix_strings") or {},
        "inference_config": body.get("inference_config"),
    }


def check_registration_task(entry: ModelEntry, inference_config: Any) -> None:
    """A registration that names an inference_config must name the package's task."""
    if inference_config is None:
        return
    config = require_object(inference_config, "[inference_config]")
    if len(config) != 1 or entry.manifest.task not in config:
        raise InvalidInput(
            f"[inference_config] names task {sorted(config)}, but the package at [{entry.path}] was exported "
            f"for [{entry.manifest.task}]"
        )


def _task_config(entry: ModelEntry) -> dict[str, Any]:
    manifest = entry.manifest
    tokenization = manifest.tokenization.to_json()
    kind = tokenization.pop("type")
    config: dict[str, Any] = {
        "vocabulary": {"index": ".ml-inference-native-000002"},
        "tokenization": {kind: tokenization},
    }
    task = manifest.task
    if task in ("text_classification", "ner", "zero_shot_classification") and manifest.labels:
        config["classification_labels"] = list(manifest.labels)
    if task == "text_classification":
        config["num_top_classes"] = 0
    elif task == "fill_mask":
        config["num_top_classes"] = 5
        config["mask_token"] = manifest.special_tokens.get("mask", ["[MASK]"])[0]
    elif task == "question_answering":
        config["num_top_classes"] = 0
        config["max_answer_length"] = 15
    elif task == "text_embedding" and manifest.embedding_size:
        config["embedding_size"] = manifest.embedding_size
    elif task == "text_similarity":
        config["span_score_combination_function"] = "max"
    elif task == "zero_shot_classification":
        config["hypothesis_template"] = manifest.task_options.get("hypothesis_template", "This example is {}.")
        config["multi_label"] = False
    return {task: config}


def build_model_config(entry: ModelEntry) -> dict[str, Any]:
    """One ``trained_model_configs`` entry, shaped like Elasticsearch's for an eland-imported model."""
    manifest = entry.manifest
    data: dict[str, Any] = {
        "model_id": entry.model_id,
        "model_type": "pytorch",
        "created_by": "api_user",
        "version": "12.0.0",
        "create_time": entry.create_time_ms,
        "model_size_bytes": entry.model_bytes,
        "estimated_operations": 0,
        "license_level": "platinum",
        "tags": list(entry.tags),
        "metadata": {
            **entry.metadata,
            "engine": {
                "location": str(entry.path),
                "task": manifest.task,
                "architecture": manifest.architecture,
                "quantization": manifest.quantization.get("mode", "none"),
                "source": manifest.source,
            },
        },
        "input": {"field_names": [INPUT_FIELD]},
        "inference_config": _task_config(entry),
        "location": {"index": {"name": ".ml-inference-native-000002"}},
    }
    if entry.description is not None:
        data["description"] = entry.description
    if entry.prefix_strings:
        data["prefix_strings"] = dict(entry.prefix_strings)
    return data


def required_memory(entry: ModelEntry) -> int:
    return BASE_MEMORY_BYTES + 2 * entry.model_bytes


def build_assignment(item: DeploymentEntry) -> dict[str, Any]:
    """The ``_start`` answer: Elasticsearch's ``TrainedModelAssignment`` for a one-node cluster."""
    params = item.params
    stats = item.deployment.stats()
    allocations = int(stats.get("number_of_allocations", params.number_of_allocations or 1))
    task_parameters: dict[str, Any] = {
        "model_id": item.model_id,
        "deployment_id": item.deployment_id,
        "model_bytes": item.model.model_bytes,
        "threads_per_allocation": params.threads_per_allocation,
        "number_of_allocations": allocations,
        "queue_capacity": params.queue_capacity,
        "cache_size": f"{params.cache_size if params.cache_size is not None else item.model.model_bytes}b",
        "priority": params.priority,
        "per_deployment_memory_bytes": 0,
        "per_allocation_memory_bytes": 0,
    }
    assignment: dict[str, Any] = {
        "task_parameters": task_parameters,
        "routing_table": {
            "engine-node": {"current_allocations": allocations, "target_allocations": allocations,
                            "routing_state": "started", "reason": ""},
        },
        "assignment_state": "started",
        "start_time": item.start_time_ms,
        "max_assigned_allocations": allocations,
    }
    if params.adaptive_allocations is not None:
        assignment["adaptive_allocations"] = params.adaptive_allocations
    return {"assignment": assignment}


def build_model_stats(entry: ModelEntry, deployments: Sequence[DeploymentEntry]) -> list[dict[str, Any]]:
    """``trained_model_stats`` entries for one model: one per deployment, or one without
    ``deployment_stats`` when it has none (as Elasticsearch lists them)."""
    base = {
        "model_id": entry.model_id,
        "model_size_stats": {"model_size_bytes": entry.model_bytes,
                             "required_native_memory_bytes": required_memory(entry)},
        "pipeline_count": 0,
    }
    if not deployments:
        return [{**base, "inference_stats": _inference_stats({})}]
    items = []
    for item in deployments:
        stats = item.deployment.stats()
        items.append({**base, "inference_stats": _inference_stats(stats),
                      "deployment_stats": es_deployment_stats(item, stats)})
    return items


NODE_ID = "engine-node"
_COUNTS = ("error_count", "rejected_execution_count", "timeout_count")
_NODE_KEYS = ("average_inference_time_ms", "average_inference_time_ms_excluding_cache_hits",
              "inference_cache_hit_count", "number_of_pending_requests", "threads_per_allocation",
              "number_of_allocations", "peak_throughput_per_minute", "throughput_last_minute",
              "average_inference_time_ms_last_minute", "inference_cache_hit_count_last_minute")


def _time_string(epoch_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def es_deployment_stats(item: DeploymentEntry, stats: Mapping[str, Any]) -> dict[str, Any]:
    """A deployment's flat engine stats in Elasticsearch's layout (ELASTIC_REFERENCE.md §6.5):
    deployment-level settings and sums, and one ``nodes`` entry for this process. Counts that are
    zero are left out, as Elasticsearch leaves them out."""
    start_time = int(stats.get("start_time", item.start_time_ms))
    node: dict[str, Any] = {
        "node": {NODE_ID: {"name": NODE_ID, "ephemeral_id": NODE_ID, "transport_address": "127.0.0.1:9300",
                           "attributes": {}, "roles": ["ml"]}},
        "routing_state": {"routing_state": "started" if stats.get("state") == "started" else "stopping"},
        "inference_count": int(stats.get("inference_count", 0)),
        "start_time": start_time,
    }
    for key in _NODE_KEYS:
        if stats.get(key) is not None:
            node[key] = stats[key]
    if stats.get("last_access") is not None:
        node["last_access"] = stats["last_access"]
        node["last_access_string"] = _time_string(int(stats["last_access"]))
    deployment: dict[str, Any] = {
        "deployment_id": item.deployment_id,
        "model_id": item.model_id,
        "threads_per_allocation": stats.get("threads_per_allocation", item.params.threads_per_allocation),
        "number_of_allocations": stats.get("number_of_allocations", item.params.number_of_allocations),
        "queue_capacity": stats.get("queue_capacity", item.params.queue_capacity),
        "state": stats.get("state", "started"),
        "allocation_status": stats.get("allocation_status", {}),
        "cache_size": f"{stats.get('cache_size', 0)}b",
        "priority": stats.get("priority", item.params.priority),
        "start_time": start_time,
        "start_time_string": _time_string(start_time),
        "peak_throughput_per_minute": stats.get("peak_throughput_per_minute", 0),
        "nodes": [node],
    }
    if stats.get("adaptive_allocations") is not None:
        deployment["adaptive_allocations"] = stats["adaptive_allocations"]
    for key in _COUNTS:
        if stats.get(key):
            deployment[key] = node[key] = stats[key]
    if stats.get("inference_count"):
        deployment["inference_count"] = stats["inference_count"]
    return deployment


def _inference_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    failures = sum(int(stats.get(key, 0)) for key in ("error_count", "timeout_count", "rejected_execution_count"))
    return {"failure_count": failures, "inference_count": int(stats.get("inference_count", 0)),
            "cache_miss_count": 0, "missing_all_fields_count": 0,
            "timestamp": int(stats.get("start_time", 0))}


def parse_infer_body(body: Any, max_docs: int) -> tuple[list[str], dict[str, Any] | None]:
    """``_infer``'s ``docs`` and ``inference_config`` (ELASTIC_REFERENCE.md §3).

    Raises:
        InvalidInput: missing/non-string ``text_field`` (ES messages), too many docs, bad shapes.
    """
    body = require_object(body)
    unknown = sorted(set(body) - {"docs", "inference_config"})
    if unknown:
        raise MalformedBody(f"[_infer] unknown field {unknown}")
    docs = body.get("docs")
    if not isinstance(docs, list) or not docs:
        raise InvalidInput("[docs] must be a non-empty array of objects")
    check_doc_count(len(docs), max_docs)
    texts: list[str] = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise InvalidInput("[docs] must be an array of objects")
        if INPUT_FIELD not in doc:
            raise InvalidInput(f"Input field [{INPUT_FIELD}] does not exist in the source document")
        value = doc[INPUT_FIELD]
        if not isinstance(value, str):
            raise InvalidInput(f"Input value [{value}] for field [{INPUT_FIELD}] must be a string")
        texts.append(value)
    config = body.get("inference_config")
    if config is not None:
        config = require_object(config, "[inference_config]")
    return texts, config


def check_doc_count(count: int, max_docs: int) -> None:
    if count > max_docs:
        raise InvalidInput(
            f"request has [{count}] documents; this server accepts at most [{max_docs}] per request "
            "(max_docs_per_request)"
        )


# ---------------------------------------------------------------------- inference API (§7)
INFERENCE_TASK_TYPES = tuple(INFERENCE_TASK_TO_MODEL_TASK)


def check_task_type(task_type: str) -> None:
    if task_type not in INFERENCE_TASK_TYPES:
        raise InvalidInput(
            f"Unknown task_type [{task_type}]; the elasticsearch service here supports {list(INFERENCE_TASK_TYPES)}"
        )


def parse_endpoint_body(task_type: str, inference_id: str, body: Any, default_threads: int,
                        default_queue_capacity: int
                        ) -> tuple[dict[str, Any], dict[str, Any], StartParams | None, dict[str, Any] | None]:
    """``PUT _inference/<task>/<id>``: service settings, task settings, how to start the deployment.

    Returns ``(service_settings, task_settings, start, chunking_settings)``; ``start`` is None when
    ``service_settings.deployment_id`` names an existing deployment to reuse.
    """
    check_task_type(task_type)
    body = require_object(body)
    service = body.get("service")
    if service != "elasticsearch":
        raise InvalidInput(f"Unknown service [{service}]; this server provides the [elasticsearch] service")
    settings = dict(require_object(body.get("service_settings"), "[service_settings]"))
    task_settings = dict(require_object(body.get("task_settings") or {}, "[task_settings]"))
    chunking = body.get("chunking_settings")
    if chunking is not None:
        chunking = dict(require_object(chunking, "[chunking_settings]"))
    if not isinstance(settings.get("model_id"), str):
        raise InvalidInput("[service_settings] does not contain the required setting [model_id]")
    if task_type == "rerank":
        unknown = sorted(set(task_settings) - {"return_documents"})
        if "return_documents" in task_settings:
            task_settings["return_documents"] = parse_bool(task_settings["return_documents"], "return_documents")
    else:
        unknown = sorted(task_settings)
    if unknown:
        raise InvalidInput(f"[task_settings] has unknown settings {unknown} for task type [{task_type}]")
    if settings.get("deployment_id") and "num_allocations" not in settings and "adaptive_allocations" not in settings:
        return settings, task_settings, None, chunking
    adaptive = settings.get("adaptive_allocations")
    if settings.get("num_allocations") is None and not (isinstance(adaptive, dict) and adaptive.get("enabled")):
        raise InvalidInput(
            "[service_settings] does not contain one of the required settings [num_allocations, adaptive_allocations]"
        )
    if "num_threads" not in settings:
        raise InvalidInput("[service_settings] does not contain the required setting [num_threads]")
    start_settings: dict[str, Any] = {"deployment_id": settings.get("deployment_id") or inference_id,
                                      "threads_per_allocation": settings["num_threads"]}
    if settings.get("num_allocations") is not None:
        start_settings["number_of_allocations"] = settings["num_allocations"]
    if adaptive is not None:
        start_settings["adaptive_allocations"] = adaptive
    start = parse_start_params(settings["model_id"], start_settings, default_threads, default_queue_capacity)
    return settings, task_settings, start, chunking


def parse_inference_request(task_type: str, body: Any, max_docs: int,
                            endpoint_task_settings: Mapping[str, Any]) -> dict[str, Any]:
    """``POST _inference/<task>/<id>``: ``input`` (string or list), ``query``/``top_n``/
    ``return_documents`` for rerank, ``task_settings`` overriding the endpoint's.

    Returns a dict with ``inputs``, and for rerank ``query``, ``top_n`` and ``return_documents``.
    """
    body = require_object(body)
    known = {"input", "query", "task_settings", "input_type", "top_n", "return_documents", "timeout"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise MalformedBody(f"[_inference] unknown field {unknown}")
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(item, str) for item in inputs):
        raise InvalidInput("Field [input] must be a string or a non-empty array of strings")
    check_doc_count(len(inputs), max_docs)
    settings = dict(endpoint_task_settings)
    settings.update(require_object(body.get("task_settings") or {}, "[task_settings]"))
    parsed: dict[str, Any] = {"inputs": inputs}
    if task_type == "rerank":
        query = body.get("query")
        if not isinstance(query, str) or not query:
            raise InvalidInput("Field [query] cannot be null or empty for the rerank task type")
        top_n = positive_or_none(body.get("top_n", settings.get("top_n")), "top_n")
        parsed.update(query=query, top_n=top_n,
                      return_documents=parse_bool(body.get("return_documents",
                                                            settings.get("return_documents", True)),
                                                  "return_documents"))
    elif "query" in body:
        raise InvalidInput(f"Field [query] is only allowed for the rerank task type, not [{task_type}]")
    return parsed


def results_value(result: Mapping[str, Any]) -> Any:
    """The main value of an ``_infer`` result, whatever its ``results_field`` is called."""
    if "predicted_value" in result:
        return result["predicted_value"]
    for key, value in result.items():
        if key not in ("is_truncated", "top_classes", "prediction_probability"):
            return value
    raise InvalidInput("the model returned no value")


def build_inference_response(task_type: str, results: Sequence[Mapping[str, Any]], parsed: Mapping[str, Any]
                             ) -> dict[str, Any]:
    """The ``_inference`` answer for each task type (ELASTIC_REFERENCE.md §7)."""
    if task_type == "text_embedding":
        return {"text_embedding": [{"embedding": [float(x) for x in results_value(r)]} for r in results]}
    if task_type == "sparse_embedding":
        return {"sparse_embedding": [
            {"is_truncated": bool(r.get("is_truncated", False)),
             "embedding": {token: float(weight) for token, weight in results_value(r).items()}}
            for r in results
        ]}
    return {"rerank": rank(results, parsed["inputs"], parsed.get("top_n"), parsed["return_documents"],
                           score_key="relevance_score", text_key="text")}


def rank(results: Sequence[Mapping[str, Any]], texts: Sequence[str], top_n: int | None, with_text: bool,
         score_key: str, text_key: str, transform: Any = None) -> list[dict[str, Any]]:
    """Sort cross-encoder scores descending (stable, so ties keep input order) and cut to ``top_n``."""
    scores = [float(results_value(result)) for result in results]
    order = sorted(range(len(scores)), key=lambda index: -scores[index])
    if top_n is not None:
        order = order[:top_n]
    ranked = []
    for index in order:
        item: dict[str, Any] = {"index": index}
        if with_text:
            item[text_key] = texts[index]
        item[score_key] = transform(scores[index]) if transform else scores[index]
        ranked.append(item)
    return ranked


def sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


# ------------------------------------------------------------------------------------- TEI
def parse_tei_inputs(value: Any, max_docs: int, name: str = "inputs") -> tuple[list[str], bool]:
    """TEI's ``inputs``: a string or a list of strings. Returns the texts and whether it was one string."""
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"[{name}] must be a string or a non-empty list of strings")
    check_doc_count(len(value), max_docs)
    return list(value), False


def tei_body(raw: Any) -> dict[str, Any]:
    """A TEI body, with the Hugging Face Inference API's ``parameters`` object folded in (the
    ``huggingface_hub`` client sends options there)."""
    body = dict(require_object(raw))
    parameters = body.pop("parameters", None) or {}
    return {**require_object(parameters, "[parameters]"), **body}


def parse_predict_inputs(value: Any, max_docs: int) -> tuple[list[tuple[str, ...]], bool]:
    """TEI's predict inputs: a string, a pair ``[a, b]``, or a batch of ``[a]`` / ``[a, b]`` items.
    Returns the items and whether the request was a single one (TEI then answers unwrapped)."""
    if isinstance(value, str):
        return [(value,)], True
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value) and len(value) <= 2:
        return [tuple(value)], True
    if isinstance(value, list) and value and all(
        isinstance(item, list) and 1 <= len(item) <= 2 and all(isinstance(part, str) for part in item)
        for item in value
    ):
        check_doc_count(len(value), max_docs)
        return [tuple(item) for item in value], False
    raise InvalidInput(
        "[inputs] must be a string, a pair of strings [string, string] or a batch of mixed strings and pairs "
        "[[string], [string, string], ...]"
    )


def tei_tokenization(body: Mapping[str, Any], auto_truncate: bool) -> dict[str, Any]:
    """TEI's ``truncate`` (and ``truncation_direction``) as an Elasticsearch tokenization update."""
    direction = str(body.get("truncation_direction", "right")).lower()
    if direction != "right":
        raise InvalidInput(f"[truncation_direction] [{direction}] is not supported; only [right] is")
    truncate = body.get("truncate")
    truncate = auto_truncate if truncate is None else parse_bool(truncate, "truncate")
    return {"tokenization": {"truncate": "first" if truncate else "none"}}


def normalized(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(float(x) * float(x) for x in vector))
    return [float(x) / norm for x in vector] if norm > 0 else [float(x) for x in vector]


def build_tei_info(item: DeploymentEntry, config: Any, version: str) -> dict[str, Any]:
    """TEI's ``/info``: what the model is and the request limits."""
    manifest = item.model.manifest
    task = manifest.task
    if task == "text_embedding":
        model_type: dict[str, Any] = {"embedding": {"pooling": manifest.task_options.get("pooling", "graph")}}
    elif task == "text_similarity":
        model_type = {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    elif manifest.labels:
        labels = list(manifest.labels)
        model_type = {"classifier": {"id2label": {str(i): label for i, label in enumerate(labels)},
                                     "label2id": {label: i for i, label in enumerate(labels)}}}
    else:
        model_type = {task: {}}
    return {
        "model_id": item.model_id,
        "model_sha": manifest.source.get("revision"),
        "model_dtype": "int8" if manifest.quantization.get("mode") == "int8" else "float32",
        "model_type": model_type,
        "max_concurrent_requests": item.params.queue_capacity,
        "max_input_length": manifest.tokenization.max_sequence_length,
        "max_batch_tokens": None,
        "max_batch_requests": None,
        "max_client_batch_size": config.max_docs_per_request,
        "auto_truncate": config.auto_truncate,
        "tokenization_workers": None,
        "version": version,
        "sha": None,
        "docker_label": None,
    }


# ----------------------------------------------------------------------------------- OpenAI
def parse_openai_embeddings(body: Any, max_docs: int) -> dict[str, Any]:
    """``POST /v1/embeddings``: ``input`` (string or list of strings), ``model``, ``encoding_format``
    (``float``/``base64``), ``dimensions``, ``user``."""
    body = require_object(body)
    inputs, _ = parse_tei_inputs(body.get("input"), max_docs, name="input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidInput(f"[encoding_format] must be [float] or [base64]; got [{encoding}]")
    dimensions = body.get("dimensions")
    if dimensions is not None:
        dimensions = parse_int(dimensions, "dimensions")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidInput("[model] must be a string")
    return {"inputs": inputs, "model": model, "encoding_format": encoding, "dimensions": dimensions}


def encode_base64(vector: Sequence[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def build_openai_embeddings(vectors: Sequence[Sequence[float]], model: str, encoding: str,
                            token_counts: Sequence[int]) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": index,
         "embedding": encode_base64(vector) if encoding == "base64" else [float(x) for x in vector]}
        for index, vector in enumerate(vectors)
    ]
    total = int(sum(token_counts))
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": total, "total_tokens": total}}


def build_es_info(cluster_name: str, node_name: str) -> dict[str, Any]:
    """``GET /``: the fields the Elasticsearch clients read (version.number, tagline)."""
    return {
        "name": node_name,
        "cluster_name": cluster_name,
        "cluster_uuid": "engine-0000000000000000000000",
        "version": {
            "number": ES_VERSION,
            "build_flavor": "default",
            "build_type": "engine",
            "build_hash": "engine",
            "build_date": "2026-01-01T00:00:00.000Z",
            "build_snapshot": False,
            "lucene_version": ES_LUCENE_VERSION,
            "minimum_wire_compatibility_version": "8.19.0",
            "minimum_index_compatibility_version": "8.0.0",
        },
        "tagline": "You Know, for Search",
    }
