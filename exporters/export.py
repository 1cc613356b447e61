"""Export orchestration: source → traced fp32 graph → checked → fused → (int8) → model package.

The package is built in a staging directory next to ``out`` and renamed into place only when complete,
so a failure or Ctrl-C never leaves a half package behind. Every graph that can become the package's
graph is compared with PyTorch on real sentences first; an export whose graph disagrees fails (or, for
a fused graph, falls back to the unfused one, recorded in ``optimization``).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ExportError
from engine.manifest import GRAPH_RECIPE, Manifest, write_manifest
from engine.session import checking_session

from . import registry
from .source import ModelSource, resolve_source
from .tokenizer import TOKENIZER_NAME, PackageTokenizer, prepare_tokenizer

GRAPH_NAME = "model.onnx"
DEFAULT_OPSET = 17
# The legacy exporter emits opsets 14-20 for these models; 14 is the first with the ops they need.
OPSET_RANGE = (14, 20)
QUANTIZE_MODES = ("int8", "none")
RETRIBERT_TOWERS = ("query", "document")
PARITY_TOLERANCE = 1e-3
CALIBRATION_BATCH = 16
# Long enough for the calibration passages (about 200 word pieces), and pairs of them.
CALIBRATION_MAX_LENGTH = 384
# The guard's mean agreement target per task when --accuracy-threshold is not given. A classifier's
# agreement is the share of confident predictions kept; 0.995 keeps its accuracy within half a point.
DEFAULT_ACCURACY_THRESHOLDS = {"text_classification": 0.995}

# Sentences for the torch-vs-ONNX parity check: different lengths (so the batch is padded), casing,
# punctuation, digits and accents, to exercise the tokenizer paths the engine will meet.
PARITY_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Berlin is the capital of Germany, and Paris is the capital of France.",
    "Hi!",
    "In 1969, Neil Armstrong became the first person to walk on the Moon; millions watched on television.",
    "Café prices rose 3.5% in Zürich last year.",
    "What time does the museum open on Sundays?",
)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How to export; the CLI flags of ``engine export``, checked once here.

    Attributes:
        task: an Elasticsearch task; ``None`` detects it from the model config (ELASTIC_REFERENCE §8.2).
        quantize: ``int8`` (default, with the quantiser's accuracy guard) or ``none`` (fp32 graph).
        max_sequence_length: overrides eland's length rule (§8.4).
        opset: ONNX opset of the traced graph.
        fuse: run ONNX Runtime's transformer fusions; off keeps standard ONNX ops only (a graph any ONNX
            runtime can run, and the baseline when a fusion is suspected of changing results).
        force: replace a non-empty ``out``.
        trust_remote_code: allow models that ship their own code.
        allow_pickle: allow ``pytorch_model.bin`` weights (unpickling can run code).
        retribert_tower: ``query`` or ``document``: which RetriBERT tower becomes the graph.
        revision: hub revision (branch, tag or commit) for hub ids.
        accuracy_threshold: the mean int8 agreement every length bucket must reach, in [0, 1]
            (None: 0.99, text_classification 0.995). An explicit value is used as given: 0 accepts
            any int8 graph that also meets the tail (each bucket's worst case; see
            ``exporters.quantize.DEFAULT_TAIL_THRESHOLDS``).
        accuracy_tail: what the worst case of every length bucket must reach, in [0, 1]: the 1st
            percentile of short texts, the minimum of sentences and passages (``TAIL_FIGURES``);
            one value for all buckets (None: the metric's default, cosine 0.96 short and 0.97
            sentences and passages; labels 0). Raise it for a stricter worst case at the price of
            nodes kept fp32; ``accuracy_threshold=0, accuracy_tail=0`` ships the all-int8 graph as
            it comes.
        progress: print stage lines on stderr.
    """

    task: str | None = None
    quantize: str = "int8"
    max_sequence_length: int | None = None
    opset: int = DEFAULT_OPSET
    fuse: bool = True
    force: bool = False
    trust_remote_code: bool = False
    allow_pickle: bool = False
    retribert_tower: str = "query"
    revision: str | None = None
    accuracy_threshold: float | None = None
    accuracy_tail: float | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE_MODES:
            raise ExportError(f"[quantize] must be one of {QUANTIZE_MODES}; got [{self.quantize}]")
        if not OPSET_RANGE[0] <= self.opset <= OPSET_RANGE[1]:
            raise ExportError(
                f"[opset] must be between {OPSET_RANGE[0]} and {OPSET_RANGE[1]}; got [{self.opset}]"
            )
        if self.retribert_tower not in RETRIBERT_TOWERS:
            raise ExportError(f"[tower] must be one of {RETRIBERT_TOWERS}; got [{self.retribert_tower}]")
        for name in ("accuracy_threshold", "accuracy_tail"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ExportError(f"[{name}] must be between 0 and 1 (an agreement share); got [{value}]")
        if self.task is not None and self.task not in registry.ALL_TASKS:
            raise ExportError(
                f"unknown task [{self.task}]; expected one of {', '.join(sorted(registry.ALL_TASKS))}"
            )


class _Progress:
    """Stage lines on stderr with elapsed seconds; exports take minutes on big models."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.monotonic()

    @contextmanager
    def stage(self, text: str) -> Iterator[None]:
        if self.enabled:
            print(f"[export {time.monotonic() - self.started:6.1f}s] {text}...", file=sys.stderr, flush=True)
        yield

    def note(self, text: str) -> None:
        """A fact the user should see about the package being built (not a stage)."""
        if self.enabled:
            print(f"[export] {text}", file=sys.stderr, flush=True)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"output [{out}] exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"output directory [{out}] is not empty; pass --force to replace it")


# Write failures that are the output location's doing (full, over quota, too large, read-only, not ours):
# an ExportError saying so, instead of a traceback.
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def _publish(staging: Path, out: Path) -> None:
    """Move the finished package into place. The old ``out`` is renamed aside first and deleted last,
    so there is always either the old package or the new one, never a mixture."""
    staging.chmod(0o755)
    if not out.exists():
        os.rename(staging, out)
        return
    aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rename(out, aside / out.name)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(aside / out.name, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def copy_graph(src: Path, dst: Path) -> None:
    """Copy an ONNX graph into the package. A graph over protobuf's 2 GB limit comes from the tracer as
    one external file per tensor; the package gets them gathered into one ``<graph>.data`` file beside
    it (write_manifest then hashes it like any other file)."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    if not any(onnx.external_data_helper.uses_external_data(tensor) for tensor in model.graph.initializer):
        shutil.copyfile(src, dst)
        return
    onnx.external_data_helper.load_external_data_for_model(model, str(src.parent))
    onnx.save_model(
        model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=f"{dst.name}.data"
    )


def _feeds(
    tokenizer: PackageTokenizer,
    task: str,
    sentences: list[str],
    input_names: tuple[str, ...],
    max_length: int,
) -> dict[str, np.ndarray]:
    """One padded batch as the engine builds it: pairs for pair tasks, int64 arrays by input name."""
    pairs = sentences[1:] + sentences[:1] if task in registry.PAIR_TASKS else None
    encoded = tokenizer.encode(sentences, pairs, max_length)
    feeds = {}
    for name in input_names:
        if name == "token_type_ids" and name not in encoded:
            feeds[name] = np.zeros_like(encoded["input_ids"], dtype=np.int64)
        else:
            feeds[name] = np.asarray(encoded[name], dtype=np.int64)
    return feeds


def _torch_outputs(
    wrapper: Any, feeds: dict[str, np.ndarray], input_names: tuple[str, ...]
) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        outputs = wrapper(*(torch.from_numpy(feeds[name]) for name in input_names))
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    return [output.detach().numpy() for output in outputs]


def _trace(
    wrapper: Any,
    feeds: dict[str, np.ndarray],
    task: str,
    input_names: tuple[str, ...],
    path: Path,
    opset: int,
) -> None:
    """Export with the legacy (TorchScript) exporter, batch and sequence axes dynamic."""
    import torch

    outputs = registry.OUTPUTS[task]
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    for output in outputs:
        dynamic_axes[output.name] = {
            index: axis for index, axis in enumerate(output.axes) if axis in ("batch", "sequence")
        }
    # The tracer warns about every Python-level shape computation in transformers' code; the parity
    # check that follows catches any that mattered, so the warnings are only noise to a user.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            tuple(torch.from_numpy(feeds[name]) for name in input_names),
            str(path),
            input_names=list(input_names),
            output_names=[output.name for output in outputs],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def parity_error(graph: Path, feeds: dict[str, np.ndarray], expected: list[np.ndarray], task: str) -> float:
    """Largest relative error of the graph's outputs against PyTorch: max |onnx − torch| over the largest
    |torch|, per output. Padded positions are left out of outputs with a sequence axis, since fused
    attention may fill them differently and the engine trims them anyway."""
    session = checking_session(graph)
    actual = session.run(None, feeds)
    mask = feeds["attention_mask"].astype(bool)
    worst = 0.0
    for spec, got, want in zip(registry.OUTPUTS[task], actual, expected, strict=True):
        if got.shape != want.shape:
            return float("inf")
        if "sequence" in spec.axes:
            got, want = got[mask], want[mask]
        scale = max(float(np.max(np.abs(want))), 1e-6)
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))) / scale)
    return worst


def _calibration_feeds(
    tokenizer: PackageTokenizer, task: str, input_names: tuple[str, ...], part: str
) -> list[dict[str, np.ndarray]]:
    """One part of the packaged calibration text as the engine would batch it: each kind (queries,
    sentences, passages) sorted by length and cut into batches of ``CALIBRATION_BATCH`` (a last
    single row joins the batch before it, since pair tasks pair rows within a batch)."""
    from .calibration import calibration_texts

    length = min(CALIBRATION_MAX_LENGTH, tokenizer.tokenization.max_sequence_length)
    batches: list[list[str]] = []
    for texts in calibration_texts(part).values():
        ordered = sorted(texts, key=len)
        groups = [
            ordered[start : start + CALIBRATION_BATCH] for start in range(0, len(ordered), CALIBRATION_BATCH)
        ]
        if len(groups) > 1 and len(groups[-1]) == 1:
            groups[-2].extend(groups.pop())
        batches.extend(group for group in groups if len(group) > 1)
    return [_feeds(tokenizer, task, batch, input_names, length) for batch in batches]


def _optimize(
    raw: Path, fused: Path, model_type: str, loaded: Any, check: Any, progress: _Progress
) -> tuple[Path, dict[str, Any]]:
    """Fuse with ORT's transformer optimiser; keep the fused graph only if it still matches PyTorch."""
    from .optimize import optimize_graph

    with progress.stage("fusing the graph (ONNX Runtime transformer optimiser)"):
        try:
            info = dict(optimize_graph(raw, fused, model_type, loaded.num_heads, loaded.hidden_size))
        except Exception as failure:  # ORT's fuser raises arbitrary errors; fusion is optional
            reason = f"fuser failed: {type(failure).__name__}: {str(failure).splitlines()[0][:200]}"
            if progress.enabled:
                print(f"[export] {reason}; keeping the unfused graph", file=sys.stderr)
            return raw, {"fused": False, "fusions": {}, "rejected": reason}
    error = check(fused)
    if error > PARITY_TOLERANCE:
        if progress.enabled:
            print(
                f"[export] fused graph differs from PyTorch (rel. error {error:.2e}); keeping the unfused graph",
                file=sys.stderr,
            )
        return raw, {
            "fused": False,
            "fusions": {},
            "rejected": f"relative error {error:.2e} > {PARITY_TOLERANCE}",
        }
    return fused, info


def _quantize(
    fp32: Path,
    graph: Path,
    tokenizer: PackageTokenizer,
    task: str,
    input_names: tuple[str, ...],
    threshold: float,
    tail: float | None,
    progress: _Progress,
) -> dict[str, Any]:
    """int8 through the quantiser's guard. When no int8 graph reaches the agreement threshold the
    package gets the fp32 graph instead (correct but slower), and the manifest says why."""
    from .quantize import quantize_with_guard

    with progress.stage("quantising to int8 (with the accuracy guard)"):
        block = dict(
            quantize_with_guard(
                fp32,
                graph,
                _calibration_feeds(tokenizer, task, input_names, "choose"),
                registry.QUANTIZATION_METRICS[task],
                threshold,
                progress=progress.enabled,
                held_out=_calibration_feeds(tokenizer, task, input_names, "held_out"),
                tail_threshold=tail,
            )
        )
    if block.get("reached_threshold", True):
        return block
    if progress.enabled:
        print(
            "[export] int8 graph stays below the agreement threshold; packaging the fp32 graph",
            file=sys.stderr,
        )
    copy_graph(fp32, graph)
    return {"mode": "none", "int8_rejected": block}


def _manifest(
    source: ModelSource,
    spec: registry.ArchitectureSpec,
    task: str,
    tokenizer: PackageTokenizer,
    loaded: Any,
    input_names: tuple[str, ...],
    expected: list[np.ndarray],
    labels: list[str] | None,
    quantization: dict[str, Any],
    optimization: dict[str, Any],
) -> Manifest:
    task_options = dict(loaded.task_options)
    embedding_size, similarity = None, None
    if task == "text_embedding":
        embedding_size = int(expected[0].shape[-1])
        similarity = registry.suggest_similarity(
            source.id, spec.model_type, loaded.normalized, loaded.st_similarity
        )
    if task == "zero_shot_classification":
        task_options["hypothesis_template"] = registry.ZERO_SHOT_HYPOTHESIS_TEMPLATE
    return Manifest(
        task=task,
        architecture=spec.model_type,
        graph=GRAPH_NAME,
        inputs=list(input_names),
        outputs=[output.to_json() for output in registry.OUTPUTS[task]],
        tokenizer=TOKENIZER_NAME,
        tokenization=tokenizer.tokenization,
        labels=labels,
        embedding_size=embedding_size,
        similarity=similarity,
        quantization=quantization,
        optimization=optimization,
        source=source.to_json(),
        special_tokens=tokenizer.special_tokens,
        task_options=task_options,
        provenance={"max_sequence_length": tokenizer.length.to_json()},
    )


def _write_graph(
    graph: Path,
    work: Path,
    settings: ExportOptions,
    spec: registry.ArchitectureSpec,
    task: str,
    tokenizer: PackageTokenizer,
    loaded: Any,
    input_names: tuple[str, ...],
    progress: _Progress,
) -> tuple[list[np.ndarray], dict[str, Any], dict[str, Any]]:
    """Trace, check, fuse and quantise into ``graph``; returns the PyTorch outputs on the parity
    sentences and the manifest's ``optimization`` and ``quantization`` blocks."""
    length = tokenizer.tokenization.max_sequence_length
    # Traced on two sentences, checked on all of them: a graph that baked in the trace's batch or
    # sequence size fails the check instead of shipping.
    trace_feeds = _feeds(tokenizer, task, list(PARITY_SENTENCES[:2]), input_names, length)
    feeds = _feeds(tokenizer, task, list(PARITY_SENTENCES), input_names, length)
    expected = _torch_outputs(loaded.wrapper, feeds, input_names)
    raw = work / "traced.onnx"
    with progress.stage(f"tracing to ONNX (opset {settings.opset})"):
        _trace(loaded.wrapper, trace_feeds, task, input_names, raw, settings.opset)

    def check(candidate: Path) -> float:
        return parity_error(candidate, feeds, expected, task)

    with progress.stage("checking the graph against PyTorch"):
        error = check(raw)
    if error > PARITY_TOLERANCE:
        raise ExportError(
            f"the exported graph does not match PyTorch (relative error {error:.2e} > {PARITY_TOLERANCE})"
        )
    if settings.fuse:
        fp32, optimization = _optimize(raw, work / "fused.onnx", spec.model_type, loaded, check, progress)
    else:
        fp32, optimization = raw, {"fused": False, "fusions": {}}
    optimization["opset"] = settings.opset
    optimization["recipe"] = GRAPH_RECIPE
    if settings.quantize == "int8":
        threshold = settings.accuracy_threshold
        if threshold is None:
            threshold = DEFAULT_ACCURACY_THRESHOLDS.get(task, registry.QUANTIZATION_THRESHOLD)
        quantization = _quantize(
            fp32, graph, tokenizer, task, input_names, threshold, settings.accuracy_tail, progress
        )
    else:
        copy_graph(fp32, graph)
        quantization = {"mode": "none"}
    return expected, optimization, quantization


def export(source: str | Path, out: str | Path, task: str | None = None, **options: Any) -> Path:
    """Export a Hugging Face model to a model package directory.

    Args:
        source: a local model directory or a Hugging Face hub id (downloaded when online).
        out: the package directory to create; must be empty or absent unless ``force=True``.
        task: an Elasticsearch task name, or ``None`` to detect it from the model config.
        **options: the fields of :class:`ExportOptions` other than ``task``.

    Returns:
        ``out`` as a resolved path, holding ``model.onnx``, ``tokenizer.json`` and ``engine.json``.

    Raises:
        ExportError: anything about the source, the task or the output directory that makes the
            export impossible, and a graph that does not match PyTorch.
    """
    settings = ExportOptions(task=task, **options)
    out = Path(out).expanduser().resolve()
    _check_out(out, settings.force)
    progress = _Progress(settings.progress)
    with progress.stage(f"resolving {source}"):
        model_source = resolve_source(
            source, settings.revision, settings.trust_remote_code, settings.allow_pickle
        )
    if out == model_source.path or out in model_source.path.parents:
        raise ExportError(f"output [{out}] would overwrite the model source [{model_source.path}]")
    spec = registry.architecture_spec(str(model_source.config.get("model_type")))
    if settings.task is not None:
        chosen = settings.task
    elif len(spec.tasks) == 1:  # DPR and RetriBERT: eland's rules know DPR only, the answer is the same
        (chosen,) = spec.tasks
    else:
        chosen = registry.detect_task(
            model_source.config.get("architectures"),
            model_source.config.get("id2label"),
            model_source.id,
            model_source.is_sentence_transformer,
        )
    registry.check_task(spec, chosen)
    input_names = registry.graph_inputs(spec, model_source.config.get("type_vocab_size"))
    with progress.stage("loading the tokenizer"):
        tokenizer = prepare_tokenizer(
            model_source.model_path,
            spec.tokenizer_type,
            chosen,
            settings.max_sequence_length,
            settings.trust_remote_code,
            registry.position_table(model_source.config),
        )
    progress.note(f"max_sequence_length {tokenizer.length.value}: {tokenizer.length.reason}")
    with progress.stage(f"loading the model for [{chosen}]"):
        from .loading import load_model

        loaded = load_model(
            model_source,
            spec,
            chosen,
            input_names,
            settings.retribert_tower,
            settings.trust_remote_code,
            settings.allow_pickle,
        )
    for notice in loaded.notices:
        progress.note(notice)
    labels = registry.labels_for_task(chosen, loaded.id2label, model_source.id)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    except OSError as error:
        raise ExportError(f"cannot write a package into [{out.parent}]: {error.strerror or error}") from error
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.work-") as work:
            expected, optimization, quantization = _write_graph(
                staging / GRAPH_NAME,
                Path(work),
                settings,
                spec,
                chosen,
                tokenizer,
                loaded,
                input_names,
                progress,
            )
        with progress.stage("writing the package"):
            tokenizer.save(staging)
            manifest = _manifest(
                model_source,
                spec,
                chosen,
                tokenizer,
                loaded,
                input_names,
                expected,
                labels,
                quantization,
                optimization,
            )
            write_manifest(staging, manifest)
            _publish(staging, out)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        if error.errno not in _NO_ROOM:
            raise
        raise ExportError(f"could not write the package [{out}] (nothing was left behind): {error.strerror}") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if settings.progress:
        print(f"[export] wrote {out}", file=sys.stderr)
    return out
