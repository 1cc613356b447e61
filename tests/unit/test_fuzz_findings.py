"""What the fuzz harnesses (fuzz/) found, kept as plain tests so a fix cannot regress unnoticed."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("path", "dialect_key"), [("/", "status"), ("/v1/embeddings", "error"), ("/embed", "error_type")])
def test_a_method_no_route_lists_answers_405_in_the_dialect(path: str, dialect_key: str) -> None:
    pytest.importorskip("starlette", reason="needs the server extra: pip install -e .[server]")
    from starlette.testclient import TestClient

    from engine.server.app import create_app
    from engine.server.settings import ServerConfig
    from engine.server.state import ServerState
    from fuzz.http_shapes import error_shape_problem

    answer = TestClient(create_app(ServerState(ServerConfig()))).request("PATCH", path)
    assert answer.status_code == 405
    assert dialect_key in answer.json()
    assert error_shape_problem(path, 405, answer.json()) is None
