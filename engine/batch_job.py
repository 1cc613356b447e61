"""``engine batch``: run one task over a whole file, locally or on Ray Data, every row exactly once.

Input is ``.jsonl`` (one object per line; the text in ``--column``), ``.parquet`` (a column), or ``.txt``
(one text per line). Output (``.jsonl`` or ``.parquet``) has one record per input row, in input order:
the input record plus ``<output_column>`` (the result, as ``engine.run`` returns it) or ``error``
(``{"type", "reason", "status"}``) for a row the task refuses (an empty text, a non-string value) or
a ``.jsonl`` line that is not a JSON object (``{"line": N, "error": ...}``, never run): a bad row
becomes an error record, never a lost row or a dead job. The output is written to
``<output>.partial`` and renamed when the job is complete, so a file at ``--output`` is always whole.

Locally the rows run on the engine's own deployment (``engine.load``) in chunks through
:func:`engine.rows.run_rows` (the per-row error mechanism of ``engine run``, with errors that are not
about one row recorded too), a few chunks in flight so every allocation stays busy; ``--ray`` runs
them on Ray Data (:func:`engine.ray.infer_dataset`), actors of ``threads_per_allocation`` CPUs with
one session each.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidInput
from .progress import on_terminal, progress_bar
from .rows import DEFAULT_BATCH_SIZE, ERROR_COLUMN, Result, error_record, run_rows
from .units import parse_json_object

# Fail at import without the batch extra, so `engine` lists `batch` as "install engine[batch]" (engine/cli.py).
if importlib.util.find_spec("tqdm") is None:
    raise ImportError("engine batch needs tqdm: pip install 'engine[batch]'")

INPUT_SUFFIXES = (".jsonl", ".parquet", ".txt")
OUTPUT_SUFFIXES = (".jsonl", ".parquet")

# -- files ---------------------------------------------------------------------------------------


class UnreadableLine(dict):
    """A ``.jsonl`` line that is not a JSON object: its output record as it is written
    (``{"line": N, "error": ...}``). The job never runs it; a type of its own, so an input record
    that happens to have an ``error`` field is still an ordinary row."""

    def __init__(self, path: str | os.PathLike[str], number: int, problem: str) -> None:
        error = InvalidInput(f"--input [{path}] line {number} {problem}")
        super().__init__({"line": number, ERROR_COLUMN: error_record(error)})


def _suffix(path: str | os.PathLike[str], allowed: tuple[str, ...], what: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in allowed:
        raise InvalidInput(f"{what} [{path}] must end in one of {list(allowed)}")
    return suffix


def read_records(path: str | os.PathLike[str], column: str) -> Iterator[dict[str, Any]]:
    """The input rows as records (a ``.txt`` line becomes ``{column: line}``), in file order.

    A blank ``.jsonl`` line is read as ``{column: ""}``, as a blank ``.txt`` line is: it gets an error
    record in the output (an empty text is refused), so output rows stay aligned with input lines.
    A line that is not a JSON object is an :class:`UnreadableLine`, for the same reason.

    Raises:
        InvalidInput: unreadable file, a parquet file without the column.
    """
    suffix = _suffix(path, INPUT_SUFFIXES, "--input")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as parquet

            table = parquet.read_table(path)
            if column not in table.column_names:
                raise InvalidInput(f"--input [{path}] has no column [{column}]; it has {table.column_names}")
            yield from table.to_pylist()
            return
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\n")
                if suffix == ".txt":
                    yield {column: line}
                    continue
                if not line.strip():
                    yield {column: ""}  # a row too: the task refuses the empty text, its record says so
                    continue
                try:
                    record = json.loads(line)
                except ValueError as error:
                    yield UnreadableLine(path, number, f"is not JSON: {error}")
                    continue
                yield record if isinstance(record, dict) else UnreadableLine(path, number, "is not a JSON object")
    except OSError as error:
        raise InvalidInput(f"cannot read --input [{path}]: {error}") from error


class RecordWriter:
    """Writes output records in order to ``<path>.partial``; ``commit`` renames it to ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.suffix = _suffix(path, OUTPUT_SUFFIXES, "--output")
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.rows = 0
        self.errors = 0
        self._records: list[dict[str, Any]] = []
        self._handle = open(self.partial, "w", encoding="utf-8") if self.suffix == ".jsonl" else None  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        self.rows += 1
        self.errors += record.get(ERROR_COLUMN) is not None
        if self._handle is not None:
            self._handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        else:
            self._records.append(record)

    def commit(self) -> None:
        if self._handle is not None:
            self._handle.close()
        else:
            import pyarrow as pa
            import pyarrow.parquet as parquet

            # nested results vary in shape from task to task: parquet keeps them as JSON text; a row
            # without a result (or without an error) has a null there
            names = list(dict.fromkeys(key for record in self._records for key in record))
            columns = {name: [_cell(record.get(name)) for record in self._records] for name in names}
            parquet.write_table(pa.table(columns), self.partial)
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self.partial.unlink(missing_ok=True)


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def _progress(total: int | None, enabled: bool, where: str) -> Any:
    """A bar over the rows when progress is on and stderr is a terminal; elsewhere (a log, CI) a plain
    stage line now and the summary line at the end are the progress, as in bench and the exporter."""
    if enabled and not on_terminal():
        print(f"engine batch: {total} rows, {where}", file=sys.stderr, flush=True)
    return progress_bar(total, unit="row", enabled=enabled)


def _chunks(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_local(task: str, model: str | None, input_path: str, output_path: str, *, column: str = "text",
              output_column: str = "result", batch_size: int = DEFAULT_BATCH_SIZE, number_of_allocations: int = 1,
              threads_per_allocation: int = 1, config: Mapping[str, Any] | None = None,
              progress: bool = True) -> RecordWriter:
    """The job on this machine: one engine deployment, ``2 × allocations`` chunks in flight, each
    chunk's rows through :func:`engine.rows.run_rows` in the deployment's blocking mode
    (``wait_for_room``), so a chunk waits for room in the queue rather than failing with QueueFull.

    Returns the committed writer (``rows``, ``errors``).
    """
    from .api import load

    in_flight = 2 * number_of_allocations
    deployment = load(model, task=task, number_of_allocations=number_of_allocations,
                      threads_per_allocation=threads_per_allocation, queue_capacity=batch_size * in_flight,
                      cache_size=0)  # a corpus seldom repeats
    infer = functools.partial(deployment.infer, wait_for_room=True)
    writer = RecordWriter(output_path)
    total = sum(1 for _ in read_records(input_path, column)) if progress else None
    try:
        with (_progress(total, progress, "running locally") as bar,
              concurrent.futures.ThreadPoolExecutor(in_flight) as pool):
            pending: collections.deque[tuple[list[dict[str, Any]], concurrent.futures.Future[list[Result]]]] = (
                collections.deque())

            def drain(keep: int) -> None:
                while len(pending) > keep:
                    chunk, future = pending.popleft()
                    for record, (result, error) in zip(chunk, future.result(), strict=True):
                        writer.write(record if isinstance(record, UnreadableLine)
                                     else _output_record(record, output_column, result, error))
                    bar.update(len(chunk))

            for chunk in _chunks(read_records(input_path, column), batch_size):
                # an unreadable line's None is refused without running; its own record is written
                values = [None if isinstance(record, UnreadableLine) else record.get(column) for record in chunk]
                pending.append((chunk, pool.submit(run_rows, infer, values, dict(config or {}),
                                                   record_call_errors=True)))
                drain(in_flight)
            drain(0)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        deployment.stop(drain=False)
    return writer


def _output_record(record: Mapping[str, Any], output_column: str, result: Any, error: Any) -> dict[str, Any]:
    output = dict(record)
    if error is not None:
        output[ERROR_COLUMN] = error
    else:
        output[output_column] = result
    return output


def run_on_ray(task: str, model: str | None, input_path: str, output_path: str, *, address: str | None,
               column: str = "text", output_column: str = "result", batch_size: int = DEFAULT_BATCH_SIZE,
               concurrency: int = 1, threads_per_allocation: int = 1, config: Mapping[str, Any] | None = None,
               progress: bool = True) -> RecordWriter:
    """The job on Ray Data: this process reads the file (so no node needs it) into the object store,
    ``concurrency`` actors run the rows, results stream back here in input order and are written here.
    A corpus larger than one machine goes through :func:`engine.ray.infer_dataset` with Ray's own
    readers (``ray.data.read_parquet("s3://...")``) instead."""
    import ray.data

    from .api import resolve_model
    from .ray import connect, infer_dataset

    records = list(read_records(input_path, column))
    readable = [record for record in records if not isinstance(record, UnreadableLine)]
    writer = RecordWriter(output_path)
    package = resolve_model(model, task)
    connect(address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    blocks = max(1, min(len(readable) // batch_size, 4 * concurrency))
    source = ray.data.from_items(readable, override_num_blocks=blocks)
    total = len(records)
    results = infer_dataset(source, str(package), task, column=column, output_column=output_column,
                            concurrency=concurrency, threads_per_allocation=threads_per_allocation,
                            batch_size=batch_size, **dict(config or {}))
    try:
        with _progress(total, progress, "running on Ray Data") as bar:
            rows = (row for batch in results.iter_batches(batch_size=batch_size, batch_format="pyarrow")
                    for row in batch.to_pylist())
            for record in records:  # results come back in input order; unreadable lines were held back
                if isinstance(record, UnreadableLine):
                    writer.write(record)
                else:
                    row = next(rows)
                    result, error = row.pop(output_column), row.pop(ERROR_COLUMN)
                    writer.write(_output_record(row, output_column, json.loads(result) if result else None,
                                                json.loads(error) if error else None))
                bar.update(1)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer


# -- the CLI verb --------------------------------------------------------------------------------


def add_batch_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``batch`` verb to the ``engine`` command."""
    parser = subparsers.add_parser(
        "batch",
        help="run a task over a .jsonl/.parquet/.txt file, locally or on a Ray cluster",
        description="Run one task over every row of a file and write one output record per row, in input "
        "order: the row plus its result, or an error record for a row the task refuses.",
    )
    parser.add_argument("--task", required=True, help="the Elasticsearch task (text_embedding, ner, ...)")
    parser.add_argument("--model", "-m", default=os.environ.get("ENGINE_MODEL"),
                        help="model package dir, Hugging Face model dir or hub id; default: the task's default "
                        "model. Env: ENGINE_MODEL")
    parser.add_argument("--input", required=True, help="a .jsonl, .parquet or .txt file")
    parser.add_argument("--output", required=True, help="a .jsonl or .parquet file (written when complete)")
    parser.add_argument("--column", default="text", help="the input field holding the text (default text)")
    parser.add_argument("--output-column", default="result", help="the output field of a row's result")
    parser.add_argument("--config", "-c", default=None, help="the task's inference_config update as JSON")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"rows per chunk sent to a deployment or Ray actor (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--threads-per-allocation", type=int, default=1,
                        help="ONNX Runtime threads per allocation (local) or per Ray actor (default 1)")
    parser.add_argument("--number-of-allocations", type=int, default=1,
                        help="local: allocations of the deployment; with --ray: Ray Data actors (default 1)")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run on Ray Data; ADDRESS is the cluster (default: RAY_ADDRESS, a local `ray start` "
                        "cluster, or a new local one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=_cmd_batch)
    return parser


def _cmd_batch(args: argparse.Namespace) -> int:
    config = parse_json_object(args.config) if args.config else {}
    if args.batch_size < 1 or args.number_of_allocations < 1:
        raise InvalidInput("--batch-size and --number-of-allocations must be positive")
    common = dict(column=args.column, output_column=args.output_column, batch_size=args.batch_size,
                  threads_per_allocation=args.threads_per_allocation, config=config, progress=not args.no_progress)
    if args.ray is None:
        writer = run_local(args.task, args.model, args.input, args.output,
                           number_of_allocations=args.number_of_allocations, **common)
    else:
        writer = run_on_ray(args.task, args.model, args.input, args.output, address=args.ray or None,
                            concurrency=args.number_of_allocations, **common)
    print(f"engine batch: {writer.rows} rows, {writer.errors} errors -> {writer.path}", file=sys.stderr)
    return 0
