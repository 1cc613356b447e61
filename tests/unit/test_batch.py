"""collate / split_outputs: padding, masks, and that a batch gives each row what it gets alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.batch import Batch, collate, split_outputs
from engine.errors import ModelError

NAMES_AXES = [("pooled", ["batch", "hidden"]), ("logits", ["batch", "sequence", "labels"]),
              ("pair", ["batch", "sequence", "sequence"])]


@dataclasses.dataclass
class Row:
    input_ids: np.ndarray
    token_type_ids: np.ndarray


def row(ids: list[int], types: list[int] | None = None) -> Row:
    return Row(np.array(ids, np.int64), np.array(types if types is not None else [0] * len(ids), np.int64))


def fake_graph(batch: Batch) -> list[np.ndarray]:
    """Per-position outputs that only depend on the row's own unpadded tokens, like a real encoder."""
    ids = batch.inputs["input_ids"].astype(np.float32)
    mask = batch.inputs["attention_mask"].astype(np.float32)
    pooled = np.stack([(ids * mask).sum(axis=1), mask.sum(axis=1)], axis=1)
    logits = np.stack([ids, ids * 2, ids * 3], axis=2) * mask[:, :, None]
    pair = ids[:, :, None] * ids[:, None, :] * mask[:, :, None] * mask[:, None, :]
    return [pooled, logits, pair]


def test_collate_pads_right_with_pad_id_and_zero_mask() -> None:
    rows = [row([101, 7, 102]), row([101, 102]), row([101, 8, 9, 10, 102], [0, 0, 1, 1, 1])]
    batch = collate(rows, ["input_ids", "attention_mask", "token_type_ids"], pad_id=3, owners=["a", "b", "c"])
    np.testing.assert_array_equal(batch.inputs["input_ids"], [[101, 7, 102, 3, 3], [101, 102, 3, 3, 3],
                                                              [101, 8, 9, 10, 102]])
    np.testing.assert_array_equal(batch.inputs["attention_mask"], [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0],
                                                                   [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(batch.inputs["token_type_ids"][2], [0, 0, 1, 1, 1])
    assert batch.inputs["token_type_ids"][:2].sum() == 0
    assert list(batch.inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(array.dtype == np.int64 for array in batch.inputs.values())
    assert batch.lengths.tolist() == [3, 2, 5] and batch.owners == ("a", "b", "c")
    assert (batch.n_rows, batch.max_length, batch.padded_tokens) == (3, 5, 15)


def test_collate_builds_only_the_inputs_the_graph_takes() -> None:
    batch = collate([row([1, 2], [1, 1])], ["attention_mask", "input_ids"], pad_id=0)
    assert list(batch.inputs) == ["attention_mask", "input_ids"]
    assert batch.owners == (None,)


def test_collate_rejects_what_it_cannot_build() -> None:
    with pytest.raises(ModelError, match="position_ids"):
        collate([row([1])], ["input_ids", "position_ids"], pad_id=0)
    with pytest.raises(ValueError):
        collate([], ["input_ids"], pad_id=0)
    with pytest.raises(ValueError):
        collate([row([1])], ["input_ids"], pad_id=0, owners=["a", "b"])


def test_split_trims_every_sequence_axis_and_copies() -> None:
    batch = collate([row([5, 6, 7]), row([9])], ["input_ids", "attention_mask"], pad_id=0)
    outputs = fake_graph(batch)
    pooled, logits, pair = split_outputs(outputs, NAMES_AXES, batch.lengths)[1]
    assert pooled.shape == (2,) and logits.shape == (1, 3) and pair.shape == (1, 1)
    np.testing.assert_array_equal(logits, [[9, 18, 27]])
    assert logits.flags.c_contiguous and logits.flags.writeable
    assert not np.shares_memory(logits, outputs[1])


def test_split_checks_shapes_against_the_manifest() -> None:
    lengths = np.array([2, 3])
    good = [np.zeros((2, 4), np.float32)]
    with pytest.raises(ModelError, match="returned 1 outputs; the manifest lists 2"):
        split_outputs(good, NAMES_AXES[:2], lengths)
    with pytest.raises(ModelError, match="has shape"):
        split_outputs([np.zeros((2, 4, 1), np.float32)], NAMES_AXES[:1], lengths)
    with pytest.raises(ModelError, match="3 rows for a batch of 2"):
        split_outputs([np.zeros((3, 4), np.float32)], NAMES_AXES[:1], lengths)
    with pytest.raises(ModelError, match="shorter than the batch's longest row"):
        split_outputs([np.zeros((2, 2, 3), np.float32)], [NAMES_AXES[1]], lengths)
    with pytest.raises(ModelError, match="has shape"):
        split_outputs([np.zeros((2, 4), np.float32)], [("x", ["hidden", "batch"])], lengths)


token_rows = st.lists(st.lists(st.integers(1, 500), min_size=1, max_size=12), min_size=1, max_size=9)


@settings(max_examples=60, deadline=None)
@given(token_rows, st.integers(0, 3))
def test_batched_outputs_equal_each_row_run_alone(rows: list[list[int]], pad_id: int) -> None:
    windows = [row(ids) for ids in rows]
    batch = collate(windows, ["input_ids", "attention_mask"], pad_id=pad_id)
    batched = split_outputs(fake_graph(batch), NAMES_AXES, batch.lengths)
    for window, got in zip(windows, batched, strict=True):
        alone = collate([window], ["input_ids", "attention_mask"], pad_id=pad_id)
        (want,) = split_outputs(fake_graph(alone), NAMES_AXES, alone.lengths)
        for got_array, want_array in zip(got, want, strict=True):
            np.testing.assert_array_equal(got_array, want_array)
