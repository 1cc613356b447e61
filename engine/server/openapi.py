"""``GET /openapi.json``: an OpenAPI 3.0 description of every route the server offers, built from the
routes themselves (``app.ROUTES``), so a route cannot be served without being described.

Each operation lists its path parameters, a JSON request body where the route reads one (the fields the
handler reads, typed as the handler accepts them; extra fields are refused by most handlers with 400,
so the schemas allow them and the server's own checks answer), the 200 answer and the error answers in
the route's dialect (engine.server.app.dialect_for): Elasticsearch ``{"error": {...}, "status"}``, TEI
``{"error", "error_type"}``, OpenAI ``{"error": {"message", "type", "param", "code"}}``.
schemathesis runs against it in CI (tests/server/test_openapi_schemathesis.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .wire import Handler

_STRINGS: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_ERRORS: dict[str, dict[str, Any]] = {
    "es": {"type": "object", "required": ["error", "status"], "properties": {
        "error": {"type": "object", "required": ["type", "reason", "root_cause"], "properties": {
            "type": {"type": "string"}, "reason": {"type": "string"}, "root_cause": {"type": "array"}}},
        "status": {"type": "integer"}}},
    "tei": {"type": "object", "required": ["error", "error_type"], "properties": {
        "error": {"type": "string"}, "error_type": {"type": "string"}}},
    "openai": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "required": ["message", "type"], "properties": {
            "message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "integer"}}}}},
}
# Request bodies by the route's last path part (TEI's routes repeat under /models/{model_id}).
_BODIES: dict[str, dict[str, Any]] = {
    "_infer": {"type": "object", "required": ["docs"], "properties": {
        "docs": {"type": "array", "items": {"type": "object", "properties": {"text_field": {"type": "string"}}}},
        "inference_config": {"type": "object"}}},
    "_start": {"type": "object"},
    "_update": {"type": "object", "properties": {"number_of_allocations": {"type": "integer"},
                                                 "adaptive_allocations": {"type": "object"}}},
    "trained_models": {"type": "object", "properties": {"location": {"type": "string"},
                                                        "description": {"type": "string"}}},
    "_inference": {"type": "object", "properties": {"input": _STRINGS, "query": {"type": "string"},
                                                    "top_n": {"type": "integer"}, "task_settings": {"type": "object"},
                                                    "service": {"type": "string"},
                                                    "service_settings": {"type": "object"}}},
    "embed": {"type": "object", "required": ["inputs"], "properties": {
        "inputs": _STRINGS, "normalize": {"type": "boolean"}, "truncate": {"type": "boolean"}}},
    "embed_sparse": {"type": "object", "required": ["inputs"], "properties": {"inputs": _STRINGS}},
    "rerank": {"type": "object", "required": ["query", "texts"], "properties": {
        "query": {"type": "string"}, "texts": {"type": "array", "items": {"type": "string"}},
        "return_text": {"type": "boolean"}, "raw_scores": {"type": "boolean"}}},
    "predict": {"type": "object", "required": ["inputs"], "properties": {"inputs": _STRINGS,
                                                                         "raw_scores": {"type": "boolean"}}},
    "similarity": {"type": "object", "required": ["inputs"], "properties": {"inputs": {"type": "object"}}},
    "tokenize": {"type": "object", "required": ["inputs"], "properties": {"inputs": _STRINGS}},
    "embeddings": {"type": "object", "required": ["input"], "properties": {
        "input": _STRINGS, "model": {"type": "string"}, "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer"}}},
    "": {"type": "object", "properties": {"inputs": _STRINGS}},
}


def _dialect(path: str) -> str:
    from .app import dialect_for  # noqa: PLC0415 - app imports this module to serve the description

    return dialect_for(path)


def _body_for(path: str) -> dict[str, Any] | None:
    parts = [part for part in path.split("/") if part and not part.startswith("{")]
    for part in reversed(parts[-1:] + parts[:1]):
        if part in _BODIES:
            return _BODIES[part]
    if path == "/" or re.fullmatch(r"/models/\{model_id\}", path):
        return _BODIES[""]
    return None


def _operation(path: str, method: str) -> dict[str, Any]:
    dialect = _dialect(path)
    error = {"description": f"an error, in the {dialect} dialect",
             "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{dialect}_error"}}}}
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_') or 'root'}",
        "tags": [dialect],
        "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                       for name in re.findall(r"\{([a-z_]+)\}", path)],
        "responses": {"200": {"description": "the answer"}, "4XX": error, "default": error},
    }
    body = _body_for(path) if method in ("POST", "PUT") else None
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return operation


def build_openapi(routes: Iterable[tuple[str, list[str], Handler]]) -> dict[str, Any]:
    """The OpenAPI document for ``routes`` (path template, methods, handler)."""
    paths: dict[str, dict[str, Any]] = {}
    for path, methods, _handler in routes:
        for method in methods:
            if method != "HEAD":
                paths.setdefault(path, {})[method.lower()] = _operation(path, method)
    return {
        "openapi": "3.0.3",
        "info": {"title": "engine serve", "version": "1",
                 "description": "Elasticsearch ML inference, Text Embeddings Inference and OpenAI embeddings on one server."},
        "paths": paths,
        "components": {
            "schemas": {f"{dialect}_error": schema for dialect, schema in _ERRORS.items()},
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "Authorization"}},
        },
        "security": [{"apiKey": []}],
    }
