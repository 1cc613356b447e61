"""The export cache follows the exporter's graph recipe: ``resolve_model`` remakes a package *it cached* from
an older recipe (an older exporter's graph can be several times slower), keeps a current one, and never
touches a package directory the user names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import engine.api
from engine.errors import PackageError
from engine.manifest import GRAPH_RECIPE, MANIFEST_NAME, Manifest, read_manifest, write_manifest


class FakeExporter:
    """Stands in for the exporter entry point: writes a manifest-only package of the current recipe and
    records how it was called."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, source: str, task: str | None, out: Path, quantize: str, force: bool = False) -> Path:
        if out.is_dir() and any(out.iterdir()) and not force:
            raise AssertionError(f"{out} is not empty and force was not passed")
        self.calls.append({"source": source, "task": task, "force": force})
        out.mkdir(parents=True, exist_ok=True)
        write_package(out, GRAPH_RECIPE)
        return out


def write_package(directory: Path, recipe: int | None) -> None:
    optimization = {} if recipe is None else {"recipe": recipe}
    (directory / "model.onnx").write_bytes(b"graph")  # read_manifest checks that the files exist
    (directory / "tokenizer.json").write_text("{}")
    manifest = Manifest(task="text_embedding", architecture="bert", graph="model.onnx",
                        inputs=["input_ids", "attention_mask"],
                        outputs=[{"name": "sentence_embedding", "axes": ["batch", "embedding"]}],
                        tokenizer="tokenizer.json", tokenization={"type": "bert"}, optimization=optimization)
    write_manifest(directory, manifest)


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeExporter:
    monkeypatch.setenv("ENGINE_HOME", str(tmp_path / "home"))
    fake = FakeExporter()
    monkeypatch.setattr(engine.api, "_exporter", lambda source: fake)
    return fake


@pytest.fixture
def source(tmp_path: Path) -> str:
    model = tmp_path / "hub" / "some-model"
    model.mkdir(parents=True)
    return str(model)


def test_a_current_cached_package_is_reused(exporter: FakeExporter, source: str) -> None:
    first = engine.api.resolve_model(source, "text_embedding")
    again = engine.api.resolve_model(source, "text_embedding")
    assert again == first
    assert [call["force"] for call in exporter.calls] == [False]
    assert read_manifest(first, verify=False).graph_recipe == GRAPH_RECIPE


@pytest.mark.parametrize("old_recipe", [None, GRAPH_RECIPE - 1])
def test_an_older_recipe_in_the_cache_is_re_exported(exporter: FakeExporter, source: str,
                                                      old_recipe: int | None,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    target = engine.api._cache_dir_for(source, "text_embedding", "int8")
    target.mkdir(parents=True)
    write_package(target, old_recipe)
    assert read_manifest(target, verify=False).graph_recipe == (old_recipe or 1)

    with caplog.at_level("WARNING", logger="engine.api"):
        assert engine.api.resolve_model(source, "text_embedding") == target
    assert exporter.calls == [{"source": source, "task": "text_embedding", "force": True}]
    assert read_manifest(target, verify=False).graph_recipe == GRAPH_RECIPE
    assert "re-exporting" in caplog.text and f"recipe {old_recipe or 1}" in caplog.text


def test_an_unreadable_cached_manifest_is_re_exported(exporter: FakeExporter, source: str) -> None:
    target = engine.api._cache_dir_for(source, "text_embedding", "int8")
    target.mkdir(parents=True)
    (target / MANIFEST_NAME).write_text(json.dumps({"task": "text_embedding"}))
    engine.api.resolve_model(source, "text_embedding")
    assert [call["force"] for call in exporter.calls] == [True]


def test_a_package_the_user_names_loads_as_it_is(exporter: FakeExporter, tmp_path: Path) -> None:
    package = tmp_path / "my-package"
    package.mkdir()
    write_package(package, 1)
    assert engine.api.resolve_model(package, "text_embedding") == package
    assert exporter.calls == []


def test_a_malformed_recipe_is_a_package_error(tmp_path: Path) -> None:
    write_package(tmp_path, 1)
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    data["optimization"]["recipe"] = "two"
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(PackageError, match=r"optimization\.recipe"):
        read_manifest(tmp_path, verify=False)
