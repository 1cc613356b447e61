"""``engine run`` and ``engine models`` as a user types them: one output line per input line, errors in
place with an input-error exit code (blank lines, a fill_mask mask truncated away), and the listing of
bundled and cached models. Tiny models built at test time; the CLI runs in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import InvalidInput
from tests.conftest import REPO

pytest.importorskip("torch")
pytest.importorskip("exporters")
tiny_models = pytest.importorskip("tests.tiny_models")


def engine_cli(args: list[str], home: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENGINE_HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-home")


def package(task: str, home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT for ``task`` exported (fp32, fast) into the cache folder, where ``engine models`` finds it."""
    from exporters import export

    out = home / "packages" / f"tiny-bert-{task}"
    if not (out / "engine.json").is_file():
        source = tiny_models.build_tiny_model("bert", task, tmp_path_factory.mktemp("src"))
        export(str(source), task=task, out=str(out), quantize="none", fuse=False, progress=False)
    return out


def test_stdin_lines_line_up_with_outputs_and_blank_lines_are_errors(
        home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = package("text_embedding", home, tmp_path_factory)
    done = engine_cli(["run", "text_embedding", "--model", str(model)], home, "first line\n\n  \nlast line\n")
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stderr
    first, blank, spaces, last = (json.loads(line) for line in lines)
    assert "predicted_value" in first and "predicted_value" in last
    for refused in (blank, spaces):
        assert refused["error"]["status"] == 400
        assert refused["error"]["reason"] == "input text must not be empty or contain only whitespace"
    assert done.returncode == InvalidInput.exit_code
    assert "2 of 4 inputs failed" in done.stderr
    assert "Traceback" not in done.stderr


def test_fill_mask_truncated_away_is_an_input_error_on_its_line(
        home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = package("fill_mask", home, tmp_path_factory)
    far = " ".join(["word"] * 600) + " [MASK]."
    done = engine_cli(["run", "fill_mask", "--model", str(model)], home, f"The [MASK] sat.\n{far}\n")
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2, done.stderr
    assert "predicted_value" in lines[0]
    assert lines[1]["error"]["status"] == 400
    assert "fell past [max_sequence_length] [512]" in lines[1]["error"]["reason"]
    assert done.returncode == InvalidInput.exit_code
    alone = engine_cli(["run", "fill_mask", "--model", str(model), far], home)
    assert alone.returncode == InvalidInput.exit_code  # not InferenceFailed's 7


def test_models_lists_bundled_and_cached(home: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = package("text_embedding", home, tmp_path_factory)
    listing = json.loads(engine_cli(["models", "--json"], home).stdout)
    assert {item["id"]: item["task"] for item in listing["bundled"]} == {
        "all-minilm-l6-v2": "text_embedding", "splade-tiny": "text_expansion"}
    for item in listing["bundled"]:
        assert item["path"] is None or (Path(item["path"]) / "config.json").is_file()
    cached = {item["path"]: item for item in listing["cached"]}
    entry = cached[str(model)]
    assert entry["task"] == "text_embedding" and entry["quantization"] == "none"
    assert entry["source"] and entry["size_bytes"] > (model / "model.onnx").stat().st_size
    text = engine_cli(["models"], home)
    assert text.returncode == 0 and "all-minilm-l6-v2" in text.stdout and str(home / "packages") in text.stdout
