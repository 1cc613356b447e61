"""Calibration text for the int8 accuracy guard.

Three files ship inside the package, all written for this project (no third-party data set, so no
licence travels with the package), one text per line, covering what users send:

- ``calibration_queries.txt``: 1-8 word search queries, titles, headings and short replies, with
  codes, URLs, accents, prices and other unusual tokens;
- ``calibration_sentences.txt``: 428 sentences and short paragraphs (captions, questions, reviews
  with clear sentiment, named people, places and organisations, numbers, dates, instructions, and
  forum-style text: URLs, product and software names, commands, paths, typos, lower-case chat);
- ``calibration_passages.txt``: passages of about 130-150 words (170-200 word pieces): news,
  reviews, instructions, history, science, letters.

Each file is split in two by line parity: even lines *choose* (they calibrate the activation
scales and pick the nodes kept fp32), odd lines are *held out* and only measure the result, so the
agreement in a package's manifest is measured on text the guard did not fit.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

SENTENCES_FILE = "calibration_sentences.txt"
KINDS = {
    "queries": "calibration_queries.txt",
    "sentences": SENTENCES_FILE,
    "passages": "calibration_passages.txt",
}
PARTS = ("choose", "held_out")


@cache
def _load(name: str) -> tuple[str, ...]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def calibration_sentences() -> list[str]:
    """The packaged calibration sentences, in file order (a fresh list; callers may shuffle it).

    >>> len(calibration_sentences()) >= 300
    True
    """
    return list(_load(SENTENCES_FILE))


def calibration_texts(part: str) -> dict[str, list[str]]:
    """Texts of one part (``choose`` or ``held_out``) per kind (``queries``, ``sentences``,
    ``passages``), in file order.

    >>> sorted(calibration_texts("choose"))
    ['passages', 'queries', 'sentences']
    """
    if part not in PARTS:
        raise ValueError(f"calibration part must be one of {PARTS}, got [{part}]")
    first = PARTS.index(part)
    return {kind: list(_load(name)[first::2]) for kind, name in KINDS.items()}
