"""What an error answer of ``engine serve`` must look like in each dialect, for the HTTP fuzz harness
and the schemathesis run (tests/server/test_openapi_schemathesis.py): Elasticsearch
``{"error": {"root_cause": [...], "type", "reason"}, "status"}``, TEI ``{"error", "error_type"}``,
OpenAI ``{"error": {"message", "type", "param", "code"}}``. The dialect follows the path, as in
engine.server.app.dialect_for."""

from __future__ import annotations

from typing import Any

from engine.server.app import dialect_for


def error_shape_problem(path: str, status: int, body: Any) -> str | None:
    """None when ``body`` is a well-formed error of ``path``'s dialect with ``status``, else what is wrong."""
    dialect = dialect_for(path)
    if not isinstance(body, dict) or "error" not in body:
        return f"{dialect} error body without [error]: {body!r:.200}"
    error = body["error"]
    if dialect == "tei":
        ok = isinstance(error, str) and isinstance(body.get("error_type"), str)
    elif dialect == "openai":
        ok = isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str) \
            and error.get("code") == status
    else:
        ok = isinstance(error, dict) and isinstance(error.get("type"), str) and isinstance(error.get("reason"), str) \
            and isinstance(error.get("root_cause"), list) and body.get("status") == status
    return None if ok else f"{dialect} error body of the wrong shape for {status}: {body!r:.200}"
