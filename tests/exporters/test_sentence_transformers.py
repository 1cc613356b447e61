"""sentence-transformers bi-encoders in both folder layouts (saved by the installed library, and the
pre-5 layout written by hand): Pooling modes, Dense and Normalize inside the graph, checked against the
sentence-transformers library's own ``encode``; prompts recorded, never applied; unsupported modules
refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from engine.errors import ExportError
from engine.manifest import read_manifest
from exporters import export
from tests.tiny_models import ARCHITECTURES, EMBEDDING_ONLY, ST_LAYOUTS, build_tiny_sentence_transformer
from tests.tolerances import DIFFERENT_REL, GRAPH_VS_TORCH_REL, UNIT_NORM_ABS

SENTENCES = ["Short.", "A somewhat longer sentence about rivers, mountains and trains.", "Three words here"]
FAST = {"quantize": "none", "fuse": False, "progress": False}
LEGACY_ORDER = ("cls", "max", "mean", "mean_sqrt_len")
CASES = [
    ("bert", ("cls",), None, False),
    ("bert", ("max",), 24, True),
    ("bert", ("mean_sqrt_len",), None, True),
    ("bert", ("cls", "mean"), 16, False),
    ("mpnet", ("mean",), 24, True),
    ("xlm-roberta", ("max", "mean"), None, True),
]
# sentence-transformers 5 concatenates modes in the order the config lists them.
LIBRARY_ONLY_CASES = [
    ("roberta", ("mean", "cls"), None, True),
    ("distilbert", ("mean_sqrt_len", "max"), 8, False),
]


@pytest.fixture(scope="module")
def st_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("st-models")


def _graph_embeddings(package: Path, source: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    manifest = read_manifest(package)
    encoded = AutoTokenizer.from_pretrained(str(source))(texts, padding=True, return_tensors="np")
    session = onnxruntime.InferenceSession(str(package / manifest.graph), providers=["CPUExecutionProvider"])
    (embeddings,) = session.run(None, {name: encoded[name].astype(np.int64) for name in manifest.inputs})
    return embeddings


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    assert actual.shape == expected.shape
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _encode(source: Path, texts: list[str], **options: object) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(source), device="cpu")
    return model.encode(texts, convert_to_numpy=True, batch_size=len(texts), **options)


LAYOUT_CASES = [
    (layout, *case)
    for layout in ST_LAYOUTS
    for case in CASES + (LIBRARY_ONLY_CASES if layout == "library" else [])
]


@pytest.mark.parametrize(("layout", "architecture", "pooling", "dense", "normalize"), LAYOUT_CASES)
def test_pipeline_matches_sentence_transformers(
    layout: str,
    architecture: str,
    pooling: tuple[str, ...],
    dense: int | None,
    normalize: bool,
    st_root: Path,
    tmp_path: Path,
) -> None:
    source = build_tiny_sentence_transformer(architecture, st_root, pooling, dense, normalize, layout=layout)
    modules = json.loads((source / "modules.json").read_text())
    assert modules[1]["type"].endswith(".Pooling")
    assert modules[1]["type"].startswith("sentence_transformers.models.") == (layout == "legacy")
    package = export(source, tmp_path / "pkg", **FAST)
    manifest = read_manifest(package)
    assert manifest.task == "text_embedding"  # detected from modules.json
    order = pooling if layout == "library" else tuple(mode for mode in LEGACY_ORDER if mode in pooling)
    assert manifest.task_options["pooling"] == list(order)
    width = dense or 32 * len(pooling)
    assert manifest.embedding_size == width
    embeddings = _graph_embeddings(package, source, SENTENCES)
    assert _relative_error(embeddings, _encode(source, SENTENCES)) <= GRAPH_VS_TORCH_REL
    norms = np.linalg.norm(embeddings, axis=1)
    assert np.allclose(norms, 1.0, atol=UNIT_NORM_ABS) == normalize


ENCODERS = [architecture for architecture in ARCHITECTURES if architecture not in EMBEDDING_ONLY]


@pytest.mark.parametrize("architecture", ENCODERS)
def test_legacy_layout_of_every_encoder(architecture: str, st_root: Path, tmp_path: Path) -> None:
    """The pre-5 layout over every architecture (test_export_tiny covers the library's layout)."""
    source = build_tiny_sentence_transformer(architecture, st_root, ("mean",), None, True, layout="legacy")
    package = export(source, tmp_path / "pkg", **FAST)
    assert (
        _relative_error(_graph_embeddings(package, source, SENTENCES), _encode(source, SENTENCES))
        <= GRAPH_VS_TORCH_REL
    )


PROMPTS = {"query": "query: ", "document": "passage: "}


def test_prompts_are_recorded_not_applied(
    st_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sentence-transformers prepends the default prompt in ``encode``; the graph embeds what it is
    given, so the prompted text through the graph equals the library's encode of the bare text."""
    source = build_tiny_sentence_transformer(
        "bert", st_root, ("mean",), None, True, prompts={**PROMPTS, "empty": ""}, default_prompt_name="query"
    )
    package = export(source, tmp_path / "pkg", quantize="none", fuse=False, progress=True)
    options = read_manifest(package).task_options
    assert options["prompts"] == PROMPTS  # empty prompts are left out
    assert options["default_prompt_name"] == "query"
    assert "include_prompt" not in options
    assert "prepends the default prompt [query] ('query: ')" in capsys.readouterr().err
    library = _encode(source, SENTENCES)  # with the default prompt
    bare = _graph_embeddings(package, source, SENTENCES)
    prompted = _graph_embeddings(package, source, [PROMPTS["query"] + text for text in SENTENCES])
    assert _relative_error(prompted, library) <= GRAPH_VS_TORCH_REL
    assert _relative_error(bare, library) > DIFFERENT_REL  # the graph really did not apply it
    assert _relative_error(bare, _encode(source, SENTENCES, prompt="")) <= GRAPH_VS_TORCH_REL


def test_include_prompt_false_is_recorded(
    st_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = build_tiny_sentence_transformer(
        "bert", st_root, ("mean",), None, True, prompts=PROMPTS, include_prompt=False
    )
    package = export(source, tmp_path / "pkg", quantize="none", fuse=False, progress=True)
    options = read_manifest(package).task_options
    assert options["include_prompt"] is False and options["prompts"] == PROMPTS
    assert "default_prompt_name" not in options
    assert "include_prompt: false" in capsys.readouterr().err
    # Without a prompt there is nothing to leave out: the graph is the library's encode.
    assert (
        _relative_error(_graph_embeddings(package, source, SENTENCES), _encode(source, SENTENCES))
        <= GRAPH_VS_TORCH_REL
    )


@pytest.fixture
def st_copy(st_root: Path, tmp_path: Path) -> Path:
    """A private copy of a library-layout model with Dense that a test may modify."""
    copy = tmp_path / "st-copy"
    shutil.copytree(build_tiny_sentence_transformer("bert", st_root, ("mean",), 16, True), copy)
    return copy


def _edit(file: Path, **changes: object) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


def _refused(source: Path, out: Path, message: str) -> None:
    with pytest.raises(ExportError, match=message) as caught:
        export(source, out, **FAST)
    assert "\n" not in caught.value.message
    assert not out.exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"pooling_mode": "lasttoken"},
            r"pooling \['lasttoken'\] in .*1_Pooling is not supported; supported: cls",
        ),
        ({"pooling_mode": ["mean", "weightedmean"]}, r"pooling \['weightedmean'\] .* is not supported"),
        ({"pooling_mode": "median"}, r"unknown sentence-transformers pooling mode \['median'\]"),
        ({"pooling_mode": []}, r"\[pooling_mode\] in .* must be a mode name or a non-empty list"),
    ],
)
def test_unsupported_pooling_is_refused(
    changes: dict[str, object], message: str, st_copy: Path, tmp_path: Path
) -> None:
    _edit(st_copy / "1_Pooling" / "config.json", **changes)
    _refused(st_copy, tmp_path / "o", message)


def test_unsupported_legacy_pooling_is_refused(st_root: Path, tmp_path: Path) -> None:
    legacy = tmp_path / "legacy"
    shutil.copytree(
        build_tiny_sentence_transformer("bert", st_root, ("mean",), None, True, layout="legacy"), legacy
    )
    _edit(legacy / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False, pooling_mode_lasttoken=True)
    _refused(legacy, tmp_path / "o", r"pooling \['lasttoken'\] in .* is not supported")


def test_custom_module_and_dense_wiring_are_refused(st_copy: Path, tmp_path: Path) -> None:
    modules_file = st_copy / "modules.json"
    modules = json.loads(modules_file.read_text())
    original = json.dumps(modules)
    modules[1]["type"] = "my_package.pooling.Pooling"  # a custom class this exporter cannot rebuild
    modules_file.write_text(json.dumps(modules))
    _refused(
        st_copy, tmp_path / "o", r"unsupported sentence-transformers module \[my_package.pooling.Pooling\]"
    )
    modules_file.write_text(original)
    _edit(st_copy / "2_Dense" / "config.json", module_output_name="token_embeddings")
    _refused(st_copy, tmp_path / "o", r"Dense module in .* writes \[token_embeddings\]")
    _edit(
        st_copy / "2_Dense" / "config.json",
        module_output_name="sentence_embedding",
        activation_function="my_package.Swish",
    )
    _refused(st_copy, tmp_path / "o", r"unsupported Dense activation \[my_package.Swish\]")


@pytest.mark.parametrize("layout", ST_LAYOUTS)
def test_sentence_transformers_lower_casing_is_packaged(layout: str, st_root: Path, tmp_path: Path) -> None:
    """``do_lower_case: true`` in sentence_bert_config.json lower-cases every text in the library; the
    package's tokenizer.json must too (RoBERTa's byte-level BPE is case-sensitive on its own)."""
    from tokenizers import Tokenizer

    source = build_tiny_sentence_transformer(
        "roberta", st_root, ("mean",), None, True, layout=layout, lower_case=True
    )
    package = export(source, tmp_path / "pkg", **FAST)
    manifest = read_manifest(package)
    tokenizer = Tokenizer.from_file(str(package / manifest.tokenizer))
    mixed = ["Rivers In The MOUNTAINS.", "Where Is The Station?"]
    assert [e.ids for e in tokenizer.encode_batch(mixed)] == [
        e.ids for e in tokenizer.encode_batch([text.lower() for text in mixed])
    ]
    tokenizer.enable_padding(
        pad_id=manifest.special_tokens["pad"][1], pad_token=manifest.special_tokens["pad"][0]
    )
    encoded = tokenizer.encode_batch(mixed)
    feeds = {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
    }
    session = onnxruntime.InferenceSession(str(package / manifest.graph), providers=["CPUExecutionProvider"])
    (embeddings,) = session.run(None, {name: feeds[name] for name in manifest.inputs})
    assert _relative_error(embeddings, _encode(source, mixed)) <= 1e-3
