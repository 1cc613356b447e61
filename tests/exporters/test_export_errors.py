"""The ways an export is refused (each a one-line ExportError, CLI exit code 9), the atomic write,
and the CLI's exit codes."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ExportError
from engine.manifest import read_manifest
from exporters import export
from exporters.cli import add_export_parser
from tests.tiny_models import build_tiny_model

# The package's ``export`` function shadows its ``export`` module as an attribute; fetch the module.
export_module = importlib.import_module("exporters.export")
FAST = {"quantize": "none", "fuse": False, "progress": False}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture
def bert_mlm(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny BERT masked-LM that a test may modify."""
    copy = tmp_path / "bert-mlm"
    shutil.copytree(build_tiny_model("bert", "fill_mask", tiny_root), copy)
    return copy


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="engine")
    add_export_parser(parser.add_subparsers())
    args = parser.parse_args(["export", *argv])
    return args.handler(args)


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(path.name for path in parent.iterdir() if path.name.startswith(f".{name}."))


def _refused(message: str, source: Path | str, out: Path, **options: object) -> ExportError:
    with pytest.raises(ExportError, match=message) as caught:
        export(source, out, **{**FAST, **options})
    assert "\n" not in caught.value.message
    assert not out.exists()
    return caught.value


def test_unsupported_architecture(bert_mlm: Path, tmp_path: Path) -> None:
    config = json.loads((bert_mlm / "config.json").read_text())
    (bert_mlm / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    error = _refused(r"unsupported architecture \[gpt2\]; supported: bart, bert", bert_mlm, tmp_path / "out")
    assert "xlm-roberta" in error.message


def test_architecture_without_the_task_head(tiny_root: Path, tmp_path: Path) -> None:
    source = build_tiny_model("bart", "fill_mask", tiny_root)
    _refused(
        r"\[bart\] cannot serve \[ner\]: .*no BartForTokenClassification", source, tmp_path / "o", task="ner"
    )
    dpr = build_tiny_model("dpr_question", "text_embedding", tiny_root)
    _refused(r"\[dpr\] cannot serve \[fill_mask\]", dpr, tmp_path / "o", task="fill_mask")


def test_checkpoint_without_trained_head(bert_mlm: Path, tmp_path: Path) -> None:
    _refused(
        r"no trained weights for the \[sequence_classification\] head",
        bert_mlm,
        tmp_path / "o",
        task="text_classification",
    )


def test_nli_model_is_not_a_cross_encoder(tiny_root: Path, tmp_path: Path) -> None:
    nli = build_tiny_model("bert", "zero_shot_classification", tiny_root)
    _refused(
        r"Expected exactly \[1\] value in text_similarity result; got \[3\]",
        nli,
        tmp_path / "o",
        task="text_similarity",
    )


def test_zero_shot_needs_nli_labels(tiny_root: Path, tmp_path: Path) -> None:
    sentiment = build_tiny_model("bert", "text_classification", tiny_root)
    _refused(
        r"needs an NLI model .* has \['NEGATIVE', 'POSITIVE'\]",
        sentiment,
        tmp_path / "o",
        task="zero_shot_classification",
    )


def test_missing_tokenizer(bert_mlm: Path, tmp_path: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (bert_mlm / name).unlink(missing_ok=True)
    _refused(r"has no tokenizer \(expected tokenizer.json, vocab.txt", bert_mlm, tmp_path / "o")


def test_remote_code_is_refused_without_the_flag(bert_mlm: Path, tmp_path: Path) -> None:
    config = json.loads((bert_mlm / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (bert_mlm / "config.json").write_text(json.dumps(config))
    _refused(r"ships its own model code .* --trust-remote-code", bert_mlm, tmp_path / "o")


def test_pickle_only_weights_are_refused(bert_mlm: Path, tmp_path: Path) -> None:
    (bert_mlm / "model.safetensors").rename(bert_mlm / "pytorch_model.bin")  # never unpickled: refused first
    _refused(r"only pickle weights .* --allow-pickle", bert_mlm, tmp_path / "o")


def test_pickle_weights_load_with_the_flag(bert_mlm: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(bert_mlm / "model.safetensors")), bert_mlm / "pytorch_model.bin")
    (bert_mlm / "model.safetensors").unlink()
    package = export(bert_mlm, tmp_path / "o", allow_pickle=True, **FAST)
    assert (package / "engine.json").is_file()


def test_hub_id_downloads_safetensors_and_records_the_revision(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub path with the download replaced by a local snapshot folder laid out like the hub cache."""
    import huggingface_hub

    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--someone--tiny" / "snapshots" / revision
    shutil.copytree(build_tiny_model("bert", "text_classification", tiny_root), snapshot)
    requests: list[dict[str, object]] = []

    def fake_download(repo_id: str, **kwargs: object) -> str:
        requests.append({"repo_id": repo_id, **kwargs})
        return str(snapshot)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    manifest = read_manifest(export("someone/tiny", tmp_path / "out", **FAST))
    assert manifest.source == {"id": "someone/tiny", "revision": revision}
    assert manifest.task == "text_classification"
    (request,) = requests
    assert request["repo_id"] == "someone/tiny"
    assert "*.safetensors" in request["allow_patterns"] and "*.bin" not in request["allow_patterns"]


def test_hub_id_while_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _refused(
        rf"\[someone/some-model\] is not a local directory \(no directory {tmp_path}/someone/some-model\) "
        r"and the Hugging Face hub is offline",
        "someone/some-model",
        tmp_path / "o",
    )


def test_hub_id_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No HF_HUB_OFFLINE, but the hub cannot be reached (a closed local port stands in for it)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.chdir(tmp_path)
    _refused(
        rf"cannot find \[someone/some-model\]: no directory {tmp_path}/someone/some-model, and the "
        r"Hugging Face hub is unreachable or offline",
        "someone/some-model",
        tmp_path / "o",
    )


@pytest.mark.parametrize(
    ("source", "looked_for", "hint"),
    [
        ("my-model-dir", "{cwd}/my-model-dir", True),  # no org/name: never a hub id
        ("./my-model", "{cwd}/my-model", False),
        ("~/no-such-model-h1", "{home}/no-such-model-h1", False),
        ("models/bert/base", "{cwd}/models/bert/base", False),  # two separators
        ("{tmp}/nowhere", "{tmp}/nowhere", False),
        ("org/bad..name", "{cwd}/org/bad..name", False),  # the hub's syntax forbids '..'
    ],
)
def test_missing_local_directory_is_not_sent_to_the_hub(
    source: str, looked_for: str, hint: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source that cannot be a hub id is a mistyped path: the message says where it was looked for,
    and the hub is never asked (the download function fails the test if called)."""
    import huggingface_hub

    def no_download(*args: object, **kwargs: object) -> str:
        raise AssertionError("a local-looking source was sent to the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    places = {"cwd": str(work), "home": str(Path.home()), "tmp": str(tmp_path)}
    error = _refused(
        r"model directory \[.*\] does not exist",
        source.format(**places),
        tmp_path / "o",
    )
    assert f"(looked for {looked_for.format(**places)})" in error.message
    assert ("a Hugging Face hub id is org/name" in error.message) == hint


def test_hub_ids_are_org_slash_name() -> None:
    from exporters.source import is_hub_id

    valid = ["someone/tiny", "sentence-transformers/all-MiniLM-L6-v2", "org_1/name.v2"]
    invalid = [
        "bert-base-uncased",
        "a/b/c",
        "/abs/dir",
        "./x",
        "~/x",
        "org/",
        "org/x.git",
        "-org/x",
        "o/n--m",
    ]
    assert [is_hub_id(source) for source in valid] == [True] * len(valid)
    assert [is_hub_id(source) for source in invalid] == [False] * len(invalid)


def test_non_empty_out_needs_force(tiny_root: Path, tmp_path: Path) -> None:
    source = build_tiny_model("bert", "fill_mask", tiny_root)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ExportError, match=r"output directory \[.*out\] is not empty; pass --force"):
        export(source, out, **FAST)
    assert (out / "keep.txt").read_text() == "user data"
    export(source, out, force=True, **FAST)
    assert sorted(path.name for path in out.iterdir()) == ["engine.json", "model.onnx", "tokenizer.json"]
    assert _leftovers(tmp_path, "out") == []


def test_out_must_not_be_the_source(bert_mlm: Path) -> None:
    with pytest.raises(ExportError, match="would overwrite the model source"):
        export(bert_mlm, bert_mlm, force=True, **FAST)
    assert (bert_mlm / "config.json").is_file()


def test_interrupted_export_leaves_nothing(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the graph is written: no package, no staging or work directories."""
    source = build_tiny_model("bert", "fill_mask", tiny_root)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "_trace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(source, tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path, "out") == []


def test_failed_export_keeps_the_old_package(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--force replaces only on success: a graph that fails the PyTorch check leaves the old package."""
    source = build_tiny_model("bert", "fill_mask", tiny_root)
    out = export(source, tmp_path / "out", **FAST)
    before = (out / "engine.json").read_text()
    monkeypatch.setattr(export_module, "parity_error", lambda *args: 0.5)
    with pytest.raises(ExportError, match=r"does not match PyTorch \(relative error 5.00e-01 > 0.001\)"):
        export(source, out, force=True, **FAST)
    assert (out / "engine.json").read_text() == before
    assert _leftovers(tmp_path, "out") == []


def test_bad_options() -> None:
    with pytest.raises(ExportError, match=r"\[quantize\] must be one of"):
        export("unused", "unused", quantize="int4")
    with pytest.raises(ExportError, match=r"\[opset\] must be between 14 and 20"):
        export("unused", "unused", opset=9)
    with pytest.raises(ExportError, match=r"unknown task \[summarization\]"):
        export("unused", "unused", task="summarization")


def test_cli_success_and_failure_exit_codes(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = build_tiny_model("distilbert", "ner", tiny_root)
    out = tmp_path / "out"
    assert _cli(str(source), "--out", str(out), "--quantize", "none", "--no-fuse", "--quiet") == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "engine.json").is_file()
    assert _cli(str(source), "--out", str(out), "--quantize", "none", "--quiet") == ExportError.exit_code != 0
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert error_lines == [
        f"engine export: error: output directory [{out}] is not empty; pass --force to replace it"
    ]
    with pytest.raises(SystemExit) as usage:
        _cli(str(source), "--out", str(out), "--quantize", "int4")
    assert usage.value.code == 2


def test_cli_progress_lines_go_to_stderr(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = build_tiny_model("electra", "pass_through", tiny_root)
    assert (
        _cli(
            str(source),
            "--out",
            str(tmp_path / "o"),
            "--task",
            "pass_through",
            "--quantize",
            "none",
            "--no-fuse",
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "tracing to ONNX (opset 17)" in captured.err
    assert captured.out.strip() == str(tmp_path / "o")


def test_importing_exporters_does_not_import_torch() -> None:
    code = "import sys, exporters, exporters.cli; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}
    )
    assert result.returncode == 0


def test_int8_below_threshold_ships_the_fp32_graph(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the quantiser's guard cannot reach the threshold, the package keeps the fp32 graph."""
    quantize = importlib.import_module("exporters.quantize")
    block = {"mode": "int8", "kept_fp32": ["all"], "agreement": {"value": 0.5}, "reached_threshold": False}
    calls: list[tuple[str, float, float | None]] = []

    def below_threshold(
        fp32: Path, dst: Path, feeds: list, metric: str, threshold: float, progress: bool, held_out: list,
        tail_threshold: float | None,
    ) -> dict:
        calls.append((metric, threshold, tail_threshold))
        assert feeds and all("attention_mask" in feed for feed in feeds)
        Path(dst).write_bytes(b"not the graph that ships")
        return block

    monkeypatch.setattr(quantize, "quantize_with_guard", below_threshold)
    source = build_tiny_model("bert", "ner", tiny_root)
    package = export(source, tmp_path / "out", quantize="int8", fuse=False, progress=False)
    manifest = read_manifest(package)
    assert calls == [("token_argmax", 0.99, None)]  # None: the metric's default tail
    assert manifest.quantization == {"mode": "none", "int8_rejected": block}
    assert (package / "model.onnx").read_bytes() != b"not the graph that ships"


def test_engine_cli_export_verb(tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The verb as users run it: ``engine export`` through engine/cli.py's wiring."""
    from engine.cli import main

    source = build_tiny_model("mpnet", "fill_mask", tiny_root)
    out = tmp_path / "out"
    assert main(["export", str(source), "--out", str(out), "--quantize", "none", "--no-fuse", "--quiet"]) == 0
    assert (out / "engine.json").is_file()
    assert main(["export", str(source), "--out", str(out), "--quiet"]) == 9
    assert "is not empty; pass --force" in capsys.readouterr().err


def test_graph_with_external_data_is_copied_whole(tmp_path: Path) -> None:
    """Graphs over 2 GB come from the tracer with one file per tensor; the package gets one data file."""
    import numpy as np
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    values = np.arange(600, dtype=np.float32).reshape(2, 300)  # over onnx's 1 KiB external-data threshold
    weight = numpy_helper.from_array(values, "weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 300])],
        [weight],
    )
    traced = tmp_path / "work" / "traced.onnx"
    traced.parent.mkdir()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save_model(
        model, str(traced), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0
    )
    package = tmp_path / "package"
    package.mkdir()
    export_module.copy_graph(traced, package / "model.onnx")
    assert sorted(path.name for path in package.iterdir()) == ["model.onnx", "model.onnx.data"]
    session = onnxruntime.InferenceSession(str(package / "model.onnx"), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {"x": np.array([[1.0, 2.0]], dtype=np.float32)})
    np.testing.assert_allclose(result, np.array([[1.0, 2.0]], dtype=np.float32) @ values)
