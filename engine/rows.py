"""Results that line up with inputs: one ``(result, error)`` per input row, for every batch interface.

A batch of texts succeeds or fails as a whole in :meth:`engine.deployment.Deployment.infer` (as an
Elasticsearch ``_infer`` call does). Line-oriented callers (``engine run`` on stdin, batch jobs) need
the opposite: one output per input, a refused row (an empty line, a fill_mask text without a mask)
answered by an error in its place, never dropped. :func:`run_rows` gives that without running rows one
by one: the whole batch first, and only when an *input* error refuses it, each half again, so k bad
rows among n cost about ``2 k log2 n`` extra calls. Errors that are not about one row (a timeout, a
stopped deployment, the wrong task for the model) fail the whole call, unless the caller asks for them
as records (``record_call_errors``): a batch job's contract is that a bad row is an error record,
never a lost row or a dead job, so it records them in every row of the failed call and goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import EngineError, InvalidInput

DEFAULT_BATCH_SIZE = 64  # rows per call of a batch job (engine batch, engine.ray.infer_dataset)
ERROR_COLUMN = "error"  # the field of a batch job's output record that holds a row's error_record

Result = tuple[dict[str, Any] | None, dict[str, Any] | None]  # (result, error): exactly one is set


def error_record(error: EngineError) -> dict[str, Any]:
    """A refused row's error, with the fields of an Elasticsearch error body."""
    return {"type": error.error_type, "reason": error.message, "status": error.status}


def run_rows(infer: Callable[..., list[dict[str, Any]]], values: Sequence[Any],
             config: Mapping[str, Any] | None = None, *, record_call_errors: bool = False) -> list[Result]:
    """Every value's ``(result, error)``, in input order.

    Args:
        infer: runs a list of texts and returns one result per text (``engine.run`` bound to a task,
            a deployment's ``infer``); it raises :class:`InvalidInput` when a text is refused.
        values: the rows; a value that is not a string is refused without running.
        config: keyword arguments for every ``infer`` call.
        record_call_errors: False (``engine run``): an error that is not an input error fails the
            call. True (batch jobs): it becomes the error record of every row of the ``infer`` call
            that raised it, and the other rows still run.

    Raises:
        EngineError: an error that is not an input error (it concerns every row), unless
            ``record_call_errors``.
    """
    config = dict(config or {})
    results: list[Result | None] = [None] * len(values)
    texts: list[tuple[int, str]] = []
    for index, value in enumerate(values):
        if isinstance(value, str):
            texts.append((index, value))
        else:
            refused = InvalidInput(f"Input value [{value!r}] for field [text_field] must be a string")
            results[index] = (None, error_record(refused))

    def run(part: list[tuple[int, str]]) -> None:
        try:
            answers = infer([text for _, text in part], **config)
        except InvalidInput as error:
            if len(part) == 1:
                results[part[0][0]] = (None, error_record(error))
                return
            middle = len(part) // 2
            run(part[:middle])
            run(part[middle:])
            return
        except EngineError as error:
            if not record_call_errors:
                raise
            for index, _ in part:
                results[index] = (None, error_record(error))
            return
        for (index, _), answer in zip(part, answers, strict=True):
            results[index] = (answer, None)

    if texts:
        run(texts)
    answered: list[Result] = []
    for item in results:
        assert item is not None, "every row is answered by a result or an error"
        answered.append(item)
    return answered
