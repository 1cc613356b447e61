"""The contract between the scheduler and the graph: padded rows in, per-row outputs back.

The scheduler packs windows (one model row each) from many requests into one padded batch so ONNX
Runtime runs them in a single call; :func:`split_outputs` undoes the padding so that every task sees
exactly the outputs a batch of one would have given it. Padding is on the right, with
``attention_mask`` 0 on every padded position (DESIGN.md: correct masks, unlike Elasticsearch's
§4.7 quirk of masking with the pad id). This module imports nothing of the engine but its errors,
so every stage may depend on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .errors import ModelError

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
BATCH_AXIS = "batch"
SEQUENCE_AXIS = "sequence"


class Row(Protocol):
    """What :func:`collate` needs of a window (``engine.tokenization.Window`` has it)."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray


@dataclasses.dataclass(frozen=True)
class Batch:
    """One padded batch, ready for ``session.run``.

    Attributes:
        inputs: the graph feeds, exactly the input names the manifest lists, each int64 ``[rows, max_len]``.
        lengths: int64 ``[rows]``, each row's true length (what ``split_outputs`` trims back to).
        owners: per row, whatever the scheduler passed to say where the row came from.
    """

    inputs: dict[str, np.ndarray]
    lengths: np.ndarray
    owners: tuple[Any, ...]

    @property
    def n_rows(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def max_length(self) -> int:
        return int(self.lengths.max()) if self.n_rows else 0

    @property
    def padded_tokens(self) -> int:
        """What the batch costs a padded model: ``max_len × rows`` (the token budget's unit)."""
        return self.max_length * self.n_rows


def collate(
    windows: Sequence[Row], input_names: Sequence[str], pad_id: int, owners: Sequence[Any] | None = None
) -> Batch:
    """Pad rows to the longest one and build the feeds the graph declares.

    Args:
        windows: the rows, in batch order; at least one.
        input_names: the manifest's ``inputs`` (a subset of ``input_ids``, ``attention_mask``,
            ``token_type_ids``); ``token_type_ids`` is only built when the graph takes it.
        pad_id: the tokenizer's pad token id, written into ``input_ids`` past each row's end.
        owners: optional per-row tags carried through to :attr:`Batch.owners`.

    Raises:
        ModelError: the manifest names an input this engine cannot build.
        ValueError: no rows, or ``owners`` of the wrong length (a scheduler bug, not a user error).
    """
    unknown = [name for name in input_names if name not in INPUT_NAMES]
    if unknown:
        raise ModelError(f"the graph takes inputs {unknown} that the engine cannot build; it builds {INPUT_NAMES}")
    if not windows:
        raise ValueError("collate needs at least one row")
    if owners is not None and len(owners) != len(windows):
        raise ValueError(f"collate got {len(owners)} owners for {len(windows)} rows")
    lengths = np.fromiter((len(window.input_ids) for window in windows), dtype=np.int64, count=len(windows))
    n_rows, max_length = len(windows), int(lengths.max())
    input_ids = np.full((n_rows, max_length), pad_id, dtype=np.int64)
    attention_mask = np.zeros((n_rows, max_length), dtype=np.int64)
    wants_types = "token_type_ids" in input_names
    token_type_ids = np.zeros((n_rows, max_length), dtype=np.int64) if wants_types else None
    for row, window in enumerate(windows):
        length = int(lengths[row])
        input_ids[row, :length] = window.input_ids
        attention_mask[row, :length] = 1
        if token_type_ids is not None:
            token_type_ids[row, :length] = window.token_type_ids
    built = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    inputs = {name: built[name] for name in input_names}
    return Batch(inputs=inputs, lengths=lengths, owners=tuple(owners) if owners is not None else (None,) * n_rows)


def split_outputs(
    outputs: Sequence[np.ndarray], names_axes: Sequence[tuple[str, Sequence[str]]], lengths: np.ndarray
) -> list[tuple[np.ndarray, ...]]:
    """Cut a batch's graph outputs back into one tuple per row, as if each row had run alone.

    Args:
        outputs: what ``session.run`` returned, in manifest output order.
        names_axes: ``(name, axes)`` per output, from the manifest; ``axes[0]`` must be ``batch``.
        lengths: each row's true length; every ``sequence`` axis is trimmed to it.

    Returns:
        ``result[row]`` = the outputs of that row, batch axis removed, C-contiguous copies (so a
        task may keep or modify them without pinning the whole batch in memory).

    Raises:
        ModelError: an output whose rank, batch size or sequence length disagrees with the manifest.
    """
    if len(outputs) != len(names_axes):
        raise ModelError(f"the graph returned {len(outputs)} outputs; the manifest lists {len(names_axes)}")
    n_rows = int(len(lengths))
    trims: list[list[int]] = []
    for array, (name, axes) in zip(outputs, names_axes, strict=True):
        if array.ndim != len(axes) or not axes or axes[0] != BATCH_AXIS:
            raise ModelError(
                f"graph output [{name}] has shape {list(array.shape)}; the manifest gives axes {list(axes)}"
            )
        if array.shape[0] != n_rows:
            raise ModelError(f"graph output [{name}] has {array.shape[0]} rows for a batch of {n_rows}")
        sequence_axes = [index - 1 for index, axis in enumerate(axes) if axis == SEQUENCE_AXIS]
        longest = int(lengths.max()) if n_rows else 0
        for index in sequence_axes:
            if array.shape[index + 1] < longest:
                raise ModelError(
                    f"graph output [{name}] has sequence length {array.shape[index + 1]}, "
                    f"shorter than the batch's longest row ({longest})"
                )
        trims.append(sequence_axes)
    rows: list[tuple[np.ndarray, ...]] = []
    for row in range(n_rows):
        length = int(lengths[row])
        per_output = []
        for array, sequence_axes in zip(outputs, trims, strict=True):
            index: list[slice | int] = [slice(None)] * (array.ndim - 1)
            for axis in sequence_axes:
                index[axis] = slice(0, length)
            per_output.append(np.array(array[row][tuple(index)], order="C", copy=True))
        rows.append(tuple(per_output))
    return rows
