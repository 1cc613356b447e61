"""One rule book for deployment settings: the same settings sent through ``engine.load`` and through
``POST _ml/trained_models/<id>/deployment/_start`` get the same answer, boundary values included
(engine/config.py decides both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

import engine
from engine.errors import InvalidInput

from .conftest import ServerProcess

# (settings, accepted): accepted settings start a deployment both ways; rejected ones must fail with
# the same message both ways.
CASES: list[tuple[dict[str, Any], bool]] = [
    ({"queue_capacity": 100_000}, True),
    ({"queue_capacity": 100_001}, False),
    ({"queue_capacity": 1}, True),
    ({"queue_capacity": 0}, False),
    ({"threads_per_allocation": 0}, False),
    ({"threads_per_allocation": 3}, False),
    ({"threads_per_allocation": 64}, False),
    ({"number_of_allocations": 0}, False),
    ({"priority": "low"}, True),
    ({"priority": "urgent"}, False),
    ({"priority": "low", "number_of_allocations": 2}, False),
    ({"priority": "low", "threads_per_allocation": 2}, False),
    ({"number_of_allocations": 2, "adaptive_allocations": {"enabled": True}}, False),
    ({"adaptive_allocations": {"enabled": True, "min_number_of_allocations": 0}}, False),
    ({"adaptive_allocations": {"enabled": True, "max_number_of_allocations": 0}}, False),
    ({"adaptive_allocations": {"enabled": True, "min_number_of_allocations": 3,
                               "max_number_of_allocations": 2}}, False),
    ({"cache_size": "0b"}, True),
    ({"cache_size": "lots"}, False),
]


def start_over_http(server: ServerProcess, deployment_id: str, settings: dict[str, Any]) -> httpx.Response:
    """``_start`` as a client sends it: settings as query-string text, ``adaptive_allocations`` in the body."""
    query = {key: str(value) for key, value in settings.items() if key != "adaptive_allocations"}
    body = {"adaptive_allocations": settings["adaptive_allocations"]} if "adaptive_allocations" in settings else None
    with server.client() as client:
        return client.post("/_ml/trained_models/minilm/deployment/_start",
                           params={"deployment_id": deployment_id, **query}, json=body)


@pytest.mark.parametrize(("settings", "accepted"), CASES, ids=[str(case[0]) for case in CASES])
def test_load_and_start_give_the_same_answer(server: ServerProcess, minilm_package: Path,
                                             settings: dict[str, Any], accepted: bool) -> None:
    deployment_id = f"rules-{abs(hash(str(settings))) % 10**8}"
    answer = start_over_http(server, deployment_id, settings)
    try:
        deployment = engine.load(str(minilm_package), deployment_id=deployment_id, **settings)
    except InvalidInput as error:
        assert not accepted, f"engine.load refused accepted settings: {error.message}"
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["reason"] == error.message
        return
    deployment.stop()
    assert accepted, "engine.load accepted settings that should be refused"
    assert answer.status_code == 200, answer.text
    with server.client() as client:
        stopped = client.post(f"/_ml/trained_models/{deployment_id}/deployment/_stop")
    assert stopped.status_code == 200
