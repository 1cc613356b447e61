"""The ``engine export`` verb: argparse wiring over :func:`exporters.export`.

``engine/cli.py`` calls :func:`add_export_parser` on its subparsers and dispatches to
:func:`run_export`. ``--task``, ``--quantize``, ``--max-sequence-length`` and ``--opset`` take their
defaults from ``ENGINE_EXPORT_TASK``, ``ENGINE_EXPORT_QUANTIZE``, ``ENGINE_EXPORT_MAX_SEQUENCE_LENGTH`` and
``ENGINE_EXPORT_OPSET``; argparse converts and checks those strings like typed values.
"""

from __future__ import annotations

import argparse
import os
import sys

from engine.errors import EngineError
from engine.manifest import TASKS

from .export import DEFAULT_OPSET, QUANTIZE_MODES, RETRIBERT_TOWERS, export


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export`` to the ``engine`` command's subparsers and return its parser."""
    parser = subparsers.add_parser(
        "export",
        help="export a Hugging Face model to a model package",
        description="Export a Hugging Face model (local directory or hub id) to an ONNX model package.",
    )
    parser.add_argument(
        "source",
        help="a local model directory, or a Hugging Face hub id org/name (needs the network); anything else "
        "that is not a directory is reported as missing",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default=os.environ.get("ENGINE_EXPORT_TASK"),
        help="the Elasticsearch task the package serves; omit to detect it from the model config as eland does",
    )
    parser.add_argument(
        "--out", required=True, help="package directory to create (must be empty unless --force)"
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE_MODES,
        default=os.environ.get("ENGINE_EXPORT_QUANTIZE", "int8"),
        help="int8 (default) is smaller and faster and is kept only if it agrees with fp32; "
        "use none when exact fp32 outputs matter more than speed",
    )
    parser.add_argument(
        "--max-sequence-length",
        type=int,
        default=os.environ.get("ENGINE_EXPORT_MAX_SEQUENCE_LENGTH"),
        help="tokens per model row; default: the tokenizer's model_max_length, else the config's "
        "max_position_embeddings less the architecture's position offset (QA: 386); the export prints "
        "which. Lower it to cap latency on long inputs",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=os.environ.get("ENGINE_EXPORT_OPSET", str(DEFAULT_OPSET)),
        help=f"ONNX opset (default {DEFAULT_OPSET}); change only for an older ONNX Runtime",
    )
    parser.add_argument(
        "--no-fuse",
        dest="fuse",
        action="store_false",
        help="skip ONNX Runtime's transformer fusions: standard ONNX ops only, for other runtimes or debugging",
    )
    parser.add_argument(
        "--accuracy-threshold",
        type=float,
        default=os.environ.get("ENGINE_EXPORT_ACCURACY_THRESHOLD"),
        help="agreement with fp32 the int8 graph must reach, in [0, 1] (default 0.99: embeddings mean cosine, "
        "classification/token argmax agreement); the guard keeps the most sensitive nodes in fp32 until it "
        "does. Lower it to trade accuracy for speed; the measured agreement is in engine.json either way",
    )
    parser.add_argument(
        "--accuracy-tail",
        type=float,
        default=os.environ.get("ENGINE_EXPORT_ACCURACY_TAIL"),
        help="what the worst case of every length bucket must reach, in [0, 1]: the 1st percentile of short "
        "queries, the minimum of sentences and passages (default for embeddings: cosine 0.96 short, 0.97 "
        "sentences and passages; none for labels); one value for every bucket. Raise it for a stricter worst "
        "case at the price of nodes kept in fp32",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out directory")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow models that ship their own Python code (it runs during export)",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow pytorch_model.bin weights; unpickling can run arbitrary code, prefer safetensors",
    )
    parser.add_argument(
        "--tower",
        choices=RETRIBERT_TOWERS,
        default="query",
        help="RetriBERT only: which tower becomes the graph (query for search text, document for indexing)",
    )
    parser.add_argument("--revision", help="hub revision (branch, tag or commit) for a hub id")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run_export)
    return parser


def run_export(args: argparse.Namespace) -> int:
    """Run the export; one error line on stderr and the error's exit code on failure."""
    try:
        path = export(
            args.source,
            args.out,
            task=args.task,
            quantize=args.quantize,
            max_sequence_length=args.max_sequence_length,
            opset=args.opset,
            fuse=args.fuse,
            force=args.force,
            trust_remote_code=args.trust_remote_code,
            allow_pickle=args.allow_pickle,
            retribert_tower=args.tower,
            revision=args.revision,
            accuracy_threshold=None if args.accuracy_threshold is None else float(args.accuracy_threshold),
            accuracy_tail=None if args.accuracy_tail is None else float(args.accuracy_tail),
            progress=not args.quiet,
        )
    except EngineError as error:
        print(f"engine export: error: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("engine export: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(path)
    return 0
