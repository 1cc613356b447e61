"""schemathesis against a live ``engine serve`` on loopback: every operation ``/openapi.json`` describes
gets generated requests (bodies, path and query parameters per the schema, bounded by
``MAX_EXAMPLES``); no answer may be a 5xx, and every 4xx must be the route's dialect's error shape
(fuzz/http_shapes.py). The models are tiny BERTs built at test time (tests/server/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fuzz.http_shapes import error_shape_problem
from tests.server.conftest import API_KEY, ServerProcess, _tiny, start_server, stop_server

schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis: pip install -e .[test]")
from hypothesis import HealthCheck, given, settings  # noqa: E402 - after the skip above

MAX_EXAMPLES = 6
AUTH = {"Authorization": f"ApiKey {API_KEY}"}
SEEN: dict[str, int] = {"cases": 0}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory, sts_package: Path, sst2_package: Path,
                ner_package: Path) -> Iterator[ServerProcess]:
    embedding = _tiny("text_embedding", tmp_path_factory)
    running = start_server([
        "--model", f"emb={embedding}", "--model", f"sts={sts_package}", "--model", f"sst2={sst2_package}",
        "--model", f"ner={ner_package}", "--default-model", "emb", "--api-key", API_KEY,
        "--max-body-bytes", "100000", "--max-docs-per-request", "16",
    ], tmp_path_factory.mktemp("schemathesis") / "server.log")
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def api_schema(live_server: ServerProcess) -> Any:
    return schemathesis.openapi.from_url(f"{live_server.url}/openapi.json", headers=AUTH)


def test_the_description_lists_every_dialect(live_server: ServerProcess) -> None:
    document = httpx.get(f"{live_server.url}/openapi.json", headers=AUTH, timeout=30).json()
    paths = document["paths"]
    for path in ("/_ml/trained_models/{model_id}/_infer", "/_inference/{first}/{second}", "/embed", "/rerank",
                 "/v1/embeddings", "/models/{model_id}/embed", "/openapi.json", "/metrics"):
        assert path in paths, path
    assert document["openapi"].startswith("3.")


def _check(case: Any) -> None:
    response = case.call(headers=AUTH, timeout=60)
    SEEN["cases"] += 1
    SEEN[f"{response.status_code // 100}xx"] = SEEN.get(f"{response.status_code // 100}xx", 0) + 1
    path = case.formatted_path
    assert response.status_code < 500, f"{case.method} {path}: {response.status_code} {response.text[:500]}"
    if 400 <= response.status_code < 500 and case.method != "HEAD":
        problem = error_shape_problem(path, response.status_code, response.json())
        assert problem is None, f"{case.method} {path}: {problem}"


def test_no_generated_request_gets_a_5xx_and_every_4xx_is_in_dialect(api_schema: Any) -> None:
    # schemathesis.pytest.from_fixture does not run on this pytest; each operation's strategy runs
    # through hypothesis directly instead, MAX_EXAMPLES cases each, derandomised (the same cases each run).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:
        run = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                       suppress_health_check=list(HealthCheck))(given(operation.as_strategy())(_check))
        run()
    print(f"schemathesis: {len(operations)} operations, {SEEN}")  # the count bench/RESULTS.md records
    assert SEEN["cases"] >= len(operations)
