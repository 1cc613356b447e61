"""What every dialect of ``engine serve`` does with a request: read and decode the body, check
counts and shapes common to all three APIs, run texts on a deployment (recording the metrics), and
read the main value out of a result.

Dialect modules (elasticsearch, tei, openai) build on this and on :mod:`engine.server.state`; this
module knows no dialect's field names beyond the generic ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import InferenceTimeout, InvalidInput, MalformedBody, PayloadTooLarge, QueueFull
from ..units import parse_int
from .state import DeploymentEntry, ServerState

if TYPE_CHECKING:
    from ..metrics import ServerMetrics

Handler = Callable[[Request], Awaitable[Any]]
# (path template, methods, handler): what each dialect module lists in its ROUTES.
Route = tuple[str, list[str], Handler]
T = TypeVar("T")


class JSON(JSONResponse):
    """Every JSON response of the server, rendered by orjson: the body of a one-query embedding
    request is 384 floats or more, which the standard library's encoder formats in ~0.3-0.7 ms
    (more than the rest of the server's work on that request) and orjson in ~0.06 ms, to the same
    bytes. numpy arrays and scalars serialise as their values; a non-finite float becomes null."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


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


def engine_state(request: Request) -> ServerState:
    """The registries this app serves."""
    return request.app.state.engine


async def infer(request: Request, entry: DeploymentEntry, texts: list[str], timeout: float | None,
                priority: str = "normal", **config: Any) -> list[dict[str, Any]]:
    """Run texts on a deployment, recording the outcome, document count and latency metrics."""
    return await _recorded(request, entry, len(texts),
                           entry.deployment.ainfer(texts, timeout=timeout, priority=priority, **config))


async def infer_with_usage(request: Request, entry: DeploymentEntry,
                           texts: list[str]) -> tuple[list[dict[str, Any]], list[int]]:
    """``infer``, and the tokens each text ran as (OpenAI's ``usage``): from the deployment's own
    tokenisation where the backend reports it (``ainfer_with_usage``), else by tokenising again."""
    reporting = getattr(entry.deployment, "ainfer_with_usage", None)
    if reporting is not None:
        return await _recorded(request, entry, len(texts), reporting(texts, timeout=None))
    results = await infer(request, entry, texts, None)
    tokenizer = entry.deployment.package.tokenizer
    truncate = entry.model.manifest.tokenization.truncate

    def count() -> list[int]:
        return [sum(len(window.input_ids) for window in tokenizer.single(text, truncate, -1).windows)
                for text in texts]

    return results, await run_in_threadpool(count)


async def _recorded(request: Request, entry: DeploymentEntry, n_texts: int, call: Awaitable[T]) -> T:
    """Await a deployment call, recording its outcome, document count and latency metrics."""
    metrics: ServerMetrics = request.app.state.metrics
    request.scope["engine.deployment"] = entry.deployment_id
    request.scope["engine.docs"] = n_texts
    metrics.record_documents(entry.deployment_id, n_texts)
    started = time.perf_counter()
    outcome = "error"
    try:
        results = await call
        outcome = "ok"
        return results
    except QueueFull:
        outcome = "rejected"
        raise
    except InferenceTimeout:
        outcome = "timeout"
        raise
    finally:
        metrics.record_inference(entry.deployment_id, outcome, time.perf_counter() - started)


def check_doc_count(count: int, max_docs: int) -> None:
    if count > max_docs:
        raise InvalidInput(
            f"request has [{count}] documents; this server accepts at most [{max_docs}] per request "
            "(max_docs_per_request)"
        )


def parse_text_inputs(value: Any, max_docs: int, name: str = "inputs") -> tuple[list[str], bool]:
    """TEI's ``inputs`` and OpenAI's ``input``: a string or a list of strings. Returns the texts and whether it was one string."""
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"[{name}] must be a string or a non-empty list of strings")
    check_doc_count(len(value), max_docs)
    return list(value), False


def positive_or_none(value: Any, name: str) -> int | None:
    """An optional count such as ``top_n``: None, or an integer of at least 1."""
    if value is None:
        return None
    number = parse_int(value, name)
    if number < 1:
        raise InvalidInput(f"[{name}] must be a positive integer; got [{value}]")
    return number


def results_value(result: Mapping[str, Any]) -> Any:
    """The main value of an ``_infer`` result, whatever its ``results_field`` is called."""
    if "predicted_value" in result:
        return result["predicted_value"]
    for key, value in result.items():
        if key not in ("is_truncated", "top_classes", "prediction_probability"):
            return value
    raise InvalidInput("the model returned no value")


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
