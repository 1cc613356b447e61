"""The OpenAI routes of ``engine serve``: ``POST /v1/embeddings`` (also ``/embeddings``) and
``GET /v1/models``, for OpenAI clients pointed at this server's ``base_url``. The request checks are
OpenAI's shapes with our messages (four fields, hand-written for the reason :mod:`.tei` gives); errors
come back in OpenAI's error object.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from starlette.requests import Request

from ..errors import InvalidInput
from ..units import parse_int
from .wire import (
    Route,
    engine_state,
    infer_with_usage,
    parse_text_inputs,
    read_body,
    require_object,
    results_value,
)


def parse_openai_embeddings(body: Any, max_docs: int) -> dict[str, Any]:
    """``POST /v1/embeddings``: ``input`` (string or list of strings), ``model``, ``encoding_format``
    (``float``/``base64``), ``dimensions``, ``user``."""
    body = require_object(body)
    inputs, _ = parse_text_inputs(body.get("input"), max_docs, name="input")
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
         "embedding": encode_base64(vector) if encoding == "base64" else np.asarray(vector, dtype=np.float64).tolist()}
        for index, vector in enumerate(vectors)
    ]
    total = int(sum(token_counts))
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": total, "total_tokens": total}}


async def openai_embeddings(request: Request) -> Any:
    state = engine_state(request)
    parsed = parse_openai_embeddings(await read_body(request), state.config.max_docs_per_request)
    entry = state.default_deployment(parsed["model"], ("text_embedding",))
    size = entry.model.manifest.embedding_size
    if parsed["dimensions"] is not None and parsed["dimensions"] != size:
        raise InvalidInput(
            f"[dimensions] must be the model's embedding size [{size}]; this model cannot shorten its embeddings"
        )
    results, counts = await infer_with_usage(request, entry, parsed["inputs"])
    vectors = [results_value(result) for result in results]
    return build_openai_embeddings(vectors, parsed["model"] or entry.deployment_id, parsed["encoding_format"],
                                   counts)


async def openai_models(request: Request) -> Any:
    state = engine_state(request)
    created = int(state.started_at)
    ids = [entry.deployment_id for entry in state.deployments()
           if entry.model.manifest.task == "text_embedding"]
    return {"object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "engine"} for name in ids]}


ROUTES: tuple[Route, ...] = (
    ("/v1/embeddings", ["POST"], openai_embeddings),
    ("/embeddings", ["POST"], openai_embeddings),
    ("/v1/models", ["GET"], openai_models),
)
