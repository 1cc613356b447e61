"""SIGTERM to ``engine serve`` in the middle of a burst of concurrent requests: every request the app
accepted is answered and delivered. Accepted means it reached the app (the access log has a line for
it, written once its answer is sent): the 200s the clients received must equal the access log's 200s,
no logged answer may be a 5xx, and the server must drain its deployments and exit gracefully. Requests
that never got in (refused connections once uvicorn stopped listening) fail on the client only at the
connection level."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.server.conftest import _tiny, start_server, stop_server

CLIENTS = 12
BURST_BEFORE_SIGTERM_S = 1.5


def test_sigterm_during_a_burst_answers_every_accepted_request(tmp_path_factory: pytest.TempPathFactory) -> None:
    package = _tiny("text_embedding", tmp_path_factory)
    log_path = tmp_path_factory.mktemp("sigterm") / "server.log"
    running = start_server(["--model", f"emb={package}", "--log-level", "info"], log_path)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        sent = 0
        while not stop.is_set():
            sent += 1
            words = " ".join(f"w{number}x{sent}" for _ in range(1 + sent % 40))
            try:  # one connection per request: a keep-alive close is not a lost request
                answer = httpx.post(f"{running.url}/embed", json={"inputs": [words, "second text"]}, timeout=60.0,
                                    headers={"Connection": "close"})
                outcome = str(answer.status_code)
                if answer.status_code == 200:
                    assert len(answer.json()) == 2
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as error:
                outcome = type(error).__name__
            with lock:
                outcomes[outcome] += 1
            if outcome in ("ConnectError",):
                return

    threads = [threading.Thread(target=client, args=(number,)) for number in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(BURST_BEFORE_SIGTERM_S)
        code = stop_server(running)
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        stop.set()
        stop_server(running, graceful=False)
    log = running.log()
    assert code in (0, -signal.SIGTERM), log[-3000:]
    assert "deployments drained" in log, log[-3000:]
    logged = Counter(str(entry["status"]) for entry in (json.loads(line) for line in log.splitlines()
                                                         if line.startswith("{")) if entry.get("route") == "/embed")
    assert outcomes["200"] > 0 and logged["200"] == outcomes["200"], (outcomes, logged)
    assert not [status for status in logged if status.startswith("5")], logged
    assert set(outcomes) <= {"200", "ConnectError", "RemoteProtocolError", "ReadError"}, outcomes
    print(f"sigterm burst: client outcomes {dict(outcomes)}, server answered {dict(logged)}")
