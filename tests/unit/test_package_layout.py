"""The package boundaries: ``engine`` never imports ``exporters``, ``bench`` or ``tests`` by name (it reaches
the first two through entry points), ``bench`` never imports ``tests``, ``engine.ray`` never imports its
callers (``engine.batch_job``, ``engine.cli``, ``engine.server``: they import it, lazily), and ``import engine``
stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import engine.api
from engine.errors import ModelError

REPO = Path(__file__).resolve().parents[2]


def imported_roots(package: str) -> dict[str, set[str]]:
    """Top-level package names each module of ``package`` imports (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        roots = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.partition(".")[0])
        found[str(path.relative_to(REPO))] = roots
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("engine", {"exporters", "bench", "tests"}),
    ("exporters", {"bench", "tests"}),
    ("bench", {"tests"}),
])
def test_imports_point_one_way(package: str, forbidden: set[str]) -> None:
    offenders = {module: sorted(roots & forbidden) for module, roots in imported_roots(package).items()
                 if roots & forbidden}
    assert offenders == {}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, relative imports resolved, lazy ones included."""
    parts = path.relative_to(REPO).with_suffix("").parts
    package = ".".join(parts[:-1])  # a module's package; an __init__.py's own
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_engine_ray_never_imports_its_callers() -> None:
    callers = ("engine.batch_job", "engine.cli", "engine.server")
    offenders = {str(path.relative_to(REPO)): sorted(name for name in imported_modules(path)
                                                      if name.startswith(callers))
                 for path in sorted((REPO / "engine" / "ray").rglob("*.py"))}
    assert {module: names for module, names in offenders.items() if names} == {}


def test_import_engine_is_light() -> None:
    code = (
        "import sys, engine._kernels, engine\n"
        "heavy = sorted(m for m in ('onnxruntime', 'tokenizers', 'engine.api', 'engine.deployment', 'torch')"
        " if m in sys.modules)\n"
        "print(heavy)\n"
    )
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert answer.stdout.strip() == "[]"


def test_public_api_resolves_lazily() -> None:
    import engine

    assert engine.run is engine.api.run and engine.load is engine.api.load
    assert "fill_mask" in engine.TASK_NAMES and "run" in dir(engine)
    with pytest.raises(AttributeError):
        _ = engine.no_such_name


def test_export_on_first_use_goes_through_the_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    exporters = pytest.importorskip("exporters")
    if not engine.api.entry_points(group=engine.api.EXPORTER_GROUP):
        pytest.skip("engine is not installed (no entry points); `make build` installs it")
    assert engine.api._exporter("src") is exporters.export
    monkeypatch.setattr(engine.api, "entry_points", lambda **_: [])
    with pytest.raises(ModelError, match=r"needs the export extra .*no \[engine.exporters\] entry point"):
        engine.api._exporter("some/model")
