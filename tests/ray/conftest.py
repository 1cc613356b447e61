"""Fixtures for the scale-out tests: a MiniLM package exported once, Ray kept on loopback.

Ray is started by the tests themselves (``ray.init(num_cpus=2, include_dashboard=False)`` or a
``ray.cluster_utils.Cluster``), usage stats off. Ray rewrites a 127.0.0.1 address to the host's
interface address when it connects (``services.resolve_ip_for_localhost``), which hangs where that
interface is firewalled: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes it keep the loopback address,
and every node is started with ``node_ip_address=127.0.0.1``. Both must be set before Ray is imported.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.tolerances import SAME_GRAPH_ABS

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# replicas and handles report their load every 0.5 s (Ray's default 10 s), so autoscaling reacts in seconds
os.environ.setdefault("RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")
LOOPBACK = "127.0.0.1"


def require_ray() -> None:
    """Skip (with the fix) where the ray extra is not installed."""
    pytest.importorskip("ray", reason="needs Ray: pip install 'engine[ray]'")


@pytest.fixture(scope="session")
def minilm_package(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 as an fp32 unfused package: exact graphs, so results compare with engine.run."""
    try:
        from exporters import export
    except ImportError as error:
        pytest.skip(f"exporting the test package needs the export extra (pip install 'engine[export]'): {error}")
    out = tmp_path_factory.mktemp("pkg") / "minilm"
    export(str(minilm_dir), task="text_embedding", out=str(out), quantize="none", fuse=False, progress=False)
    return out


def corpus(n: int) -> list[str]:
    """``n`` distinct texts of varied length (so batches pad)."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards", "quietly", "hex", "jolly", "zebras"]
    return [" ".join(words[(i * 7 + k) % len(words)] for k in range(3 + i % 29)) + f" #{i}" for i in range(n)]


def assert_same_results(actual: list[dict], expected: list[dict]) -> None:
    """Results equal to ``expected`` up to the float rounding of another batch shape
    (``tests.tolerances.SAME_GRAPH_ABS``): same keys, labels and shapes everywhere."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        _assert_same(got, want)


def _assert_same(got: object, want: object) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for key in want:
            _assert_same(got[key], want[key])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for item, wanted in zip(got, want, strict=True):
            _assert_same(item, wanted)
    elif isinstance(want, float):
        assert isinstance(got, float) and abs(got - want) <= SAME_GRAPH_ABS
    else:
        assert got == want


def poll_until(condition: Any, what: str, timeout: float) -> Any:
    """Poll ``condition`` until it returns something true; fail (never hang) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")
