"""Calibration text for the int8 accuracy guard.

``calibration_sentences.txt`` ships inside the package: 359 English sentences written for this
project (no third-party data set, so no licence travels with the package). They mix short
captions, questions, reviews with clear sentiment, named people, places and organisations, numbers,
dates and prices, instructions, and paragraphs up to about 100 words, so that the guard sees short
and long rows, entity-like tokens and sentiment-bearing phrases of the kind each task scores.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

SENTENCES_FILE = "calibration_sentences.txt"


@lru_cache(maxsize=1)
def _load() -> tuple[str, ...]:
    text = resources.files(__package__).joinpath(SENTENCES_FILE).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def calibration_sentences() -> list[str]:
    """The packaged calibration sentences, in file order (a fresh list; callers may shuffle it).

    >>> len(calibration_sentences()) >= 300
    True
    """
    return list(_load())
