"""Adaptive allocations: the scaler's rule on made-up samples, then a live deployment under load."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.adaptive import AdaptiveAllocations, AdaptiveScaler
from engine.deployment import Deployment, DeploymentConfig
from engine.errors import InvalidInput
from engine.session import create_session
from engine.stats import LoadSample
from tests.unit.test_deployment import TEXTS, WAIT_S, FakePackage, assert_result, make_package, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def busy(allocations_busy: float, interval: float = 10.0, per_text: float = 0.01) -> LoadSample:
    """A sample where ``allocations_busy`` allocations' worth of work arrived and ran."""
    completed = int(allocations_busy * interval / per_text)
    return LoadSample(interval, completed, completed, completed * per_text)


def test_scaler_scales_up_past_90_percent_and_down_below_85() -> None:
    clock = Clock()
    scaler = AdaptiveScaler(
        AdaptiveAllocations(max_number_of_allocations=8, scale_down_cooldown_s=0, smoothing=1.0), clock
    )
    assert scaler.decide(2) == 2  # no measurement yet: nothing changes
    scaler.observe(busy(1.85))
    assert scaler.load == pytest.approx(1.85)
    assert scaler.decide(2) == 3  # 1.85 / 2 > 0.9
    scaler.observe(busy(1.75))
    assert scaler.decide(3) == 3  # 1.75 / 2 = 0.875: not below 0.85, keep 3
    scaler.observe(busy(1.6))
    assert scaler.decide(3) == 2  # 1.6 / 2 = 0.8 < 0.85
    scaler.observe(busy(5.0))
    assert scaler.decide(2) == 6  # while load / n > 0.9: 5 / 6 = 0.83 stops at 6
    scaler.observe(busy(40.0))
    assert scaler.decide(6) == 8  # clamped to max
    assert scaler.decide(8, ceiling=4) == 4  # and to what the cores allow
    scaler.observe(busy(0.0))
    assert scaler.decide(4) == 1


def test_scaler_respects_min_and_cooldowns_and_smooths() -> None:
    clock = Clock()
    settings = AdaptiveAllocations(
        min_number_of_allocations=2,
        max_number_of_allocations=4,
        scale_up_cooldown_s=30,
        scale_down_cooldown_s=60,
        smoothing=0.5,
    )
    scaler = AdaptiveScaler(settings, clock)
    scaler.observe(busy(0.0))
    assert scaler.decide(1) == 2  # below min: raised to min
    clock.now += 10
    scaler.observe(busy(4.0))
    assert scaler.load == pytest.approx(2.0)  # halfway from 0 to 4
    assert scaler.decide(2) == 2  # up-cooldown of 30 s after the last change
    clock.now += 25
    assert scaler.decide(2) == 3  # 2.0 / 2 > 0.9
    scaler.observe(busy(0.0))
    clock.now += 30
    assert scaler.decide(3) == 3  # down-cooldown of 60 s
    clock.now += 31
    assert scaler.decide(3) == 2  # never below min


def test_scaler_keeps_the_time_estimate_through_intervals_without_completions() -> None:
    scaler = AdaptiveScaler(AdaptiveAllocations(smoothing=1.0), Clock())
    scaler.observe(LoadSample(1.0, 100, 100, 0.5))
    scaler.observe(LoadSample(1.0, 300, 0, 0.0))  # all queued, nothing finished yet
    assert scaler.load == pytest.approx(300 * 0.005)


def test_adaptive_settings_json_and_validation() -> None:
    settings = AdaptiveAllocations.from_value({"enabled": True, "max_number_of_allocations": 4})
    assert settings is not None and settings.to_json() == {"enabled": True, "max_number_of_allocations": 4}
    assert settings.minimum == 1 and AdaptiveAllocations().maximum == 32
    assert AdaptiveAllocations.from_value(None) is None
    for bad in (
        {"enabled": "yes"},
        {"evaluation_interval_s": 0},
        {"smoothing": 0},
        {"max_number_of_allocations": 0},
        {"min_number_of_allocations": 1.5},
    ):
        with pytest.raises(InvalidInput):
            AdaptiveAllocations(**bad)
    with pytest.raises(InvalidInput):
        AdaptiveAllocations.from_value([1, 2])


class SlowSession:
    """The real session plus a sleep per row: a model whose cost grows with the batch, without
    burning the shared CPUs."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        time.sleep(0.004 * len(feeds["input_ids"]))
        return self._session.run(names, feeds)


def slow_factory(path: Path, threads: int, cores: Any, options: Any) -> SlowSession:
    return SlowSession(create_session(path, threads, cores, options))


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> FakePackage:
    return make_package(tmp_path_factory.mktemp("adaptive"))


def test_deployment_scales_up_under_load_and_back_down_when_idle(package: FakePackage) -> None:
    adaptive = {
        "enabled": True,
        "min_number_of_allocations": 1,
        "max_number_of_allocations": 3,
        "evaluation_interval_s": 0.1,
        "scale_down_cooldown_s": 0.0,
        "smoothing": 0.5,
    }
    config = DeploymentConfig(
        cpus=tuple(range(4)), pin_threads=False, cache_size=0, adaptive_allocations=adaptive
    )
    with Deployment(package, config, session_factory=slow_factory) as deployment:
        assert deployment.stats()["allocation_status"]["target_allocation_count"] == 1
        assert deployment.stats()["adaptive_allocations"] == {
            "enabled": True,
            "min_number_of_allocations": 1,
            "max_number_of_allocations": 3,
        }
        stop = threading.Event()

        def caller(number: int) -> None:
            while not stop.is_set():
                text = TEXTS[number % len(TEXTS)]
                assert_result(deployment.infer([text])[0], text)

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            callers = [pool.submit(caller, number) for number in range(8)]
            wait_until(lambda: deployment.number_of_allocations == 3)
            stop.set()
            for future in callers:
                future.result(WAIT_S)
        wait_until(lambda: deployment.number_of_allocations == 1)
        with pytest.raises(InvalidInput, match="cannot be set if adaptive allocations is enabled"):
            deployment.update(number_of_allocations=2)
        deployment.update(adaptive_allocations={"enabled": False})
        deployment.update(number_of_allocations=2)
        assert deployment.number_of_allocations == 2
        assert deployment.stats()["allocation_status"]["state"] == "fully_allocated"
