"""In-process checks of the server's pure parts: Prometheus text, request parsing, auth, errors."""

from __future__ import annotations

import base64
import itertools
import json
import re
import struct
from pathlib import Path

import pytest

from engine.errors import (
    ExportError,
    InvalidInput,
    MalformedBody,
    ModelError,
    NotDeployed,
    QueueFull,
    ResourceNotFound,
)
from engine.metrics import ServerMetrics
from engine.server.app import HOT_PATHS, _group_routes, api_key_matches, dialect_for, error_body
from engine.server.cli import add_serve_parser, build_config
from engine.server.es_schemas import parse_endpoint_body, parse_infer_body, parse_start_params
from engine.server.openai import build_openai_embeddings
from engine.server.settings import ServerConfig
from engine.server.state import ServerState, matches, split_task
from engine.server.tei import sigmoid, tei_tokenization
from engine.server.wire import parse_json, rank
from engine.server.wire import parse_text_inputs as parse_tei_inputs
from engine.units import parse_byte_size, parse_time_value


class StatsOnly:
    """A deployment as the metrics see it: only ``stats()``."""

    def __init__(self, pending: int) -> None:
        self.pending = pending

    def stats(self) -> dict[str, int]:
        return {"number_of_pending_requests": self.pending, "number_of_allocations": 2, "inference_count": 7}


def test_prometheus_exposition() -> None:
    metrics = ServerMetrics(lambda: [("minilm", StatsOnly(3)), ('a"b', StatsOnly(0))])
    for _ in range(3):
        metrics.record_request("/embed", "POST", 200)
    metrics.record_documents("minilm", 5)
    for seconds in (0.05, 0.5, 5.0):
        metrics.record_inference("minilm", "ok", seconds)
    metrics.record_inference("minilm", "rejected", 0.001)
    body, content_type = metrics.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert "# TYPE engine_http_requests_total counter" in text
    assert 'engine_http_requests_total{method="POST",route="/embed",status="200"} 3.0' in text
    assert 'engine_inference_requests_total{deployment="minilm",outcome="ok"} 3.0' in text
    assert 'engine_inference_requests_total{deployment="minilm",outcome="rejected"} 1.0' in text
    assert 'engine_inference_documents_total{deployment="minilm"} 5.0' in text
    assert 'engine_inference_duration_seconds_bucket{deployment="minilm",le="0.1"} 2.0' in text
    assert 'engine_inference_duration_seconds_bucket{deployment="minilm",le="1.0"} 3.0' in text
    assert 'engine_inference_duration_seconds_bucket{deployment="minilm",le="+Inf"} 4.0' in text
    assert 'engine_inference_duration_seconds_count{deployment="minilm"} 4.0' in text
    assert 'engine_deployment_queue_depth{deployment="minilm"} 3.0' in text
    assert 'engine_deployment_queue_depth{deployment="a\\"b"} 0.0' in text
    assert 'engine_deployment_allocations{deployment="minilm"} 2.0' in text
    openmetrics, kind = metrics.render("application/openmetrics-text; version=1.0.0")
    assert kind.startswith("application/openmetrics-text") and openmetrics.decode().endswith("# EOF\n")


@pytest.mark.parametrize(("value", "seconds"), [("10s", 10.0), ("500ms", 0.5), ("1m", 60.0), ("-1", None),
                                                (-1, None), ("2h", 7200.0)])
def test_time_values(value: object, seconds: float | None) -> None:
    assert parse_time_value(value, "timeout") == seconds


@pytest.mark.parametrize("value", ["10", "ten s", 5, "1y"])
def test_bad_time_values(value: object) -> None:
    with pytest.raises(InvalidInput, match="as a time value"):
        parse_time_value(value, "timeout")


def test_byte_sizes() -> None:
    assert parse_byte_size("0b", "cache_size") == 0
    assert parse_byte_size("10mb", "cache_size") == 10 * 1024 * 1024
    assert parse_byte_size(123, "cache_size") == 123
    with pytest.raises(InvalidInput):
        parse_byte_size("lots", "cache_size")


def test_start_params_defaults_and_legacy_names() -> None:
    params = parse_start_params("m", {"model_threads": "2", "inference_threads": "4"})
    assert (params.deployment_id, params.number_of_allocations, params.threads_per_allocation) == ("m", 2, 4)
    assert params.queue_capacity == 10000 and params.priority == "normal"
    adaptive = parse_start_params("m", {"adaptive_allocations": {"enabled": True, "min_number_of_allocations": 2,
                                                                  "max_number_of_allocations": 4}})
    assert adaptive.number_of_allocations is None
    assert adaptive.deployment_config()["adaptive_allocations"]["max_number_of_allocations"] == 4


@pytest.mark.parametrize(("params", "message"), [
    ({"number_of_allocations": "0"}, r"\[number_of_allocations\] must be a positive integer"),
    ({"threads_per_allocation": "3"}, r"must be a power of 2 less than or equal to 32"),
    ({"threads_per_allocation": "64"}, r"must be a power of 2 less than or equal to 32"),
    ({"queue_capacity": "100001"}, r"\[queue_capacity\] must be less than 100000"),
    ({"queue_capacity": "0"}, r"\[queue_capacity\] must be a positive integer"),
    ({"priority": "low", "number_of_allocations": "2"}, r"must be 1 when \[priority\] is low"),
    ({"priority": "urgent"}, r"\[priority\] must be one of"),
    ({"timeout": "soon"}, r"as a time value"),
    ({"wait_for": "never"}, r"\[wait_for\]"),
    ({"deployment_id": "Bad Id"}, r"Invalid deployment_id"),
    ({"bogus": "1"}, r"unrecognized parameters: \['bogus'\]"),
    ({"number_of_allocations": "2", "adaptive_allocations": {"enabled": True}},
     r"cannot be set if adaptive allocations is enabled"),
    ({"adaptive_allocations": {"enabled": True, "min_number_of_allocations": 3, "max_number_of_allocations": 2}},
     r"\[min_number_of_allocations\] must not be larger than \[max_number_of_allocations\]"),
    ({"adaptive_allocations": {"enabled": True, "max_number_of_allocations": 0}},
     r"\[max_number_of_allocations\] must be a positive integer"),
])
def test_start_params_are_validated_like_elasticsearch(params: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_start_params("m", params)


def test_infer_body_messages() -> None:
    assert parse_infer_body({"docs": [{"text_field": "a"}, {"text_field": "b"}]}, 10) == (["a", "b"], None)
    with pytest.raises(InvalidInput, match=r"Input field \[text_field\] does not exist in the source document"):
        parse_infer_body({"docs": [{"text": "a"}]}, 10)
    with pytest.raises(InvalidInput, match=r"Input value \[3\] for field \[text_field\] must be a string"):
        parse_infer_body({"docs": [{"text_field": 3}]}, 10)
    with pytest.raises(InvalidInput, match="at most \\[1\\] per request"):
        parse_infer_body({"docs": [{"text_field": "a"}, {"text_field": "b"}]}, 1)
    with pytest.raises(MalformedBody):
        parse_infer_body(["not", "an", "object"], 10)


def test_malformed_json_is_a_400_class() -> None:
    with pytest.raises(MalformedBody) as caught:
        parse_json(b"{not json")
    assert caught.value.status == 400
    assert parse_json(b"  ", required=False) is None
    with pytest.raises(MalformedBody, match="request body is required"):
        parse_json(b"")


def test_error_bodies_in_each_dialect() -> None:
    error = QueueFull("inference process queue is full. Unable to execute command")
    es = error_body("es", error)
    assert es["status"] == 429
    assert es["error"]["type"] == "es_rejected_execution_exception"
    assert es["error"]["root_cause"][0]["reason"] == error.message
    assert error_body("tei", error) == {"error": error.message, "error_type": "Overloaded"}
    assert error_body("openai", NotDeployed("x"))["error"]["type"] == "conflict_error"
    assert error_body("openai", ResourceNotFound("x"))["error"]["code"] == 404
    assert [dialect_for(p) for p in ("/_ml/x", "/", "/v1/embeddings", "/embed")] == ["es", "es", "openai", "tei"]


def test_hot_paths_first_and_each_matches_only_its_own_requests() -> None:
    """The routes tried first must not take a request another route would have answered: every path a
    hot route matches (its parameters set to every literal segment of every route) matches no other."""
    routes = _group_routes()
    assert {route.path for route in routes[:len(HOT_PATHS)]} == set(HOT_PATHS)
    literals = sorted({part for route in routes for part in route.path.split("/") if part and "{" not in part})
    for hot in routes[:len(HOT_PATHS)]:
        names = re.findall(r"{(\w+)}", hot.path)
        for values in itertools.product([*literals, "my-model"], repeat=len(names)):
            path = hot.path
            for name, value in zip(names, values, strict=True):
                path = path.replace("{" + name + "}", value)
            assert hot.path_regex.match(path)
            others = [route.path for route in routes if route is not hot and route.path_regex.match(path)]
            assert others == [], f"{path} matches {hot.path} and {others}"


def test_api_key_forms() -> None:
    assert api_key_matches("ApiKey secret", "secret")
    assert api_key_matches("Bearer secret", "secret")
    encoded = base64.b64encode(b"key-id:secret").decode()
    assert api_key_matches(f"ApiKey {encoded}", "secret")
    assert not api_key_matches("ApiKey wrong", "secret")
    assert not api_key_matches("Basic secret", "secret")
    assert not api_key_matches("", "secret")


def test_tei_inputs_and_truncation() -> None:
    assert parse_tei_inputs("a", 4) == (["a"], True)
    assert parse_tei_inputs(["a", "b"], 4) == (["a", "b"], False)
    with pytest.raises(InvalidInput):
        parse_tei_inputs([], 4)
    with pytest.raises(InvalidInput):
        parse_tei_inputs(["a", 1], 4)
    assert tei_tokenization({}, True) == {"tokenization": {"truncate": "first"}}
    assert tei_tokenization({"truncate": False}, True) == {"tokenization": {"truncate": "none"}}
    with pytest.raises(InvalidInput, match="truncation_direction"):
        tei_tokenization({"truncation_direction": "Left"}, True)


def test_rank_sorts_descending_and_cuts() -> None:
    results = [{"predicted_value": 0.5}, {"predicted_value": 2.0}, {"predicted_value": -1.0}]
    ranked = rank(results, ["a", "b", "c"], 2, True, "relevance_score", "text")
    assert ranked == [{"index": 1, "text": "b", "relevance_score": 2.0}, {"index": 0, "text": "a",
                                                                         "relevance_score": 0.5}]
    tei = rank(results, ["a", "b", "c"], None, False, "score", "text", transform=sigmoid)
    assert [item["index"] for item in tei] == [1, 0, 2]
    assert tei[0]["score"] == pytest.approx(1 / (1 + 2.718281828459045 ** -2.0))


def test_openai_base64_is_little_endian_float32() -> None:
    answer = build_openai_embeddings([[1.0, -0.5]], "m", "base64", [3])
    raw = base64.b64decode(answer["data"][0]["embedding"])
    assert struct.unpack("<2f", raw) == (1.0, -0.5)
    assert answer["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_inference_endpoint_settings() -> None:
    settings, task, start, _ = parse_endpoint_body(
        "rerank", "my-rerank", {"service": "elasticsearch", "service_settings": {
            "model_id": "sts", "num_allocations": 1, "num_threads": 1}, "task_settings": {"return_documents": False}},
        1, 100)
    assert start is not None and start.deployment_id == "my-rerank"
    assert task == {"return_documents": False} and settings["model_id"] == "sts"
    with pytest.raises(InvalidInput, match="num_threads"):
        parse_endpoint_body("text_embedding", "e", {"service": "elasticsearch", "service_settings": {
            "model_id": "m", "num_allocations": 1}}, 1, 100)
    with pytest.raises(InvalidInput, match="Unknown service"):
        parse_endpoint_body("text_embedding", "e", {"service": "openai", "service_settings": {}}, 1, 100)
    with pytest.raises(InvalidInput, match="Unknown task_type"):
        parse_endpoint_body("completion", "e", {}, 1, 100)


def test_id_expressions() -> None:
    assert matches("_all", "x") and matches("a*", "abc") and matches("x,y", "y")
    assert not matches("a*", "bcd")


def test_config_precedence(tmp_path, monkeypatch) -> None:
    config = tmp_path / "server.json"
    config.write_text(json.dumps({"port": 9300, "models": {"a": "/pkg/a"}, "max_docs_per_request": 5}))
    monkeypatch.setenv("ENGINE_PORT", "9400")
    monkeypatch.setenv("ENGINE_API_KEY", "from-env")
    import argparse

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    add_serve_parser(subparsers)
    args = parser.parse_args(["serve", "--config", str(config), "--model", "b=/pkg/b", "--max-docs-per-request",
                              "7", "--no-auto-truncate"])
    built = build_config(args)
    assert built.port == 9400 and built.api_key == "from-env" and built.max_docs_per_request == 7
    assert built.models == {"a": "/pkg/a", "b": "/pkg/b"} and built.auto_truncate is False
    assert built.host == "127.0.0.1"
    assert callable(args.handler)
    with pytest.raises(InvalidInput, match="unknown server settings"):
        ServerConfig.from_mapping({"prot": 1})


def test_unknown_model_and_not_deployed(tmp_path) -> None:
    state = ServerState(ServerConfig())
    with pytest.raises(ResourceNotFound, match=r"Could not find trained model \[nope\]"):
        state.resolve("nope")
    with pytest.raises(NotDeployed):
        state.default_deployment(None, ("text_embedding",))


def test_engine_serve_verb_reports_bad_models(tmp_path, capsys) -> None:
    from engine.cli import main

    assert main(["serve", "--model", "no-equals-sign", "--port", "0"]) == InvalidInput.exit_code
    assert "--model takes ID=SOURCE[:TASK]" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert main(["serve", "--model", f"m={missing}:ner", "--port", "0", "--no-access-log"]) == ExportError.exit_code
    assert f"model directory [{missing}] does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "engine.json").write_text("{")
    assert main(["serve", "--model", f"m={broken}", "--port", "0", "--no-access-log"]) == InvalidInput.exit_code
    assert f"model location [{broken}] holds a broken model package" in capsys.readouterr().err


def test_model_sources_name_their_task_after_the_last_colon() -> None:
    assert split_task("org/name:ner") == ("org/name", "ner")
    assert split_task("/models/minilm") == ("/models/minilm", None)
    assert split_task("/odd:dir/minilm") == ("/odd:dir/minilm", None)
    assert split_task("c:/pkg:text_embedding") == ("c:/pkg", "text_embedding")


def test_boot_without_models_and_without_the_default_wheel_serves_nothing(caplog) -> None:
    def resolve(source: str, task: str | None) -> Path:
        raise ModelError("the default text_embedding model is all-MiniLM-L6-v2 from the PyPI package ...")

    state = ServerState(ServerConfig())
    state.boot(lambda model_id, settings: parse_start_params(model_id, settings), resolve)
    assert state.deployments() == [] and state.find_models(None) == []
    assert "no --model given and no default model to serve" in caplog.text


def test_boot_without_models_serves_the_bundled_default(minilm_package) -> None:
    asked = []

    def resolve(source: str, task: str | None) -> Path:
        asked.append((source, task))
        return minilm_package

    state = ServerState(ServerConfig())
    state.boot(lambda model_id, settings: parse_start_params(model_id, settings), resolve)
    try:
        assert asked[0] == ("", "text_embedding")  # the default, then its package as any configured model
        (entry,) = state.deployments()
        assert entry.model_id == "all-minilm-l6-v2" and entry.model.path == minilm_package.resolve()
    finally:
        state.shutdown()


def test_boot_starts_the_configured_deployments(splade_package) -> None:
    parse = parse_start_params

    config = ServerConfig(models={"splade": str(splade_package)},
                          deployments=[{"model_id": "splade", "deployment_id": "splade-a", "queue_capacity": 5}])
    state = ServerState(config)
    state.boot(lambda model_id, settings: parse(model_id, settings))
    try:
        (entry,) = state.deployments()
        assert entry.deployment_id == "splade-a" and entry.deployment.stats()["queue_capacity"] == 5
        assert state.resolve("splade") is entry and state.default_deployment(None, ("text_expansion",)) is entry
        with pytest.raises(InvalidInput, match="existing deployment with the same id"):
            state.start_deployment("splade", parse("splade", {"deployment_id": "splade-a"}))
    finally:
        state.shutdown()
    assert state.deployments() == [] and entry.deployment.state == "stopped"


def test_bench_results_section_is_replaced_in_place(tmp_path) -> None:
    from bench.bench_server import percentile, write_section

    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Throughput\n\nkept\n\n## Server\n\nold\n\n## Kernels\n\nkept too\n")
    write_section(results, "## Server\n\nnew numbers\n")
    text = results.read_text()
    assert "old" not in text and "new numbers" in text
    assert text.index("## Throughput") < text.index("## Server") < text.index("## Kernels")
    assert text.count("kept") == 2
    assert percentile([float(i) for i in range(1, 201)], 0.99) == 198.0
    assert percentile([5.0], 0.5) == 5.0


def test_json_responses_render_the_standard_encoders_bytes() -> None:
    """The orjson renderer changes speed, not output: a result body with floats, nested lists,
    unicode and nulls gives the bytes Starlette's json renderer gave; numpy values serialise."""
    import numpy as np

    from engine.server.wire import JSON

    rng = np.random.default_rng(0)
    body = {
        "embeddings": [rng.normal(size=384).astype(np.float32).astype(np.float64).tolist()],
        "inference_results": [{"predicted_value": "naïve 東京", "prediction_probability": 0.1, "top": None}],
        "count": 3,
        "ok": True,
    }
    standard = json.dumps(body, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
    assert JSON(body).body == standard.encode("utf-8")
    arrays = {"vector": np.asarray(body["embeddings"][0]), "score": np.float32(0.5), 7: [np.int64(2)]}
    assert json.loads(JSON(arrays).body) == {"vector": body["embeddings"][0], "score": 0.5, "7": [2]}
