"""Progress a person can follow on long work (export, bench, batch jobs): one rule for all of them.

A tqdm bar on stderr when progress is wanted and stderr is a terminal. Anywhere else (a log file, CI)
the bar is disabled and the caller's plain stage lines are the progress, so logs get no carriage-return
noise. tqdm comes with the extras that run long work (export, bench, batch), not with the core.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def on_terminal() -> bool:
    """Whether a bar would be drawn: stderr is an interactive terminal."""
    return sys.stderr.isatty()


def progress_bar(total: int | None = None, *, unit: str, desc: str | None = None, enabled: bool = True,
                 iterable: Iterable[Any] | None = None) -> Any:
    """A tqdm bar (usable as a context manager and, with ``iterable``, as an iterator) that draws only
    when ``enabled`` and on a terminal."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=not (enabled and on_terminal()))
