"""The extension under test: the installed ``engine._kernels``, or the build named by ``ENGINE_KERNELS_PATH``
(``make test-san`` points it at an ASan/UBSan build without reinstalling). One loader for the tests
and the fuzz harnesses: fuzz/loader.py."""

from __future__ import annotations

from fuzz.loader import load_kernels

__all__ = ["kernels", "load_kernels"]

kernels = load_kernels()
