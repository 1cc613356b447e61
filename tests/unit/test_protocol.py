"""Every deployment backend fills the seam the server types against (engine.protocol.DeploymentLike):
the members exist and each method takes at least the protocol's parameters, with the same kinds and
defaults (a backend may add keyword parameters that have defaults)."""

from __future__ import annotations

import contextlib
import importlib
import inspect
from pathlib import Path

import pytest

from engine.deployment import Deployment
from engine.protocol import DeploymentLike
from tests.unit.test_deployment import make_package

METHODS = ("infer", "ainfer", "update", "stats", "stop", "clear_cache")


def backends() -> list[type]:
    found: list[type] = [Deployment]
    with contextlib.suppress(ImportError):  # the Ray backend is optional (engine[ray])
        found.append(importlib.import_module("engine.ray.deployment").RayDeployment)
    return found


def check_signature(protocol_method: object, method: object) -> None:
    wanted = inspect.signature(protocol_method)
    given = inspect.signature(method)
    for name, parameter in wanted.parameters.items():
        assert name in given.parameters, f"missing parameter [{name}]"
        actual = given.parameters[name]
        assert actual.kind == parameter.kind, f"[{name}] is {actual.kind}, the protocol says {parameter.kind}"
        assert actual.default == parameter.default, f"[{name}] defaults to {actual.default!r}"
    for name, parameter in given.parameters.items():
        if name not in wanted.parameters and parameter.kind not in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            assert parameter.default is not parameter.empty, f"extra parameter [{name}] has no default"


@pytest.mark.parametrize("backend", backends(), ids=lambda backend: backend.__name__)
def test_backend_satisfies_the_protocol(backend: type) -> None:
    for name in METHODS:
        check_signature(getattr(DeploymentLike, name), getattr(backend, name))
        assert inspect.iscoroutinefunction(getattr(backend, name)) == (name == "ainfer")


def test_a_started_deployment_is_deployment_like(tmp_path: Path) -> None:
    package = make_package(tmp_path / "tiny")
    with Deployment(package) as deployment:  # type: ignore[arg-type]
        assert isinstance(deployment, DeploymentLike)
        assert deployment.package is package and deployment.state == "started"


def test_protocol_is_runtime_checkable() -> None:
    class Partial:
        def infer(self) -> None: ...

    assert not isinstance(Partial(), DeploymentLike)
