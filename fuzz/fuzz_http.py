"""atheris harness for ``engine serve``'s request handling, called in-process through ASGI (no socket):
methods, paths (every route template of the three dialects, ids filled with odd text), query strings
(the ``_start``/stats parameter names with Elasticsearch time values, byte sizes, ints and booleans,
valid and not), headers, and bodies (raw bytes, or JSON built from the fields the handlers read,
with values of every JSON type). Also the scalar parsers of engine.units directly.

A finding is any 5xx answer, an exception escaping the app, a 4xx whose body is not the dialect's
error shape (fuzz/http_shapes.py), or a unit parser raising anything but InvalidInput.

With ``FUZZ_PACKAGES=id=DIR[,id=DIR...]`` the state boots those packages (real deployments), so
bodies reach the tasks; without it the registry is empty and the parsers in front of it are fuzzed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from typing import Any

import atheris

# Coverage from the engine's own modules (the server, units, config, scheduler): instrumenting every
# loaded module (atheris.instrument_all) takes minutes with Starlette and ONNX Runtime loaded.
with atheris.instrument_imports():
    from engine import units
    from engine.errors import InvalidInput
    from engine.server import app as app_module
    from engine.server.es_schemas import parse_start_params
    from engine.server.settings import ServerConfig
    from engine.server.state import ServerState

from fuzz.http_shapes import error_shape_problem

METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]
TEMPLATES = sorted({path for path, _methods, _handler in app_module.ROUTES}) + ["/health", "/nothing/here"]
QUERY_KEYS = ["timeout", "wait_for", "number_of_allocations", "threads_per_allocation", "queue_capacity",
              "cache_size", "priority", "deployment_id", "adaptive_allocations", "force", "allow_no_match",
              "from", "size", "model_threads", "inference_threads", "format", "model", "pretty"]
BODY_KEYS = ["docs", "text_field", "inference_config", "input", "inputs", "texts", "query", "top_n", "top_k",
             "return_documents", "return_text", "task_settings", "service_settings", "service", "truncate",
             "truncation_direction", "normalize", "raw_scores", "model", "encoding_format", "dimensions",
             "location", "description", "tags", "metadata", "prefix_strings", "number_of_allocations",
             "num_threads", "model_id", "timeout", "ner", "text_embedding", "fill_mask", "question_answering",
             "zero_shot_classification", "labels", "multi_label", "num_top_classes", "results_field",
             "tokenization", "span", "max_sequence_length", "question", "max_answer_length", "adaptive_allocations",
             "enabled", "min_number_of_allocations", "max_number_of_allocations", "function_to_apply",
             "add_special_tokens", "input_type", "chunking_settings"]
SCALARS = ["10s", "1.5m", "-1", "0", "0s", "1ms", "30nanos", "1e400s", "abc", "", "true", "false", "yes", "1",
           "-0", "9223372036854775808", "NaN", "Infinity", "10mb", "0b", "1.5gb", "-1b", "1pb", "100000",
           "100001", "normal", "low", "started", "fully_allocated", "m", "m*", "*", "_all", "..", "\u0000",
           "\ud800", "é", "\U0001f600" * 3, "1" * 400]
ID_CHOICES = ["m", "m2", "*", "_all", "m,m2", "", "..", "a/b", "%2e%2e", "text_embedding", "rerank",
              "sparse_embedding", "completion", "x" * 300, "É", "_stats"]


def _scalar(fdp: atheris.FuzzedDataProvider) -> str:
    return fdp.PickValueInList(SCALARS) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))


def _json_value(fdp: atheris.FuzzedDataProvider, depth: int) -> Any:
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 4 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.PickValueInList([0, 1, -1, 2, 3, 512, 10**6, 2**31, 2**63, -(2**63), 10**30])
    if kind == 3:
        return fdp.ConsumeFloat()
    if kind in (4, 5, 6):
        return _scalar(fdp) if kind != 6 else fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 64))
    if kind in (7, 8):
        return {_key(fdp): _json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 5))}
    return [_json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 5))]


def _key(fdp: atheris.FuzzedDataProvider) -> str:
    return fdp.PickValueInList(BODY_KEYS) if fdp.ConsumeIntInRange(0, 7) else fdp.ConsumeUnicodeNoSurrogates(8)


def _path(fdp: atheris.FuzzedDataProvider) -> str:
    def filler(_match: re.Match[str]) -> str:
        return fdp.PickValueInList(ID_CHOICES) if fdp.ConsumeIntInRange(0, 3) else fdp.ConsumeUnicodeNoSurrogates(12)
    return re.sub(r"\{[a-z_]+\}", filler, fdp.PickValueInList(TEMPLATES))


def _query(fdp: atheris.FuzzedDataProvider) -> bytes:
    from urllib.parse import quote

    pairs = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        key = fdp.PickValueInList(QUERY_KEYS) if fdp.ConsumeIntInRange(0, 5) else fdp.ConsumeUnicodeNoSurrogates(6)
        pairs.append(f"{quote(key, errors='surrogatepass')}={quote(_scalar(fdp), safe='', errors='surrogatepass')}")
    return "&".join(pairs).encode()


def _body(fdp: atheris.FuzzedDataProvider) -> bytes:
    pick = fdp.ConsumeIntInRange(0, 5)
    if pick == 0:
        return b""
    if pick == 1:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
    value = _json_value(fdp, 0) if pick == 2 else {_key(fdp): _json_value(fdp, 1) for _ in range(fdp.ConsumeIntInRange(1, 5))}
    return json.dumps(value, ensure_ascii=fdp.ConsumeBool()).encode("utf-8", "surrogatepass")


class Harness:
    """One app and one event loop for the whole run; each input is one request."""

    def __init__(self) -> None:
        packages = dict(item.split("=", 1) for item in os.environ.get("FUZZ_PACKAGES", "").split(",") if item)
        self.state = ServerState(ServerConfig(models=packages, max_body_bytes=1 << 16, default_timeout_s=5.0))
        if packages:
            self.state.boot(lambda model_id, settings: parse_start_params(model_id, settings, 1, 64))
        self.app = app_module.create_app(self.state)
        self.loop = asyncio.new_event_loop()

    def request(self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
                ) -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []
        chunks = [body]

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": chunks.pop() if chunks else b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode("utf-8", "surrogatepass"),
                 "query_string": query, "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 9200), "state": {}}
        self.loop.run_until_complete(self.app(scope, receive, send))
        status = next(message["status"] for message in sent if message["type"] == "http.response.start")
        return status, b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")

    def one(self, data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        if fdp.ConsumeIntInRange(0, 7) == 0:
            self.units(fdp)
            return
        method, path, query, body = fdp.PickValueInList(METHODS), _path(fdp), _query(fdp), _body(fdp)
        headers = [(b"content-type", fdp.PickValueInList([b"application/json", b"text/plain", b"application/x-ndjson"])),
                   (b"content-length", str(len(body)).encode())]
        status, raw = self.request(method, path, query, headers, body)
        if status >= 500:
            raise AssertionError(f"{method} {path}?{query!r} {body[:200]!r} answered {status}: {raw[:400]!r}")
        if 400 <= status < 500 and method != "HEAD":
            try:
                answer = json.loads(raw)
            except ValueError as error:
                raise AssertionError(f"{method} {path}?{query!r} answered {status} with no JSON: {raw[:300]!r}") from error
            problem = error_shape_problem(path, status, answer)
            if problem:
                raise AssertionError(f"{method} {path}?{query!r}: {problem}")

    @staticmethod
    def units(fdp: atheris.FuzzedDataProvider) -> None:
        value: Any = _scalar(fdp) if fdp.ConsumeBool() else _json_value(fdp, 3)
        parser = fdp.PickValueInList([
            lambda v: units.parse_time_value(v, "timeout"), lambda v: units.parse_byte_size(v),
            lambda v: units.parse_int(v, "n"), lambda v: units.parse_int(v, "n", strict=True),
            lambda v: units.parse_bool(v, "b"), lambda v: units.parse_bool(v, "b", strict=True),
        ])
        try:
            parsed = parser(value)
        except InvalidInput:
            return
        if isinstance(parsed, float) and parsed == parsed and parsed >= 0:
            units.format_time_value(parsed)


def main(argv: list[str]) -> None:
    harness = Harness()
    atheris.Setup(argv, harness.one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
