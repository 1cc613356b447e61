"""Task accuracy of the exported packages against the PyTorch fp32 reference on held-out real data.

The int8 tolerances are the issue's: NER F1 −0.5 pt, classification −0.5 pt, zero-shot −1 pt, QA F1 −1 pt,
STS Spearman −0.005, nDCG@10 −0.01. The fp32 package must make the same prediction as PyTorch on ≥ 99.9%
of inputs (bench.accuracy.same_prediction says what "same" means per result type).
"""

from __future__ import annotations

import pytest

from tests.conftest import shared_path
from tests.tolerances import ACCURACY_FRACTION_ABS

pytest.importorskip("torch")
accuracy = pytest.importorskip("bench.accuracy")

# Limits keep the suite to a few minutes on two cores; `python -m bench.accuracy` runs the full sets.
LIMITS = {"ner": 600, "text_classification": None, "zero_shot_classification": None, "question_answering": None,
          "text_similarity": None, "rerank": 20, "text_expansion": 6}


@pytest.fixture(scope="module", autouse=True)
def engine_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    import os

    if not os.environ.get("ENGINE_HOME"):
        os.environ["ENGINE_HOME"] = str(tmp_path_factory.mktemp("engine-home"))


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(accuracy.EVALUATIONS))
def test_int8_within_tolerance_and_fp32_matches_reference(name: str) -> None:
    shared_path("data")
    _, model, _, tolerance = accuracy.EVALUATIONS[name]
    if model != "splade":
        shared_path("models", model)
    row = accuracy.evaluate(name, LIMITS[name])
    assert row["engine_fp32"] == pytest.approx(row["pytorch_fp32"], abs=ACCURACY_FRACTION_ABS), row
    assert row["fp32_agreement"] >= 0.999, row
    assert row["engine_int8"] >= row["pytorch_fp32"] - tolerance, row
