"""Elasticsearch's request bodies and answers for ``engine serve``: parsing and building, without I/O.

The validation here is written by hand on purpose: it reproduces Elasticsearch's exact error messages
(ELASTIC_REFERENCE.md §3, §6, §7), which clients and tests match on, and no schema library words them
that way. The deployment settings themselves are not checked here: ``_start`` and ``_inference``
service settings are mapped onto :class:`engine.config.DeploymentConfig`, the one validator of them,
so ``engine.load`` and ``_start`` give the same answer for the same settings.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from ..config import DeploymentConfig
from ..errors import InvalidInput, MalformedBody
from ..units import parse_bool, parse_int, parse_time_value
from .state import (
    BASE_MEMORY_BYTES,
    INFERENCE_TASK_TO_MODEL_TASK,
    DeploymentEntry,
    ModelEntry,
    StartParams,
    validate_id,
)
from .wire import check_doc_count, positive_or_none, rank, require_object, results_value

ES_VERSION = "9.1.0"           # the Elasticsearch version whose API this server answers like
ES_LUCENE_VERSION = "10.2.2"
INPUT_FIELD = "text_field"     # eland's input field name; every model here uses it


# ------------------------------------------------------------------------ trained models (§6)
START_KEYS = frozenset({
    "deployment_id", "number_of_allocations", "model_threads", "threads_per_allocation", "inference_threads",
    "queue_capacity", "cache_size", "priority", "timeout", "wait_for", "adaptive_allocations",
})
WAIT_FOR_STATES = ("starting", "started", "fully_allocated")


def parse_start_params(model_id: str, params: Mapping[str, Any], default_threads: int = 1,
                       default_queue_capacity: int = 10000) -> StartParams:
    """Map ``_start`` query parameters merged with its body (ELASTIC_REFERENCE.md §6.1) onto a
    :class:`DeploymentConfig`: legacy names, query-string text to numbers and booleans, the server's
    defaults. The config validates the settings; ``timeout`` and ``wait_for`` are checked here.

    Raises:
        InvalidInput: unknown parameter or a value Elasticsearch would reject, with its message.
    """
    unknown = sorted(set(params) - START_KEYS)
    if unknown:
        raise InvalidInput(f"request [_start] contains unrecognized parameters: {unknown}")
    deployment_id = params.get("deployment_id") or model_id
    validate_id(deployment_id, "deployment_id")
    wait_for = str(params.get("wait_for", "started"))
    if wait_for not in WAIT_FOR_STATES:
        raise InvalidInput(f"[wait_for] must be one of [{', '.join(WAIT_FOR_STATES)}]; got [{wait_for}]")
    adaptive = params.get("adaptive_allocations")
    if adaptive is not None:
        adaptive = dict(require_object(adaptive, "[adaptive_allocations]"))
        if "enabled" in adaptive:
            adaptive["enabled"] = parse_bool(adaptive["enabled"], "enabled")
        for key in ("min_number_of_allocations", "max_number_of_allocations"):
            if adaptive.get(key) is not None:
                adaptive[key] = parse_int(adaptive[key], key)
    allocations = params.get("number_of_allocations", params.get("model_threads"))
    threads = params.get("threads_per_allocation", params.get("inference_threads"))
    capacity = params.get("queue_capacity")
    settings: dict[str, Any] = {
        "deployment_id": deployment_id,
        # None with adaptive allocations: the deployment starts at the adaptive minimum, as Elasticsearch does.
        "number_of_allocations": None if allocations is None else parse_int(allocations, "number_of_allocations"),
        "threads_per_allocation": default_threads if threads is None else parse_int(threads, "threads_per_allocation"),
        "queue_capacity": default_queue_capacity if capacity is None else parse_int(capacity, "queue_capacity"),
        "priority": str(params.get("priority", "normal")).lower(),
        "adaptive_allocations": adaptive,
    }
    if params.get("cache_size") is not None:
        settings["cache_size"] = params["cache_size"]
    config = DeploymentConfig(**settings)
    if "timeout" in params:
        timeout = parse_time_value(params["timeout"], "timeout")
        if timeout is not None and timeout <= 0:
            raise InvalidInput("[timeout] must be positive")
    return StartParams(config=config, adaptive_allocations=adaptive)


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


def _node_entry(stats: Mapping[str, Any], node_id: str, name: str, start_time: int) -> dict[str, Any]:
    """One ``nodes[]`` entry: where an allocation runs and its counts (zero counts left out)."""
    node: dict[str, Any] = {
        "node": {node_id: {"name": name, "ephemeral_id": node_id, "transport_address": "127.0.0.1:9300",
                           "attributes": {}, "roles": ["ml"]}},
        "routing_state": {"routing_state": "started" if stats.get("state") == "started" else "stopping"},
        "inference_count": int(stats.get("inference_count") or 0),
        "start_time": int(stats.get("start_time") or start_time),
    }
    for key in _NODE_KEYS:
        if stats.get(key) is not None:
            node[key] = stats[key]
    if stats.get("last_access") is not None:
        node["last_access"] = stats["last_access"]
        node["last_access_string"] = _time_string(int(stats["last_access"]))
    for key in _COUNTS:
        if stats.get(key):
            node[key] = stats[key]
    return node


def es_deployment_stats(item: DeploymentEntry, stats: Mapping[str, Any]) -> dict[str, Any]:
    """A deployment's flat engine stats in Elasticsearch's layout (ELASTIC_REFERENCE.md §6.5):
    deployment-level settings and sums, and one ``nodes`` entry for this process, or, when the backend
    reports ``nodes`` (a Ray deployment: one per replica, keyed by the Ray node id and named by the
    replica), one entry for each. Counts that are zero are left out, as Elasticsearch leaves them out."""
    start_time = int(stats.get("start_time", item.start_time_ms))
    replicas = stats.get("nodes")
    if replicas is None:
        nodes = [_node_entry(stats, NODE_ID, NODE_ID, start_time)]
    else:
        nodes = [_node_entry(replica, str(replica.get("node_id")), str(replica.get("replica_id")), start_time)
                 for replica in replicas]
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
        "nodes": nodes,
    }
    if stats.get("adaptive_allocations") is not None:
        deployment["adaptive_allocations"] = stats["adaptive_allocations"]
    for key in _COUNTS:
        if stats.get(key):
            deployment[key] = stats[key]
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
