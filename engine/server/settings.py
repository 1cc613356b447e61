"""The settings of one ``engine serve`` process: JSON config file keys, CLI flags and ENGINE_* variables
(flags > variables > file > these defaults; :mod:`engine.server.cli` merges them)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InvalidInput

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9200
# Elasticsearch's default http.max_content_length is 100mb; an inference server's requests are text,
# so 16 MiB keeps a single client from making the server buffer gigabytes while fitting any real batch.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_DOCS = 1024
DEFAULT_INFER_TIMEOUT_S = 10.0            # Elasticsearch's _infer default (ELASTIC_REFERENCE.md §3)
DEFAULT_QUEUE_CAPACITY = 10000            # Elasticsearch's DEFAULT_QUEUE_CAPACITY (§6.1)
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0


@dataclasses.dataclass
class ServerConfig:
    """Settings of one ``engine serve`` process: JSON config file keys, CLI flags and ENGINE_* variables.

    Attributes:
        host: interface to bind; loopback unless the operator says otherwise.
        port: TCP port (9200, Elasticsearch's, so clients need no change but the host).
        api_key: when set, every route but ``/health`` needs ``Authorization: ApiKey <key>`` or
            ``Bearer <key>`` (ApiKey may also be base64 of ``id:key``, as Elasticsearch issues them).
        models: ``model_id`` → package directory, registered (and started) at boot.
        deployments: ``_start`` parameter objects (each with ``model_id``) started at boot instead of
            one default deployment per model.
        default_model: the model or deployment the TEI and OpenAI routes use when several are started.
        max_body_bytes: larger request bodies get 413.
        max_docs_per_request: more documents/inputs in one request get 400.
        default_timeout_s: ``_infer`` timeout when the request gives none.
        auto_truncate: TEI routes truncate long inputs unless the request says ``truncate: false``
            (Elasticsearch truncates by default, and its ``hugging_face`` service sends no flag).
        allow_registration: accept ``PUT _ml/trained_models/<id>`` with a package location.
        model_roots: when non-empty, registered package locations must lie under one of these.
        threads_per_allocation / queue_capacity: defaults for deployments started at boot.
        shutdown_timeout_s: how long shutdown waits for deployments to drain.
        access_log: one JSON line per request on the ``engine.access`` logger.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    models: dict[str, str] = dataclasses.field(default_factory=dict)
    deployments: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    default_model: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_docs_per_request: int = DEFAULT_MAX_DOCS
    default_timeout_s: float = DEFAULT_INFER_TIMEOUT_S
    auto_truncate: bool = True
    allow_registration: bool = True
    model_roots: list[str] = dataclasses.field(default_factory=list)
    threads_per_allocation: int = 1
    queue_capacity: int = DEFAULT_QUEUE_CAPACITY
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S
    access_log: bool = True

    def __post_init__(self) -> None:
        for name in ("port", "max_body_bytes", "max_docs_per_request", "threads_per_allocation", "queue_capacity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "port" else 1):
                raise InvalidInput(f"server setting [{name}] must be a positive integer; got [{value!r}]")
        if not isinstance(self.models, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in self.models.items()
        ):
            raise InvalidInput("server setting [models] must map model ids to package directories")
        if not isinstance(self.deployments, list) or not all(
            isinstance(item, dict) and isinstance(item.get("model_id"), str) for item in self.deployments
        ):
            raise InvalidInput("server setting [deployments] must be a list of objects with a [model_id]")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ServerConfig:
        """Read a JSON config file whose keys are this class's fields.

        Raises:
            InvalidInput: unreadable file, not a JSON object, unknown keys or bad values.
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise InvalidInput(f"cannot read server config [{path}]: {error}") from error
        if not isinstance(data, dict):
            raise InvalidInput(f"server config [{path}] must hold a JSON object")
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ServerConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(f"unknown server settings {unknown}; known settings are {sorted(known)}")
        return cls(**dict(data))
