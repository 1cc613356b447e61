"""Injected faults in a running deployment, through its test seam ``session_factory`` (the sessions are
real ONNX Runtime sessions of a tiny real package, wrapped by :class:`FaultySessions`): a batch whose
session run raises fails only its own requests (InferenceFailed, HTTP 500, with the error); a worker
thread killed mid-batch answers its batch the same way, and the allocation is restarted and counted
(``allocation_restarts``); a package directory taken away after start does not stop the deployment
(sessions and tokenizer are in memory). After each fault the deployment keeps serving."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.deployment import Deployment, DeploymentConfig
from engine.errors import InferenceFailed
from engine.package import load_package
from engine.session import create_session
from tests.unit.test_deployment_package import package_dir  # noqa: F401 - the fixture

WAIT_S = 30.0


class KillWorker(BaseException):
    """What a dying thread sees: not an Exception, so nothing on the way may swallow it."""


class FaultySessions:
    """A session factory whose sessions raise ``fault`` on the next run after :meth:`arm`."""

    def __init__(self) -> None:
        self.fault: BaseException | None = None
        self.lock = threading.Lock()
        self.opened = 0

    def arm(self, fault: BaseException) -> None:
        with self.lock:
            self.fault = fault

    def __call__(self, path: Any, threads: int, cores: Any = None, options: Any = None) -> Any:
        session = create_session(path, threads, cores, options)
        self.opened += 1
        factory = self

        class Session:
            def run(self, names: Any, feeds: Any) -> Any:
                with factory.lock:
                    fault, factory.fault = factory.fault, None
                if fault is not None:
                    raise fault
                return session.run(names, feeds)

        return Session()


def _deploy(path: Path, sessions: FaultySessions) -> Deployment:
    return Deployment(load_package(path), DeploymentConfig(number_of_allocations=1, cache_size=0),
                      session_factory=sessions)


def _wait_for(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_a_failing_batch_fails_only_its_requests(package_dir: Path) -> None:  # noqa: F811
    sessions = FaultySessions()
    with _deploy(package_dir, sessions) as deployment:
        before = deployment.infer(["before the fault"], timeout=WAIT_S)
        sessions.arm(RuntimeError("injected session failure"))
        with pytest.raises(InferenceFailed, match="injected session failure") as raised:
            deployment.infer(["the batch that fails"], timeout=WAIT_S)
        assert raised.value.status == 500
        after = deployment.infer(["before the fault"], timeout=WAIT_S)
        assert after == before
        stats = deployment.stats()
        assert stats["allocation_restarts"] == 0 and stats["number_of_allocations"] == 1


def test_a_killed_worker_answers_its_batch_and_is_restarted(package_dir: Path) -> None:  # noqa: F811
    sessions = FaultySessions()
    with _deploy(package_dir, sessions) as deployment:
        expected = deployment.infer(["still answered"], timeout=WAIT_S)
        sessions.arm(KillWorker("injected thread death"))
        with pytest.raises(InferenceFailed, match="allocation died") as raised:
            deployment.infer(["the batch of the dying worker"], timeout=WAIT_S)
        assert raised.value.status == 500
        _wait_for(lambda: deployment.stats()["allocation_restarts"] == 1
                  and deployment.stats()["number_of_allocations"] == 1)
        assert sessions.opened == 2
        assert deployment.infer(["still answered"], timeout=WAIT_S) == expected
        assert deployment.stats()["allocation_status"]["state"] == "fully_allocated"


def test_a_package_directory_taken_away_after_start_does_not_stop_serving(
        package_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    copy = tmp_path / "pkg"
    shutil.copytree(package_dir, copy)
    with _deploy(copy, FaultySessions()) as deployment:
        expected = deployment.infer(["served from memory"], timeout=WAIT_S)
        shutil.move(copy, tmp_path / "gone")
        (tmp_path / "gone").chmod(0)
        try:
            assert deployment.infer(["served from memory"], timeout=WAIT_S) == expected
            assert deployment.stats()["number_of_allocations"] == 1
        finally:
            (tmp_path / "gone").chmod(0o755)
