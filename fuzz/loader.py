"""Finds the extension under test: the installed ``engine._kernels``, or the build directory named by
``ENGINE_KERNELS_PATH`` (``make test-san`` and ``make fuzz`` point it at an ASan/UBSan build without
reinstalling). The kernel tests use it too (tests/kernels/loader.py)."""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType


def load_kernels() -> ModuleType:
    directory = os.environ.get("ENGINE_KERNELS_PATH")
    if not directory:
        return importlib.import_module("engine._kernels")
    builds = sorted(Path(directory).glob("_kernels.*.so")) + sorted(Path(directory).glob("_kernels.*.pyd"))
    if not builds:
        raise FileNotFoundError(f"ENGINE_KERNELS_PATH={directory} holds no _kernels extension")
    spec = importlib.util.spec_from_file_location("engine._kernels", builds[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
