"""The model output of one window, typed by its shape: what a task's ``read`` makes of raw graph outputs.

The scheduler hands a task plain tuples of arrays (one per graph output, manifest order). Each task
checks them once, in ``read``, and from then on works with one of these: the shape is in the type,
so the code that builds the Elasticsearch result never re-checks or guesses it.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class TokenScores:
    """Per-token logits, float32 ``[tokens, classes]`` C-contiguous: fill_mask (classes = the
    vocabulary) and ner (classes = the IOB labels)."""

    logits: np.ndarray


@dataclasses.dataclass(frozen=True)
class Vector:
    """One float32 vector per window, C-contiguous: class or NLI logits, a similarity logit, a pooled
    embedding, or text_expansion's pooled term weights over the vocabulary."""

    values: np.ndarray


@dataclasses.dataclass(frozen=True)
class SpanLogits:
    """Extractive QA's start and end logits, float32 ``[tokens]`` each, for one window."""

    start: np.ndarray
    end: np.ndarray


@dataclasses.dataclass(frozen=True)
class Rows:
    """pass_through's output as Elasticsearch returns it: float64 ``[rows, columns]``."""

    values: np.ndarray
