"""Hostile model packages: each is a real tiny exported package changed the way an attacker would, and
each must be refused at load with a PackageError that says what is wrong, before ONNX Runtime or the
tokenizer reads anything (engine.manifest.read_manifest, engine.graph_check.check_graph).

The package is a tiny random BERT classifier exported once per session (fp32, unfused: the fastest
export); every test works on its own copy. The untouched copy loads, so a refusal is never the
package's fault.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import helper

from engine import manifest as manifest_module
from engine.errors import PackageError
from engine.manifest import MANIFEST_NAME, sha256_file
from engine.package import load_package


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tiny_models = pytest.importorskip("tests.tiny_models", reason="needs torch and transformers: pip install -e .[export]")
    exporters = pytest.importorskip("exporters", reason="needs the exporters: pip install -e .[export]")
    source = tiny_models.build_tiny_model("bert", "text_classification", tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("pkg") / "tiny"
    exporters.export(str(source), out=str(out), task="text_classification", quantize="none", fuse=False, progress=False)
    return out


@pytest.fixture
def package(tiny_package: Path, tmp_path: Path) -> Path:
    """A private copy, inside a parent folder that also holds a file an attacker would like read."""
    copy = tmp_path / "pkg"
    shutil.copytree(tiny_package, copy)
    (tmp_path / "secret.txt").write_text("not for the engine")
    return copy


def _manifest(package: Path) -> dict[str, Any]:
    return json.loads((package / MANIFEST_NAME).read_text())


def _write_manifest(package: Path, data: dict[str, Any]) -> None:
    (package / MANIFEST_NAME).write_text(json.dumps(data))


def _edit_graph(package: Path, edit: Callable[[onnx.ModelProto], None]) -> None:
    """Change the graph and record its new hash, so only the change itself can be refused."""
    path = package / "model.onnx"
    model = onnx.load(str(path))
    edit(model)
    onnx.save(model, str(path))
    data = _manifest(package)
    data["files"]["model.onnx"] = sha256_file(path)
    _write_manifest(package, data)


def _refused(package: Path, pattern: str) -> None:
    with pytest.raises(PackageError, match=pattern):
        load_package(package)


def test_the_untouched_package_loads(package: Path) -> None:
    assert load_package(package).manifest.task == "text_classification"


# --- operator domains and custom operators --------------------------------------------------------

def _add_node(domain: str, op_type: str = "Evil") -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        model.opset_import.append(helper.make_opsetid(domain, 1))
        first = model.graph.input[0].name
        model.graph.node.append(helper.make_node(op_type, [first], ["evil_out"], name="evil", domain=domain))
    return edit


def test_a_custom_operator_domain_is_refused(package: Path) -> None:
    _edit_graph(package, _add_node("com.attacker.ops"))
    _refused(package, r"imports operator domain \[com.attacker.ops\]; allowed: \['', 'ai.onnx', 'com.microsoft'\]")


def test_a_node_in_an_unimported_domain_is_refused(package: Path) -> None:
    def edit(model: onnx.ModelProto) -> None:
        model.graph.node.append(helper.make_node("Evil", [model.graph.input[0].name], ["o"], name="evil", domain="x.y"))
    _edit_graph(package, edit)
    _refused(package, r"node \[evil\] runs \[x.y:Evil\]")


def test_a_custom_operator_inside_a_subgraph_is_refused(package: Path) -> None:
    def edit(model: onnx.ModelProto) -> None:
        body = helper.make_graph([helper.make_node("Evil", [], ["y"], name="hidden", domain="x.y")], "body", [],
                                 [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
        cond = helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])
        model.graph.input.append(cond)
        model.graph.node.append(helper.make_node("If", ["c"], ["if_out"], name="if", then_branch=body, else_branch=body))
    _edit_graph(package, edit)
    _refused(package, r"node \[hidden\] runs \[x.y:Evil\]")


def test_ai_onnx_ml_is_refused_because_no_exporter_emits_it(package: Path) -> None:
    _edit_graph(package, _add_node("ai.onnx.ml", "LabelEncoder"))
    _refused(package, r"operator domain \[ai.onnx.ml\]")


def test_model_local_functions_are_refused(package: Path) -> None:
    def edit(model: onnx.ModelProto) -> None:
        model.functions.append(helper.make_function("com.microsoft", "Shadow", ["x"], ["y"],
                                                    [helper.make_node("Identity", ["x"], ["y"])],
                                                    [helper.make_opsetid("", 17)]))
    _edit_graph(package, edit)
    _refused(package, r"defines local functions \['com.microsoft:Shadow'\]")


def test_the_engine_never_registers_custom_op_libraries() -> None:
    engine_dir = Path(manifest_module.__file__).parent
    sources = {path: path.read_text() for path in engine_dir.rglob("*.py")}
    assert sources, engine_dir
    offenders = [str(path) for path, text in sources.items() if "register_custom_ops_library" in text]
    assert offenders == []


# --- external data ---------------------------------------------------------------------------------

def _external(location: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        tensor.external_data.add(key="location", value=location)
    return edit


@pytest.mark.parametrize("location", ["../secret.txt", "/etc/passwd", "sub/../../secret.txt"])
def test_external_data_outside_the_package_is_refused(package: Path, location: str) -> None:
    _edit_graph(package, _external(location))
    _refused(package, rf"external data \[{location}\] .* must be a relative path inside the package")


def test_external_data_through_a_symlink_is_refused(package: Path) -> None:
    # Only this test's symlink: listed in the manifest, so the graph rule itself refuses it.
    (package / "weights.data").symlink_to(package.parent / "secret.txt")
    _edit_graph(package, _external("weights.data"))
    _refused(package, r"holds a symlink \[weights.data\]|\[weights.data\] is a symlink")


def test_external_data_the_manifest_does_not_hash_is_refused(package: Path) -> None:
    (package / "weights.data").write_bytes(b"\0" * 64)
    _edit_graph(package, _external("weights.data"))
    _refused(package, r"external data \[weights.data\] .* is not a file the manifest hashes")


# --- files, paths, symlinks --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../pkg/model.onnx", "/etc/passwd", "./model.onnx", "a//b", "C:\\model.onnx"])
def test_graph_paths_outside_or_unusual_are_refused(package: Path, name: str) -> None:
    data = _manifest(package)
    data["graph"] = name
    data["files"][name] = data["files"]["model.onnx"]
    _write_manifest(package, data)
    _refused(package, r"must be a relative path inside the package")


def test_a_listed_file_outside_the_package_is_refused(package: Path) -> None:
    data = _manifest(package)
    data["files"]["../secret.txt"] = sha256_file(package.parent / "secret.txt")
    _write_manifest(package, data)
    _refused(package, r"file \[../secret.txt\] must be a relative path inside the package")


def test_a_tokenizer_symlinked_out_is_refused(package: Path) -> None:
    outside = package.parent / "tokenizer.json"
    shutil.move(package / "tokenizer.json", outside)
    (package / "tokenizer.json").symlink_to(outside)
    _refused(package, r"\[tokenizer.json\] is a symlink; packages may not hold symlinks")


def test_any_symlink_in_the_package_is_refused(package: Path) -> None:
    (package / "notes").symlink_to("/etc")
    _refused(package, r"holds a symlink \[notes\]")


def test_a_symlinked_manifest_is_refused(package: Path) -> None:
    outside = package.parent / MANIFEST_NAME
    shutil.move(package / MANIFEST_NAME, outside)
    (package / MANIFEST_NAME).symlink_to(outside)
    _refused(package, r"engine.json is a symlink")


# --- sizes -------------------------------------------------------------------------------------------

def test_a_huge_manifest_is_refused_before_it_is_parsed(package: Path) -> None:
    with open(package / MANIFEST_NAME, "ab") as handle:
        handle.write(b" " * (manifest_module.MAX_MANIFEST_BYTES + 1))
    _refused(package, rf"is \d+ bytes; the cap is {manifest_module.MAX_MANIFEST_BYTES}")


@pytest.mark.parametrize(("cap", "what"), [("MAX_GRAPH_BYTES", "graph"), ("MAX_TOKENIZER_BYTES", "tokenizer"),
                                           ("MAX_PACKAGE_BYTES", "package")])
def test_sizes_over_their_caps_are_refused(package: Path, monkeypatch: pytest.MonkeyPatch, cap: str, what: str) -> None:
    # The caps are GiB-sized; lowering one below the tiny package's file shows the check is there.
    monkeypatch.setattr(manifest_module, cap, 1000)
    _refused(package, r"is \d+ bytes; the cap is 1000")


# --- manifest fields -----------------------------------------------------------------------------------

def _set(keys: tuple[str | int, ...] | str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set one field, found by its keys (a plain string for a top-level one)."""
    *parents, last = (keys,) if isinstance(keys, str) else keys

    def edit(data: dict[str, Any]) -> None:
        target: Any = data
        for key in parents:
            target = target[key]
        target[last] = value
    return edit


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


FIELD_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("task unknown", _set("task", "run_shell"), r"task \[run_shell\] is not one of"),
    ("task not a string", _set("task", ["ner"]), r"\[task\] must be a string"),
    ("graph missing", _delete("graph"), r"missing required keys \['graph'\]"),
    ("inputs not a list", _set("inputs", "input_ids"), r"\[inputs\] must be a non-empty list of distinct names"),
    ("inputs unknown", _set("inputs", ["input_ids", "pixels"]), r"\[inputs\] must be a non-empty list"),
    ("inputs repeated", _set("inputs", ["input_ids", "input_ids"]), r"\[inputs\] must be a non-empty list"),
    ("outputs empty", _set("outputs", []), r"\[outputs\] must be a non-empty list"),
    ("output axes a string", _set(("outputs", 0, "axes"), "batch"), r"each of \[outputs\] must be"),
    ("output without batch", _set(("outputs", 0, "axes"), ["labels"]), r"axes \['labels'\] must start with \[batch\]"),
    ("output extra key", _set(("outputs", 0, "script"), "rm -rf"), r"each of \[outputs\] must be"),
    ("labels not strings", _set("labels", [0, 1]), r"\[labels\] must be a list of strings"),
    ("embedding_size a bool", _set("embedding_size", True), r"\[embedding_size\] must be a positive integer"),
    ("similarity unknown", _set("similarity", "hamming"), r"\[similarity\] \[hamming\] is not one of"),
    ("tokenization a list", _set("tokenization", []), r"\[tokenization\] must be an object"),
    ("max_sequence_length text", _set(("tokenization", "max_sequence_length"), "512"),
     r"\[tokenization.max_sequence_length\] must be an integer"),
    ("do_lower_case an int", _set(("tokenization", "do_lower_case"), 1), r"\[tokenization.do_lower_case\] must be a boolean"),
    ("tokenization unknown key", _set(("tokenization", "eval"), "x"), r"\[tokenization\] has unknown keys \['eval'\]"),
    ("special token shape", _set(("special_tokens", "cls"), "[CLS]"), r"\[special_tokens.cls\] must be \[token, id >= 0\]"),
    ("special token id negative", _set(("special_tokens", "cls"), ["[CLS]", -1]), r"\[special_tokens.cls\] must be"),
    ("files not a map", _set("files", ["model.onnx"]), r"\[files\] must be an object"),
    ("digest not hex", _set(("files", "model.onnx"), "abc"), r"\[files.model.onnx\] must be a sha256 hex digest"),
    ("unknown key", _set("exec", "x"), r"unknown keys \['exec'\]"),
    ("schema version", _set("schema_version", 99), r"schema_version \[99\]"),
]


@pytest.mark.parametrize(("edit", "pattern"), [case[1:] for case in FIELD_CASES], ids=[case[0] for case in FIELD_CASES])
def test_malformed_manifest_fields_are_refused(package: Path, edit: Callable[[dict[str, Any]], None], pattern: str) -> None:
    data = _manifest(package)
    edit(data)
    _write_manifest(package, data)
    _refused(package, pattern)


def test_a_manifest_that_is_not_an_object_is_refused(package: Path) -> None:
    (package / MANIFEST_NAME).write_text("[]")
    _refused(package, r"must hold a JSON object")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files; the refusal cannot be shown")
def test_an_unreadable_manifest_is_refused(package: Path) -> None:
    (package / MANIFEST_NAME).chmod(0)
    _refused(package, r"cannot read")
