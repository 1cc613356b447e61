"""``engine.run`` takes a list of any length: 10,000 texts through a queue of 1024, results in order.

The texts stream through the deployment's bounded queue (``Deployment.infer(wait_for_room=True)``)
instead of failing with QueueFull. A tiny random model built at test time keeps it fast; each
sampled result is checked against the same text run alone, so a shuffled or shifted result fails.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import engine
from tests import tolerances

pytest.importorskip("torch")
pytest.importorskip("exporters")
tiny_models = pytest.importorskip("tests.tiny_models")

N_TEXTS = 10_000
WORDS = ("alpha", "river", "stone", "quiet", "paper", "north", "green", "seven", "glass", "music")


@pytest.fixture(scope="module", autouse=True)
def engine_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not os.environ.get("ENGINE_HOME"):
        os.environ["ENGINE_HOME"] = str(tmp_path_factory.mktemp("engine-home"))


def distinct_texts(n: int) -> list[str]:
    """Short texts, each different: the number's digits spelled with WORDS."""
    return [" ".join(WORDS[int(digit)] for digit in str(number)) + " ." for number in range(n)]


def test_run_on_ten_thousand_texts_returns_ten_thousand_results_in_order(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    model = tiny_models.build_tiny_model("bert", "text_embedding", tmp_path_factory.mktemp("src"))
    texts = distinct_texts(N_TEXTS)
    results = engine.run("text_embedding", texts, model=model)
    assert len(results) == N_TEXTS
    for index in (0, 1, 517, 1023, 1024, 5_555, N_TEXTS - 1):
        alone = engine.run("text_embedding", texts[index], model=model)[0]
        np.testing.assert_allclose(results[index]["predicted_value"], alone["predicted_value"],
                                   atol=tolerances.SAME_GRAPH_DERIVED_ABS)
    # neighbours differ, so the check above would see a result one place off
    assert not np.allclose(results[1023]["predicted_value"], results[1024]["predicted_value"],
                           atol=tolerances.DIFFERENT_ABS)
