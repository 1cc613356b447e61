"""iob_decode against the plain-Python oracle (ELASTIC_REFERENCE.md §2.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.kernels import reference
from tests.kernels.helpers import PROPERTY, SEEDS, SIZES, close, logit, random_logits
from tests.kernels.loader import kernels
from tests.tolerances import FEW_ROUNDINGS_REL, NEAR_TIE_REL, ONE_ROUNDING_REL

O, B, I = 0, 1, 2  # noqa: E741 (the IOB tag names)

#: The default ES label map [O, B_MISC, I_MISC, B_PER, I_PER, B_ORG, I_ORG, B_LOC, I_LOC].
ES_KINDS = [O, B, I, B, I, B, I, B, I]
ES_ENTITIES = [-1, 0, 0, 1, 1, 2, 2, 3, 3]


def test_tag_kinds_are_exported() -> None:
    # engine.tasks.ner builds tag_kind from these; the values are the C contract (kernels.h).
    assert (kernels.IOB_OUTSIDE, kernels.IOB_BEGIN, kernels.IOB_INSIDE) == (O, B, I)


def decode(logits: np.ndarray, word_ids: list[int], kinds: list[int], entities: list[int]) -> list:
    return kernels.iob_decode(
        logits,
        np.asarray(word_ids, dtype=np.int32),
        np.asarray(kinds, dtype=np.int8),
        np.asarray(entities, dtype=np.int32),
    )


def check(logits: np.ndarray, word_ids: list[int], kinds: list[int], entities: list[int]) -> None:
    got = decode(logits, word_ids, kinds, entities)
    expected = reference.iob_decode(logits.tolist(), word_ids, kinds, entities)
    assert [span[:3] for span in got] == [span[:3] for span in expected]
    for (*_, score), (*_, expected_score) in zip(got, expected, strict=True):
        assert close(score, expected_score)


def no_near_ties(logits: np.ndarray, word_ids: list[int]) -> bool:
    """False when a word's two best mean probabilities differ by a rounding error: the kernel and the
    oracle sum in different orders, so such an argmax is not defined to the last bit."""
    for word in reference.iob_words(logits.tolist(), word_ids):
        ranked = sorted(word.probabilities, reverse=True)
        if len(ranked) > 1 and 0.0 < ranked[0] - ranked[1] <= NEAR_TIE_REL * ranked[0]:
            return False
    return True


@st.composite
def tag_sets(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Label kinds and entity ids: O, B-, I- labels over up to three entity types, in any order."""
    n_labels = draw(st.integers(1, 7))
    kinds = draw(st.lists(st.sampled_from([O, B, I]), min_size=n_labels, max_size=n_labels))
    entities = [-1 if kind == O else draw(st.integers(0, 2)) for kind in kinds]
    return kinds, entities


@st.composite
def word_id_lists(draw: st.DrawFn, n_tokens: int) -> list[int]:
    """Word ids as a tokenizer makes them: -1 for specials, runs of equal ids for sub-tokens, and
    sometimes an id that comes back after a special token (a separate word for Elasticsearch)."""
    ids, word = [], 0
    while len(ids) < n_tokens:
        if draw(st.integers(0, 5)) == 0:
            ids.append(-1)
            continue
        if ids and ids[-1] == -1 and draw(st.booleans()):
            word = max(word - 1, 0)
        ids.extend([word] * draw(st.integers(1, 3)))
        word += 1
    return ids[:n_tokens]


@PROPERTY
@given(data=st.data(), tags=tag_sets(), n_tokens=st.integers(0, 40))
def test_grouping_matches_reference(
    data: st.DataObject, tags: tuple[list[int], list[int]], n_tokens: int
) -> None:
    # Decisive logits (one label far above the rest, the same row for all tokens of a word), so this
    # property is about word building and IOB grouping rather than near ties.
    kinds, entities = tags
    word_ids = data.draw(word_id_lists(n_tokens))
    labels = data.draw(st.lists(st.integers(0, len(kinds) - 1), min_size=n_tokens, max_size=n_tokens))
    logits = np.zeros((n_tokens, len(kinds)), dtype=np.float32)
    for token in range(n_tokens):
        first = token
        while first > 0 and word_ids[first - 1] == word_ids[token] >= 0:
            first -= 1
        logits[token, labels[first]] = 12.0
    check(logits, word_ids, kinds, entities)


@PROPERTY
@given(data=st.data(), tags=tag_sets(), n_tokens=st.integers(0, 30))
def test_numerics_match_reference(
    data: st.DataObject, tags: tuple[list[int], list[int]], n_tokens: int
) -> None:
    kinds, entities = tags
    word_ids = data.draw(word_id_lists(n_tokens))
    logits = data.draw(hnp.arrays(np.float32, (n_tokens, len(kinds)), elements=logit))
    assume(no_near_ties(logits, word_ids))
    check(logits, word_ids, kinds, entities)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_tokens", SIZES)
def test_awkward_sizes(n_tokens: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = random_logits(seed, (n_tokens, len(ES_KINDS)), specials=False)
    word_ids = np.cumsum(rng.random(n_tokens) < 0.7).astype(int) - 1
    word_ids[0] = -1
    word_ids[-1] = -1
    if not no_near_ties(logits, word_ids.tolist()):
        pytest.skip("random data landed on a rounding-level tie")
    check(logits, word_ids.tolist(), ES_KINDS, ES_ENTITIES)


def one_hot(labels: list[int], n_labels: int = len(ES_KINDS)) -> np.ndarray:
    logits = np.zeros((len(labels), n_labels), dtype=np.float32)
    for token, label in enumerate(labels):
        logits[token, label] = 20.0
    return logits


def test_golden_es_example() -> None:
    # "[CLS] hi my name is josh and i live in berlin [SEP]": Josh = B_PER, Berlin = B_LOC.
    tokens = [0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 7, 0]
    word_ids = [-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -1]
    spans = decode(one_hot(tokens), word_ids, ES_KINDS, ES_ENTITIES)
    assert [span[:3] for span in spans] == [(5, 5, 1), (10, 10, 3)]
    expected_score = math.exp(20.0) / (math.exp(20.0) + 8)
    assert all(span[3] == pytest.approx(expected_score, rel=ONE_ROUNDING_REL) for span in spans)


def test_inside_tag_without_begin_starts_an_entity_and_begin_splits() -> None:
    # I_PER I_PER B_PER I_PER O I_LOC B_LOC
    labels = [4, 4, 3, 4, 0, 8, 7]
    spans = decode(one_hot(labels), list(range(7)), ES_KINDS, ES_ENTITIES)
    assert [span[:3] for span in spans] == [(0, 1, 1), (2, 3, 1), (5, 5, 3), (6, 6, 3)]


def test_entity_type_change_ends_an_entity() -> None:
    # B_PER I_ORG I_ORG: the I_ORG run opens its own entity.
    spans = decode(one_hot([3, 6, 6]), [0, 1, 2], ES_KINDS, ES_ENTITIES)
    assert [span[:3] for span in spans] == [(0, 0, 1), (1, 2, 2)]


def test_sub_tokens_are_averaged_and_span_the_whole_word() -> None:
    # One word of three sub-tokens: PER, PER, LOC probabilities -> PER with mean 2/3 of the peak.
    logits = one_hot([3, 3, 7])
    spans = decode(logits, [0, 0, 0], ES_KINDS, ES_ENTITIES)
    peak = math.exp(20.0) / (math.exp(20.0) + 8)
    low = 1 / (math.exp(20.0) + 8)
    assert [span[:3] for span in spans] == [(0, 2, 1)]
    assert spans[0][3] == pytest.approx((2 * peak + low) / 3, rel=FEW_ROUNDINGS_REL)


def test_word_id_after_a_special_token_is_a_new_word() -> None:
    spans = decode(one_hot([3, 0, 4]), [0, -1, 0], ES_KINDS, ES_ENTITIES)
    assert [span[:3] for span in spans] == [(0, 2, 1)]
    spans = decode(one_hot([3, 0, 3]), [0, -1, 0], ES_KINDS, ES_ENTITIES)
    assert [span[:3] for span in spans] == [(0, 0, 1), (2, 2, 1)]


def test_first_argmax_wins_on_ties() -> None:
    logits = np.array([[0.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    spans = decode(logits, [0], [O, B, B, B], [-1, 7, 8, 9])
    assert [span[:3] for span in spans] == [(0, 0, 7)]


def test_empty_and_special_only_inputs() -> None:
    assert decode(np.zeros((0, 9), dtype=np.float32), [], ES_KINDS, ES_ENTITIES) == []
    assert decode(np.zeros((2, 9), dtype=np.float32), [-1, -1], ES_KINDS, ES_ENTITIES) == []
    assert decode(np.zeros((2, 0), dtype=np.float32), [-1, -1], [], []) == []


def test_bad_tag_kind_and_missing_labels_raise() -> None:
    with pytest.raises(ValueError, match="tag_kind"):
        decode(np.zeros((1, 2), dtype=np.float32), [0], [0, 3], [-1, 0])
    with pytest.raises(ValueError, match="no labels"):
        decode(np.zeros((1, 0), dtype=np.float32), [0], [], [])
