"""An export into an ENGINE_HOME that is full or not writable leaves no partial package behind and says why.

"Full" is a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) on the exporting process: every write past
it fails with EFBIG, as on a full disk, without needing one. "Not writable" is a folder under /sys
(sysfs refuses new entries even to root, where chmod would not stop root)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

FSIZE_LIMIT = 1 << 20  # under the tiny model's graph (its embedding table alone is ~4 MB)


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tiny_models = pytest.importorskip("tests.tiny_models", reason="needs torch and transformers: pip install -e .[export]")
    return tiny_models.build_tiny_model("bert", "text_embedding", tmp_path_factory.mktemp("src"))


def _export(source: Path, out: Path, limit: int | None = None) -> subprocess.CompletedProcess[str]:
    def no_room() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-m", "engine.cli", "export", str(source), "--task", "text_embedding",
                           "--out", str(out), "--quantize", "none", "--no-fuse", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600,
                          preexec_fn=no_room if limit else None)  # noqa: PLW1509 - only sets a limit


def test_a_full_engine_home_leaves_no_partial_package(tiny_source: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = home / "packages" / "tiny"
    done = _export(tiny_source, out, limit=FSIZE_LIMIT)
    assert done.returncode != 0
    assert "could not write the package" in done.stderr and "File too large" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not out.exists()
    assert [path.name for path in out.parent.iterdir()] == [], "staging or work folders were left behind"


def test_an_unwritable_engine_home_says_why(tiny_source: Path) -> None:
    out = Path("/sys/engine-home-test/packages/tiny")
    if os.access("/sys", os.W_OK) and not _sysfs_refuses():
        pytest.skip("/sys accepts new folders here; no unwritable location to show")
    done = _export(tiny_source, out)
    assert done.returncode != 0
    assert "cannot write a package into [/sys/engine-home-test/packages]" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert not out.exists()


def _sysfs_refuses() -> bool:
    try:
        os.mkdir("/sys/engine-home-probe")
    except OSError:
        return True
    os.rmdir("/sys/engine-home-probe")
    return False
