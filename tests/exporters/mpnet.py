"""all-mpnet-base-v2 for the optimisation and quantisation tests: :mod:`bench.mpnet` (shared with the export
benchmark), with a missing model turned into a skip that says what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.mpnet import ModelMissing, export_mean_pooled, sentence_feeds
from bench.mpnet import mpnet_dir as _mpnet_dir

__all__ = ["export_mean_pooled", "mpnet_dir", "sentence_feeds"]


def mpnet_dir() -> Path:
    """The all-mpnet-base-v2 folder, or skip the test when its wheels are not installed."""
    try:
        return _mpnet_dir()
    except ModelMissing as error:
        pytest.skip(str(error))
