"""The Text Embeddings Inference routes of ``engine serve``: ``/embed``, ``/embed_sparse``, ``/rerank``,
``/predict``, ``/similarity``, ``/tokenize``, ``/info``, ``/health``, and ``POST /`` (and
``/models/<id>``) as the Hugging Face Inference API posts to a model URL.

TEI routes use the deployment named by the path (every route also exists under ``/models/<id>``:
``/models/<id>/embed``, ``/models/<id>/rerank``, ..., so a TEI client can address one of several models
by its base URL) or by ``model`` in the body; else ``--default-model``; else the only started deployment
of the kind TEI itself would serve on that route: ``/``, ``/embed``, ``/similarity``, ``/tokenize`` and
``/info`` embedding models (``/`` and ``/embed_sparse`` SPLADE ones too), ``/predict`` sequence
classifiers, ``/rerank`` cross-encoders. A named model may be any task the route can answer (``/predict``
also scores pairs on a cross-encoder). Unlike TEI, inputs over the
model's length are truncated unless the request says ``truncate: false`` (``--no-auto-truncate``
restores TEI's default), because Elasticsearch truncates and its ``hugging_face`` service sends no
flag. ``/embed_sparse?format=tokens`` answers ``{token: weight}`` per input, the form
Elasticsearch's ``hugging_face`` sparse service reads.

The request checks here are hand-written although no Elasticsearch message is at stake: they are a few
unions (a string, a pair, or a batch of either) plus the server's limits, and TEI's error contract is
the status and ``error_type`` (its messages are serde's), so a schema library would add a dependency
to the ``server`` extra without making an answer more compatible.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from .. import __version__
from ..errors import InvalidInput, ModelError
from ..units import parse_bool, parse_int
from .settings import ServerConfig
from .state import DeploymentEntry, ServerState
from .wire import (
    JSON,
    Handler,
    Route,
    check_doc_count,
    engine_state,
    infer,
    parse_text_inputs,
    positive_or_none,
    rank,
    read_body,
    require_object,
    results_value,
)


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


def sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


def normalized(vector: Sequence[float]) -> list[float]:
    """The vector at unit length (as it is when its norm is 0), in float64, done in numpy: a Python loop
    over 384 floats costs more than encoding them as JSON."""
    values = np.asarray(vector, dtype=np.float64)
    norm = math.sqrt(float(values @ values))
    return (values / norm).tolist() if norm > 0 else values.tolist()


def build_tei_info(item: DeploymentEntry, config: ServerConfig, version: str) -> dict[str, Any]:
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


Serve = Callable[[Request, ServerState, DeploymentEntry, Mapping[str, Any]], Awaitable[Any]]


# The kinds of model each route picks when the request names none (what TEI would serve there), and
# the ones it answers for when named.
EMBEDDING = ("text_embedding",)
SPARSE = ("text_expansion",)
CLASSIFIER = ("text_classification",)
CROSS_ENCODER = ("text_similarity",)
TEI_TASKS = (*EMBEDDING, *SPARSE, *CLASSIFIER, *CROSS_ENCODER)


def model_name(request: Request, body: Mapping[str, Any] | None = None) -> str | None:
    """The model a TEI request names: ``/models/<id>/...`` first, then ``model`` in the body (or the query)."""
    named = request.path_params.get("model_id")
    if named:
        return str(named)
    if body is not None and body.get("model"):
        return str(body["model"])
    return request.query_params.get("model")


def on_model(tasks: tuple[str, ...], serve: Serve, accepted: tuple[str, ...] | None = None) -> Handler:
    """A TEI route: read the body, pick the deployment (the named one, which must be of ``accepted``
    (default ``tasks``), else the default one of ``tasks``)."""

    async def handler(request: Request) -> Any:
        state = engine_state(request)
        body = tei_body(await read_body(request))
        return await serve(request, state, state.default_deployment(model_name(request, body), tasks, accepted),
                           body)

    return handler


async def _embed(request: Request, state: ServerState, entry: DeploymentEntry, body: Mapping[str, Any]) -> Any:
    texts, _ = parse_text_inputs(body.get("inputs"), state.config.max_docs_per_request)
    normalize = parse_bool(body.get("normalize", True), "normalize")
    dimensions = body.get("dimensions")
    size = entry.model.manifest.embedding_size
    if dimensions is not None and parse_int(dimensions, "dimensions") != size:
        raise InvalidInput(f"[dimensions] must be the model's embedding size [{size}]; got [{dimensions}]")
    results = await infer(request, entry, texts, None, **tei_tokenization(body, state.config.auto_truncate))
    vectors = [results_value(result) for result in results]
    return [normalized(vector) if normalize else np.asarray(vector, dtype=np.float64).tolist() for vector in vectors]


async def _embed_sparse(request: Request, state: ServerState, entry: DeploymentEntry,
                        body: Mapping[str, Any]) -> Any:
    texts, _ = parse_text_inputs(body.get("inputs"), state.config.max_docs_per_request)
    results = await infer(request, entry, texts, None, **tei_tokenization(body, state.config.auto_truncate))
    weights = [results_value(result) for result in results]
    # ?format=tokens answers {token: weight} per input: what Elasticsearch's hugging_face_elser service reads.
    if request.query_params.get("format") == "tokens":
        return [{token: float(weight) for token, weight in item.items()} for item in weights]
    ids = await run_in_threadpool(entry.sparse_keys)  # first call walks the vocabulary
    return [[{"index": ids[token], "value": float(weight)} for token, weight in item.items() if token in ids]
            for item in weights]


async def _rerank(request: Request, state: ServerState, entry: DeploymentEntry, body: Mapping[str, Any]) -> Any:
    query = body.get("query")
    if not isinstance(query, str) or not query:
        raise InvalidInput("[query] must be a non-empty string")
    texts, _ = parse_text_inputs(body.get("texts"), state.config.max_docs_per_request, name="texts")
    raw_scores = parse_bool(body.get("raw_scores", False), "raw_scores")
    return_text = parse_bool(body.get("return_text", body.get("return_documents", False)), "return_text")
    top_n = positive_or_none(body.get("top_n"), "top_n")
    results = await infer(request, entry, texts, None, text=query,
                          **tei_tokenization(body, state.config.auto_truncate))
    return rank(results, texts, top_n, return_text, score_key="score", text_key="text",
                transform=None if raw_scores else sigmoid)


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


async def _similarity(request: Request, state: ServerState, entry: DeploymentEntry,
                      body: Mapping[str, Any]) -> Any:
    inputs = require_object(body.get("inputs"), "[inputs]")
    source = inputs.get("source_sentence")
    sentences = inputs.get("sentences")
    if not isinstance(source, str):
        raise InvalidInput("[inputs.source_sentence] must be a string")
    texts, _ = parse_text_inputs(sentences, state.config.max_docs_per_request, name="sentences")
    results = await infer(request, entry, [source, *texts], None,
                          **tei_tokenization(body, state.config.auto_truncate))
    vectors = [normalized(results_value(result)) for result in results]
    return [sum(a * b for a, b in zip(vectors[0], vector, strict=True)) for vector in vectors[1:]]


async def _tokenize(request: Request, state: ServerState, entry: DeploymentEntry, body: Mapping[str, Any]) -> Any:
    texts, single = parse_text_inputs(body.get("inputs"), state.config.max_docs_per_request)
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
    entry = state.default_deployment(model_name(request), EMBEDDING, TEI_TASKS)
    return build_tei_info(entry, state.config, __version__)


async def health(request: Request) -> Any:
    """``/health``: every deployment started; ``/models/<id>/health``: that one."""
    state = engine_state(request)
    named = model_name(request)
    entries = [state.resolve(named)] if named else state.deployments()
    failed = [entry.deployment_id for entry in entries if entry.deployment.state != "started"]
    if failed:
        return JSON({"status": "unhealthy", "deployments_not_started": failed}, status_code=503)
    return {"status": "ok", "deployments": len(entries)}


async def tei_root(request: Request) -> Any:
    """``POST /`` and ``POST /models/<id>``: the Hugging Face Inference API posts every task to the
    model URL; dispatch on the body shape (``source_sentence`` → similarity) and the deployment's task.
    ``/models/<id>`` (the Inference API's own URL form) names the model or deployment."""
    state = engine_state(request)
    body = tei_body(await read_body(request))
    name = model_name(request, body)
    inputs = body.get("inputs")
    if isinstance(inputs, dict) and "source_sentence" in inputs:
        return await _similarity(request, state, state.default_deployment(name, EMBEDDING), body)
    entry = state.default_deployment(name, (*EMBEDDING, *SPARSE), TEI_TASKS)
    task = entry.model.manifest.task
    if task == "text_embedding":
        return await _embed(request, state, entry, body)
    if task == "text_expansion":
        return await _embed_sparse(request, state, entry, body)
    if task in ("text_classification", "text_similarity"):
        return await _predict(request, state, entry, body, wrap_single=True)
    raise ModelError(f"POST / serves embedding, sparse and classification models; [{entry.deployment_id}] is "
                     f"[{task}]: use _ml/trained_models/{entry.deployment_id}/_infer")


BASE_ROUTES: tuple[Route, ...] = (
    ("/", ["POST"], tei_root),
    ("/embed", ["POST"], on_model(EMBEDDING, _embed)),
    ("/embed_sparse", ["POST"], on_model(SPARSE, _embed_sparse)),
    ("/rerank", ["POST"], on_model(CROSS_ENCODER, _rerank)),
    ("/predict", ["POST"], on_model(CLASSIFIER, _predict, (*CLASSIFIER, *CROSS_ENCODER))),
    ("/similarity", ["POST"], on_model(EMBEDDING, _similarity)),
    ("/tokenize", ["POST"], on_model(EMBEDDING, _tokenize, TEI_TASKS)),
    ("/info", ["GET"], tei_info),
    ("/health", ["GET"], health),
)
MODEL_PREFIX = "/models/{model_id}"
# Every route again under /models/<id> (``/`` becomes the Inference API's model URL ``/models/<id>``).
ROUTES: tuple[Route, ...] = (
    *BASE_ROUTES,
    *((MODEL_PREFIX + ("" if path == "/" else path), methods, handler) for path, methods, handler in BASE_ROUTES),
)
