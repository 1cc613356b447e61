"""engine.tokenization: Elasticsearch's layouts, truncation, windowing, word map and errors (§4).

Real tokenizers: MiniLM (bert, uncased), SPLADE-tiny, the ../shared task models. The other families
are trained here (tests/unit/tokenization_cases.py); their Hugging Face post-processors serve as the
oracle for the special-token layouts.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as RustTokenizer

from engine.errors import InputTooLarge, InvalidInput, ModelError, PackageError
from engine.manifest import TokenizationConfig
from engine.tokenization import (
    EMPTY_TEXT_MESSAGE,
    NO_PROGRESS_MESSAGE,
    NOT_UNICODE_MESSAGE,
    PAIR_WITHOUT_SPECIALS_MESSAGE,
    Tokenized,
    Tokenizer,
    Window,
    validate_window_settings,
)

from .tokenization_cases import BUILDERS, words

TYPES = ("bert", "mpnet", "roberta", "xlm_roberta", "deberta_v2")
SPECIALS = {
    "bert": ("[CLS]", "[SEP]", "[MASK]"),
    "mpnet": ("<s>", "</s>", "<mask>"),
    "roberta": ("<s>", "</s>", "<mask>"),
    "xlm_roberta": ("<s>", "</s>", "<mask>"),
    "deberta_v2": ("[CLS]", "[SEP]", "[MASK]"),
}
SAMPLE = "Héllo wörld, unbelievable things happen in Zürich every day."
OTHER = "The capital of France is Paris."


@pytest.fixture(scope="session")
def tokenizer_files(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tokenizers")
    files = {name: build(folder / f"{name}.json") for name, build in BUILDERS.items()}
    files["bert"] = minilm_dir / "tokenizer.json"
    return files


@functools.cache
def _load(path: str, **config: object) -> Tokenizer:
    return Tokenizer.from_file(path, TokenizationConfig(**config), {})


@pytest.fixture(scope="session")
def make(tokenizer_files: dict[str, Path]):
    """``make(type, **config)``: a cached Tokenizer of that family (config defaults: Elasticsearch's)."""

    def build(kind: str, **config: object) -> Tokenizer:
        return _load(str(tokenizer_files[kind]), type=kind, **config)

    return build


@pytest.fixture(scope="session")
def rust(tokenizer_files: dict[str, Path]):
    """The plain Hugging Face tokenizer of a family, specials added by its own post-processor."""

    def build(kind: str) -> RustTokenizer:
        tokenizer = RustTokenizer.from_file(str(tokenizer_files[kind]))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    return build


def raw_ids(tokenizer: RustTokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def only_window(tokenized: Tokenized) -> Window:
    assert len(tokenized.windows) == 1
    return tokenized.windows[0]


def inner(window: Window, sequence: int) -> np.ndarray:
    return window.input_ids[window.sequence_ids == sequence]


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("kind", TYPES)
def test_single_layout_matches_the_families_own_post_processor(kind, make, rust):
    tokenizer, reference = make(kind), rust(kind)
    window = only_window(tokenizer.single(SAMPLE, "first", -1))
    expected = reference.encode(SAMPLE)
    assert window.input_ids.tolist() == expected.ids
    assert window.input_ids.dtype == np.int64 and window.word_ids.dtype == np.int32
    assert window.offsets.dtype == np.int32 and window.sequence_ids.dtype == np.int8
    cls, sep, _ = SPECIALS[kind]
    assert window.input_ids[0] == reference.token_to_id(cls) == tokenizer.cls_token_id
    assert window.input_ids[-1] == reference.token_to_id(sep) == tokenizer.sep_token_id
    assert window.sequence_ids.tolist() == [-1] + [0] * (len(window) - 2) + [-1]
    assert window.word_ids[[0, -1]].tolist() == [-1, -1]
    assert window.offsets[[0, -1]].tolist() == [[0, 0], [0, 0]]
    assert not window.token_type_ids.any()
    assert window.seq2_start == -1


@pytest.mark.parametrize("kind", TYPES)
def test_pair_layout_and_token_types(kind, make, rust):
    tokenizer, reference = make(kind), rust(kind)
    window = only_window(tokenizer.pair(OTHER, SAMPLE, "first", -1))
    expected = reference.encode(OTHER, SAMPLE)
    assert window.input_ids.tolist() == expected.ids
    n_first = len(raw_ids(reference, OTHER))
    separators = 1 if kind in ("bert", "deberta_v2") else 2
    assert window.seq2_start == 1 + n_first + separators
    assert tokenizer.special_count_pair == 2 + separators
    assert window.input_ids[1 + n_first : window.seq2_start].tolist() == [tokenizer.sep_token_id] * separators
    assert inner(window, 1).tolist() == raw_ids(reference, SAMPLE)
    if kind in ("bert", "deberta_v2"):
        # Hugging Face's segment ids, not Elasticsearch's all-zero quirk (DESIGN.md).
        assert window.token_type_ids.tolist() == expected.type_ids
        assert (
            window.token_type_ids[window.seq2_start :].all()
            and not window.token_type_ids[: window.seq2_start].any()
        )
    else:
        assert not window.token_type_ids.any()
    sequence_ids = window.sequence_ids.tolist()
    assert sequence_ids == [-1] + [0] * n_first + [-1] * separators + [1] * (
        len(window) - window.seq2_start - 1
    ) + [-1]


def test_without_special_tokens_singles_are_bare_and_pairs_are_refused(make, rust):
    tokenizer = make("bert", with_special_tokens=False, max_sequence_length=6)
    window = only_window(tokenizer.single(words(4), "first", -1))
    assert window.input_ids.tolist() == raw_ids(rust("bert"), words(4))
    assert (window.sequence_ids == 0).all()
    truncated = tokenizer.single(words(9), "first", -1)
    assert (
        only_window(truncated).input_ids.tolist() == raw_ids(rust("bert"), words(6))
        and truncated.is_truncated
    )
    with pytest.raises(InvalidInput, match=PAIR_WITHOUT_SPECIALS_MESSAGE):
        tokenizer.pair("a", "b", "first", -1)
    with pytest.raises(InvalidInput, match=PAIR_WITHOUT_SPECIALS_MESSAGE):
        tokenizer.pairs("a", ["b"], "first")


# --------------------------------------------------------------------------- word ids and offsets


def test_wordpiece_word_ids_and_offsets_point_into_the_original_text(make, rust):
    text = "Héllo WÖRLD, naïve tokenizers!"
    window = only_window(make("bert").single(text, "first", -1))
    encoding = rust("bert").encode(text, add_special_tokens=False)
    assert window.word_ids[1:-1].tolist() == encoding.word_ids
    pieces = [text[start:end] for start, end in window.offsets[1:-1].tolist()]
    assert pieces == ["Héllo", "WÖRLD", ",", "naïve", "token", "izer", "s", "!"]
    assert window.word_ids[1:-1].tolist() == [0, 1, 2, 3, 4, 4, 4, 5]
    whole = [text[start:end] for start, end in window.word_offsets()[1:-1].tolist()]
    assert whole == ["Héllo", "WÖRLD", ",", "naïve", "tokenizers", "tokenizers", "tokenizers", "!"]
    assert window.word_offsets()[[0, -1]].tolist() == [[0, 0], [0, 0]]


def test_byte_level_bpe_offsets_exclude_the_space_byte_and_pieces_share_words(make, rust):
    text = "Héllo wörld, unbelievable things"
    window = only_window(make("roberta").single(text, "first", -1))
    encoding = rust("roberta").encode(text, add_special_tokens=False)
    assert window.word_ids[1:-1].tolist() == encoding.word_ids
    words_seen = {}
    for word, (start, end) in zip(
        window.word_ids[1:-1].tolist(), window.word_offsets()[1:-1].tolist(), strict=True
    ):
        words_seen.setdefault(word, text[start:end])
    assert list(words_seen.values()) == ["Héllo", "wörld", ",", "unbelievable", "things"]
    for start, end in window.offsets[1:-1].tolist():
        assert text[start:end] == text[start:end].strip()


@pytest.mark.parametrize("kind", ["xlm_roberta", "deberta_v2"])
def test_unigram_pieces_are_their_own_words_with_trimmed_offsets(kind, make, rust):
    text = "Héllo  wörld, unbelievable"
    window = only_window(make(kind).single(text, "first", -1))
    n_tokens = len(window) - 2
    assert window.word_ids[1:-1].tolist() == list(range(n_tokens))
    encoding = rust(kind).encode(text, add_special_tokens=False)
    assert n_tokens == len(encoding.ids) and n_tokens > len(text.split())
    spans = window.offsets[1:-1].tolist()
    for (start, end), (raw_start, raw_end) in zip(spans, encoding.offsets, strict=True):
        assert raw_start <= start <= end <= raw_end
        assert text[start:end] == text[raw_start:raw_end].strip()
    assert (window.word_offsets() == window.offsets).all()
    assert "".join(text[start:end] for start, end in spans) == text.replace(" ", "")


@pytest.mark.parametrize("kind", TYPES)
def test_pair_word_ids_are_shifted_by_the_first_sequences_last_word(kind, make, rust):
    window = only_window(make(kind).pair(OTHER, SAMPLE, "first", -1))
    first_words = window.word_ids[window.sequence_ids == 0]
    second_words = window.word_ids[window.sequence_ids == 1]
    alone = only_window(make(kind).single(SAMPLE, "first", -1)).word_ids[1:-1]
    assert (second_words == alone + first_words[-1]).all()
    assert second_words[0] == first_words[-1]
    offsets = window.offsets[window.sequence_ids == 1]
    assert offsets.tolist() == only_window(make(kind).single(SAMPLE, "first", -1)).offsets[1:-1].tolist()


# --------------------------------------------------------------------------- truncation


def test_single_truncation_keeps_the_first_window_minus_specials(make, rust):
    tokenizer = make("bert", max_sequence_length=10)
    text = words(20)
    for mode in ("first", "second", "balanced"):
        result = tokenizer.single(text, mode, -1)
        assert result.is_truncated
        assert inner(only_window(result), 0).tolist() == raw_ids(rust("bert"), words(8))
        assert len(only_window(result)) == 10
    exact = tokenizer.single(words(8), "none", -1)
    assert not exact.is_truncated and len(only_window(exact)) == 10
    message = (
        r"Input too large\. The tokenized input length \[22\] exceeds the maximum sequence length \[10\]"
    )
    with pytest.raises(InputTooLarge, match=message):
        tokenizer.single(text, "none", -1)
    with pytest.raises(InputTooLarge, match=r"input length \[11\]"):
        tokenizer.single(words(9), "none", -1)


@pytest.mark.parametrize(
    ("mode", "n_first", "n_second", "kept_first", "kept_second"),
    [
        ("first", 10, 6, 7, 6),  # max 16, 3 specials: room 13 - 6
        ("second", 5, 12, 5, 8),
        ("balanced", 10, 10, 6, 7),  # second > 13 // 2: first gets 6, second the rest
        ("balanced", 12, 4, 9, 4),
        (
            "balanced",
            10,
            6,
            7,
            6,
        ),  # second exactly half the room: not "more than half"  # second fits in half: first gets 13 - 4
        ("balanced", 3, 20, 3, 10),
        ("first", 6, 7, 6, 7),  # exactly 16: untouched
    ],
)
def test_pair_truncation_worked_examples(mode, n_first, n_second, kept_first, kept_second, make):
    tokenizer = make("bert", max_sequence_length=16)
    first, second = words(n_first), words(n_second, offset=5)
    result = tokenizer.pair(first, second, mode, -1)
    window = only_window(result)
    assert result.is_truncated == (n_first + n_second + 3 > 16)
    full = only_window(make("bert", max_sequence_length=64).pair(first, second, mode, -1))
    assert inner(window, 0).tolist() == inner(full, 0)[:kept_first].tolist()
    assert inner(window, 1).tolist() == inner(full, 1)[:kept_second].tolist()
    zero_shot = tokenizer.pairs(first, [second], mode)[0]
    assert zero_shot.is_truncated == result.is_truncated
    assert only_window(zero_shot).input_ids.tolist() == window.input_ids.tolist()


def test_pair_truncation_counts_four_specials_for_roberta(make):
    tokenizer = make("roberta", max_sequence_length=20)
    first, second = "Paris is the capital of France and Germany, and Berlin is", "Hello world"
    window = only_window(tokenizer.pair(first, second, "first", -1))
    assert len(window) == 20 and (window.sequence_ids == -1).sum() == 4
    assert (
        inner(window, 1).tolist()
        == inner(only_window(make("roberta").pair(first, second, "first", -1)), 1).tolist()
    )


def test_pair_truncation_errors(make):
    tokenizer = make("bert", max_sequence_length=16)
    with pytest.raises(
        InputTooLarge,
        match=r"^Attempting truncation \[first\] but input is too large for the second sequence\. The tokenized "
        r"input length \[14\] exceeds the maximum sequence length \[13\], when taking special tokens into account$",
    ):
        tokenizer.pair(words(2), words(14), "first", -1)
    with pytest.raises(
        InputTooLarge,
        match=r"^Attempting truncation \[second\] but input is too large for the first sequence\. The tokenized "
        r"input length \[15\] exceeds the maximum sequence length \[13\], when taking special tokens into account$",
    ):
        tokenizer.pairs(words(15), [words(2)], "second")
    with pytest.raises(
        InputTooLarge,
        match=r"^Input too large\. The tokenized input length \[23\] exceeds the maximum sequence length \[16\]$",
    ):
        tokenizer.pair(words(10), words(10), "none", -1)
    with pytest.raises(InputTooLarge, match=r"input length \[17\]"):
        tokenizer.pairs(words(7), [words(2), words(7)], "none")
    # Limits below the special tokens themselves leave nothing to truncate to.
    with pytest.raises(InputTooLarge, match=r"input length \[5\] exceeds the maximum sequence length \[2\]"):
        make("bert", max_sequence_length=2).pair("a", "b", "balanced", -1)
    with pytest.raises(InputTooLarge, match=r"input length \[3\] exceeds the maximum sequence length \[1\]"):
        make("bert", max_sequence_length=1).single("a", "first", -1)


# --------------------------------------------------------------------------- windowing


def window_ranges(result: Tokenized, sequence: int, full: Window) -> list[tuple[int, int]]:
    """Where each window's tokens of ``sequence`` sit in the unwindowed token list."""
    tokens = inner(full, sequence).tolist()
    ranges = []
    for window in result.windows:
        part = inner(window, sequence).tolist()
        starts = [i for i in range(len(tokens) - len(part) + 1) if tokens[i : i + len(part)] == part]
        ranges.append((starts[0], starts[0] + len(part)))
    return ranges


def test_single_windows_worked_example(make):
    tokenizer = make("bert", max_sequence_length=10, truncate="none")
    text = words(20)
    result = tokenizer.single(text, "none", 3)
    assert not result.is_truncated
    full = only_window(make("bert", max_sequence_length=64).single(text, "first", -1))
    assert window_ranges(result, 0, full) == [(0, 8), (5, 13), (10, 18), (15, 20)]
    for window in result.windows:
        assert (
            window.input_ids[0] == tokenizer.cls_token_id and window.input_ids[-1] == tokenizer.sep_token_id
        )
        assert len(window) <= 10
    # Word ids stay those of the whole text (Elasticsearch slices its token map).
    assert result.windows[1].word_ids[1:-1].tolist() == list(range(5, 13))


def test_windows_do_not_cut_words(make):
    tokenizer = make("bert", max_sequence_length=10, truncate="none")
    # token positions: the(0) of(1) and(2) to(3) in(4) is(5) token(6) ##izer(7) ##s(8) was(9) for(10) on(11)
    text = "the of and to in is tokenizers was for on"
    full = only_window(make("bert").single(text, "first", -1))
    result = tokenizer.single(text, "none", 2)
    # Window 1 would end after "##izer" (8 tokens): it backs off to before "token". Window 2 starts
    # 2 tokens before that end, at a word start already.
    assert window_ranges(result, 0, full) == [(0, 6), (4, 12)]
    result = tokenizer.single(text, "none", 1)
    # Start = 6 - 1 = 5 ("is"); the second window ends at the text's end.
    assert window_ranges(result, 0, full) == [(0, 6), (5, 12)]
    text = "the of and to in tokenizers is was for on as with"
    full = only_window(make("bert").single(text, "first", -1))
    # positions: tokenizers = 5, 6, 7; window 1 [0, 8) ends after the word: no back-off.
    # span 1: start 7 is inside the word and backs up to 5; span 2: 6 -> 5 as well.
    assert window_ranges(tokenizer.single(text, "none", 1), 0, full) == [(0, 8), (5, 13), (12, 14)]
    assert window_ranges(tokenizer.single(text, "none", 2), 0, full) == [(0, 8), (5, 13), (11, 14)]


def test_window_start_backs_up_to_a_word_start(make):
    tokenizer = make("bert", max_sequence_length=10, truncate="none")
    # positions: the(0) of(1) and(2) to(3) in(4) is(5) was(6) for(7) tokenizers(8,9,10) on(11) as(12)
    text = "the of and to in is was for tokenizers on as"
    full = only_window(make("bert").single(text, "first", -1))
    # Window 1 [0, 8) ends right before "tokenizers"; span 0 starts the next one there.
    assert window_ranges(tokenizer.single(text, "none", 0), 0, full) == [(0, 8), (8, 13)]
    text = "the of and to in is was tokenizers for on as with by"
    full = only_window(make("bert").single(text, "first", -1))
    # positions: tokenizers = 7, 8, 9. Window 1 backs off to [0, 7).
    assert window_ranges(tokenizer.single(text, "none", 1), 0, full)[:2] == [(0, 7), (6, 14)]
    assert window_ranges(tokenizer.single(text, "none", 4), 0, full) == [(0, 7), (3, 11), (7, 15)]
    # span 5: starts 2, 5, then 13 - 5 = 8 is inside "tokenizers" and backs up to 7.
    assert window_ranges(tokenizer.single(text, "none", 5), 0, full) == [(0, 7), (2, 10), (5, 13), (7, 15)]


def test_windowing_starts_only_above_the_limit(make):
    tokenizer = make("bert", max_sequence_length=10, truncate="none")
    assert len(tokenizer.single(words(8), "none", 3).windows) == 1
    assert len(tokenizer.single(words(9), "none", 3).windows) == 2
    # Pairs window from total >= max, which at exactly max still yields one full window.
    at_limit = tokenizer.pair(words(3), words(4), "none", 2)
    assert len(at_limit.windows) == 1 and len(at_limit.windows[0]) == 10 and not at_limit.is_truncated
    assert len(tokenizer.pair(words(3), words(5), "none", 2).windows) == 2


def test_pair_windows_repeat_the_first_sequence(make):
    tokenizer = make("bert", max_sequence_length=12, truncate="none")
    question, context = words(3), words(20, offset=3)
    result = tokenizer.pair(question, context, "none", 2)
    full = only_window(make("bert", max_sequence_length=64).pair(question, context, "first", -1))
    # width = 12 - 3 - 3 = 6; starts 0, 4, 8, 12, 16.
    assert window_ranges(result, 1, full) == [(0, 6), (4, 10), (8, 14), (12, 18), (16, 20)]
    for window in result.windows:
        assert inner(window, 0).tolist() == inner(full, 0).tolist()
        assert window.seq2_start == 5 and len(window) <= 12
        assert window.token_type_ids[window.seq2_start :].all()
    shift = inner(full, 0).size - 1
    assert result.windows[1].word_ids[5:-1].tolist() == [w + shift for w in range(4, 10)]


def test_pair_windowing_errors(make):
    tokenizer = make("bert", max_sequence_length=10, truncate="none")
    with pytest.raises(
        InputTooLarge,
        match=r"^Unable to do sequence pair tokenization: the first sequence \[10 tokens\] is longer than "
        r"the max sequence length \[10 tokens\]$",
    ):
        tokenizer.pair(words(7), words(5), "none", 1)
    with pytest.raises(
        InvalidInput,
        match=r"^Unable to do sequence pair tokenization: the combined first sequence, span length and "
        r"delimiting tokens \[3 \+ 5 \+ 3 = 11 tokens\] is longer than the max sequence length \[10 tokens\]\. "
        r"Reduce the size of the \[span\] window\.$",
    ):
        tokenizer.pair(words(3), words(9), "none", 5)
    # width 3: the window backs off to "a b" (before "tokenizers"), so span 3 cannot move forward.
    with pytest.raises(InvalidInput, match=f"^{NO_PROGRESS_MESSAGE}$"):
        make("bert", max_sequence_length=7, truncate="none").pair("x", "a b tokenizers c d", "none", 3)


def test_single_windowing_that_cannot_progress_raises_instead_of_looping(make):
    tokenizer = make("bert", max_sequence_length=5, truncate="none")
    with pytest.raises(InvalidInput, match=f"^{NO_PROGRESS_MESSAGE}$"):
        tokenizer.single(words(9), "none", 3)


@pytest.mark.parametrize("kind", ["xlm_roberta", "deberta_v2"])
def test_unigram_windows_may_split_words(kind, make):
    tokenizer = make(kind, max_sequence_length=8, truncate="none")
    text = "unbelievable things happen"
    result = tokenizer.single(text, "none", 0)
    full = only_window(make(kind).single(text, "first", -1))
    assert [len(w) - 2 for w in result.windows[:-1]] == [6] * (len(result.windows) - 1)
    assert (
        np.concatenate([w.input_ids[1:-1] for w in result.windows]).tolist() == full.input_ids[1:-1].tolist()
    )


# --------------------------------------------------------------------------- settings and inputs


@pytest.mark.parametrize(
    ("truncate", "span", "message"),
    [
        ("first", 4, r"^\[span\] must not be provided when \[truncate\] is \[first\]$"),
        ("balanced", 0, r"^\[span\] must not be provided when \[truncate\] is \[balanced\]$"),
        (
            "none",
            11,
            r"^\[span\] provided \[11\] must not be greater than \[max_sequence_length\] provided \[10\]$",
        ),
        (
            "none",
            -2,
            r"^\[span\] must be non-negative to indicate span length or \[-1\] to indicate no windowing",
        ),
        ("last", -1, r"^\[truncate\] must be one of \[first, second, balanced, none\]; got \[last\]$"),
        ("none", True, r"^\[span\] must be an integer"),
    ],
)
def test_window_settings_are_validated(truncate, span, message, make):
    with pytest.raises(InvalidInput, match=message):
        validate_window_settings(truncate, span, 10)
    tokenizer = make("bert", max_sequence_length=10)
    with pytest.raises(InvalidInput, match=message):
        tokenizer.single("hello", truncate, span)
    with pytest.raises(InvalidInput, match=message):
        tokenizer.pair("hello", "world", truncate, span)


def test_span_equal_to_the_limit_is_accepted():
    validate_window_settings("none", 10, 10)
    validate_window_settings("second", -1, 10)


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_invalid_input(text, make):
    tokenizer = make("bert")
    calls = [
        lambda: tokenizer.single(text, "first", -1),
        lambda: tokenizer.single_batch(["fine", text], "first", -1),
        lambda: tokenizer.pair(text, "fine", "first", -1),
        lambda: tokenizer.pair("fine", text, "first", -1),
        lambda: tokenizer.pairs("fine", ["ok", text], "first"),
        lambda: tokenizer.pairs(text, ["ok"], "first"),
    ]
    for call in calls:
        with pytest.raises(InvalidInput, match=f"^{EMPTY_TEXT_MESSAGE}$"):
            call()


def test_text_that_normalises_to_nothing_gives_rows_without_tokens(make):
    # Control characters are dropped by the BERT normaliser: no tokens, but not an empty string either.
    window = only_window(make("bert").single("\x00\x01", "first", -1))
    assert window.input_ids.tolist() == [101, 102] and window.word_offsets().tolist() == [[0, 0], [0, 0]]
    bare = only_window(make("bert", with_special_tokens=False).single("\x00", "first", -1))
    assert len(bare) == 0 and bare.word_offsets().shape == (0, 2)
    pair = only_window(make("bert").pair("\x00", "hello world", "first", -1))
    assert pair.seq2_start == 2 and pair.word_ids.tolist() == [-1, -1, 0, 1, -1]


def test_text_that_is_not_a_unicode_string_is_invalid_input(make):
    tokenizer = make("bert")
    with pytest.raises(InvalidInput, match=f"^{NOT_UNICODE_MESSAGE}$"):
        tokenizer.single("broken \ud800 text", "first", -1)
    with pytest.raises(InvalidInput, match=f"^{NOT_UNICODE_MESSAGE}$"):
        tokenizer.single_batch(["fine", "broken \udfff"], "first", -1)
    with pytest.raises(InvalidInput, match=r"^input text must be a string; got \[bytes\]$"):
        tokenizer.single(b"bytes", "first", -1)


# --------------------------------------------------------------------------- special tokens


@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("template", ["The capital of France is {}.", "{} is the capital", "Paris{}"])
def test_the_mask_token_in_text_maps_to_the_mask_id(kind, template, make, rust):
    tokenizer = make(kind)
    assert tokenizer.mask_token == SPECIALS[kind][2]
    assert tokenizer.mask_token_id == rust(kind).token_to_id(tokenizer.mask_token) >= 0
    text = template.format(tokenizer.mask_token)
    window = only_window(tokenizer.single(text, "first", -1))
    positions = np.flatnonzero(window.input_ids == tokenizer.mask_token_id)
    assert len(positions) == 1
    start, end = window.offsets[positions[0]]
    assert text[start:end] == tokenizer.mask_token
    assert window.word_ids[positions[0]] >= 0


def test_roberta_mask_after_a_space_keeps_the_space_out(make):
    tokenizer = make("roberta")
    text = "x <mask> y"
    window = only_window(tokenizer.single(text, "first", -1))
    assert window.input_ids[2] == tokenizer.mask_token_id
    assert window.offsets[2].tolist() == [2, 8]


def test_specials_from_the_manifest_and_their_checks(tokenizer_files):
    path = tokenizer_files["bert"]
    config = TokenizationConfig(type="bert")
    given = {
        "cls": ["[CLS]", 101],
        "sep": ["[SEP]", 102],
        "pad": ["[PAD]", 0],
        "unk": ["[UNK]", 100],
        "mask": ["[MASK]", 103],
    }
    tokenizer = Tokenizer.from_file(path, config, given)
    assert (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id) == (101, 102, 0)
    assert (tokenizer.unk_token_id, tokenizer.mask_token, tokenizer.mask_token_id) == (100, "[MASK]", 103)
    with pytest.raises(
        PackageError, match=r"special token \[\[SEP\]\] has id \[5\] in the manifest but \[102\]"
    ):
        Tokenizer.from_file(path, config, {**given, "sep": ["[SEP]", 5]})
    # An mpnet-typed package over a BERT vocabulary: "<s>" is not there.
    with pytest.raises(ModelError, match=r"^stored vocabulary is missing required \[<s>\] token$"):
        Tokenizer.from_file(path, TokenizationConfig(type="mpnet"), {})
    with pytest.raises(PackageError, match="cannot load tokenizer"):
        Tokenizer.from_file(Path(path).parent / "missing.json", config, {})


def test_a_vocabulary_without_mask_has_mask_id_minus_one(tmp_path, tokenizer_files):
    data = json.loads(Path(tokenizer_files["bert"]).read_text())
    del data["model"]["vocab"]["[MASK]"]
    data["added_tokens"] = [token for token in data["added_tokens"] if token["content"] != "[MASK]"]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    tokenizer = Tokenizer.from_file(path, TokenizationConfig(type="bert"), {})
    assert tokenizer.mask_token == "[MASK]" and tokenizer.mask_token_id == -1


def test_roberta_add_prefix_space_from_the_config(make, rust):
    text = "Hello Paris"
    window = only_window(make("roberta", add_prefix_space=True).single(text, "first", -1))
    assert window.input_ids[1:-1].tolist() == raw_ids(rust("roberta"), " " + text)
    assert [text[start:end] for start, end in window.word_offsets()[1:-1].tolist()][0] == "Hello"
    window = only_window(make("roberta", add_prefix_space=False).single(text, "first", -1))
    assert window.input_ids[1:-1].tolist() == raw_ids(rust("roberta"), text)


def test_add_prefix_space_reaches_a_nested_byte_level_step(tmp_path, tokenizer_files, rust):
    data = json.loads(tokenizer_files["roberta"].read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [data["pre_tokenizer"]]}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    config = TokenizationConfig(type="roberta", add_prefix_space=True)
    window = only_window(Tokenizer.from_file(path, config).single("Hello Paris", "first", -1))
    assert window.input_ids[1:-1].tolist() == raw_ids(rust("roberta"), " Hello Paris")
    data["pre_tokenizer"] = {"type": "Whitespace"}
    path.write_text(json.dumps(data))
    with pytest.raises(PackageError, match=r"\[add_prefix_space\] needs a tokenizer.json with a ByteLevel"):
        Tokenizer.from_file(path, config)


# --------------------------------------------------------------------------- vocabulary and decode


def test_decode_token_per_type(make, rust):
    bert = make("bert")
    assert bert.decode_token(rust("bert").token_to_id("##s")) == "##s"
    assert bert.vocab_size == 30522 and bert.id_to_token(7592) == "hello"
    with pytest.raises(ModelError, match=r"token id \[30522\] is not in the vocabulary"):
        bert.id_to_token(30522)

    roberta = make("roberta")
    vocab = rust("roberta").get_vocab()
    spaced = [
        token for token in vocab if token.startswith("Ġ") and token[1:].isascii() and token[1:].isalpha()
    ]
    for token in spaced:
        assert roberta.decode_token(vocab[token]) == token[1:]
    multibyte = [
        token for token in vocab if token.startswith("Ã") and len(token) == 2 and token[1] in "©¶¼¯£"
    ]
    for token in multibyte:
        assert roberta.decode_token(vocab[token]) == token.encode("latin-1").decode("utf-8")
    assert spaced and multibyte
    assert roberta.decode_token(vocab["Ã"]) == "\ufffd"  # half a UTF-8 sequence
    assert roberta.decode_token(vocab["<mask>"]) == "<mask>"
    # An added token written outside the byte alphabet has no bytes to decode: it is shown as written.
    extended = rust("roberta")
    extended.add_tokens([" 日本 "])
    with_added = Tokenizer(extended, TokenizationConfig(type="roberta"))
    assert with_added.decode_token(extended.token_to_id(" 日本 ")) == "日本"

    # The trained vocabularies differ a little from run to run: pick tokens by shape.
    for kind in ("xlm_roberta", "deberta_v2"):
        tokenizer, unigram_vocab = make(kind), rust(kind).get_vocab()
        prefixed = [token for token in unigram_vocab if token.startswith("▁") and len(token) > 1]
        plain = [token for token in unigram_vocab if token.isalpha() and len(token) > 1]
        assert prefixed and plain
        for token in prefixed + plain:
            expected = token[1:] if kind == "xlm_roberta" and token.startswith("▁") else token
            assert tokenizer.decode_token(unigram_vocab[token]) == expected
    mpnet, mpnet_vocab = make("mpnet"), rust("mpnet").get_vocab()
    continuations = [token for token in mpnet_vocab if token.startswith("##")]
    assert continuations
    for token in continuations:
        assert mpnet.decode_token(mpnet_vocab[token]) == token


# --------------------------------------------------------------------------- batch and real packages


def assert_same(left: Tokenized, right: Tokenized) -> None:
    assert left.is_truncated == right.is_truncated and len(left.windows) == len(right.windows)
    for a, b in zip(left.windows, right.windows, strict=True):
        for field in ("input_ids", "token_type_ids", "word_ids", "offsets", "sequence_ids"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
        assert a.seq2_start == b.seq2_start


@pytest.mark.parametrize("kind", TYPES)
def test_single_batch_equals_single(kind, make):
    tokenizer = make(kind, max_sequence_length=24, truncate="none")
    texts = [SAMPLE, OTHER, "x", "Zürich <mask> café " * 3, words(30)]
    for truncate, span in (("none", 3), ("first", -1)):
        batch = tokenizer.single_batch(texts, truncate, span)
        assert len(batch) == len(texts)
        assert any(len(tokenized.windows) > 1 or tokenized.is_truncated for tokenized in batch)
        for text, tokenized in zip(texts, batch, strict=True):
            assert_same(tokenized, tokenizer.single(text, truncate, span))


def test_pairs_encodes_like_pair(make, rust):
    # Room for the input and "x" exactly: the longer hypotheses truncate the input.
    limit = len(raw_ids(rust("roberta"), SAMPLE)) + len(raw_ids(rust("roberta"), "x")) + 4
    tokenizer = make("roberta", max_sequence_length=limit)
    hypotheses = ["This example is sport.", "This example is about Paris and France.", "x"]
    results = tokenizer.pairs(SAMPLE, hypotheses, "first")
    assert results[0].is_truncated and not results[2].is_truncated
    for result, hypothesis in zip(results, hypotheses, strict=True):
        assert_same(result, tokenizer.pair(SAMPLE, hypothesis, "first", -1))


def test_splade_tokenizer_matches_its_post_processor(splade_dir):
    tokenizer = Tokenizer.from_file(
        splade_dir / "tokenizer.json", TokenizationConfig(type="bert", do_lower_case=True)
    )
    reference = RustTokenizer.from_file(str(splade_dir / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    assert (
        only_window(tokenizer.single(SAMPLE, "first", -1)).input_ids.tolist() == reference.encode(SAMPLE).ids
    )
    assert tokenizer.mask_token_id == 103 and tokenizer.pad_token_id == 0


@pytest.mark.parametrize(
    "name", ["tiny-squad", "tiny-nli", "tiny-ner-conll", "tiny-sst2", "tiny-sts-crossencoder"]
)
def test_shared_task_model_tokenizers(name, shared_models, make):
    path = shared_models / name / "tokenizer.json"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    tokenizer = Tokenizer.from_file(
        path, TokenizationConfig(type="bert", do_lower_case=True, max_sequence_length=386)
    )
    reference = RustTokenizer.from_file(str(path))
    reference.no_padding()
    reference.no_truncation()
    window = only_window(tokenizer.pair(OTHER, SAMPLE, "second", -1))
    expected = reference.encode(OTHER, SAMPLE)
    assert window.input_ids.tolist() == expected.ids and window.token_type_ids.tolist() == expected.type_ids
    # Same uncased vocabulary as MiniLM: same rows.
    assert (
        window.input_ids.tolist()
        == only_window(make("bert").pair(OTHER, SAMPLE, "second", -1)).input_ids.tolist()
    )


# --------------------------------------------------------------------------- properties


def token_positions(full: Window, window: Window, sequence: int) -> list[int]:
    """Where ``window``'s tokens of ``sequence`` sit in ``full``: (offsets, id) names a token uniquely,
    where matching ids alone would confuse repeated words."""

    def keys(row: Window) -> list[tuple[int, int, int]]:
        mask = row.sequence_ids == sequence
        return [
            (start, end, token)
            for (start, end), token in zip(
                row.offsets[mask].tolist(), row.input_ids[mask].tolist(), strict=True
            )
        ]

    index = {key: i for i, key in enumerate(keys(full))}
    assert len(index) == len(keys(full))
    return [index[key] for key in keys(window)]


def assert_contiguous_cover(full: Window, windows: list[Window], sequence: int) -> None:
    """Each window holds a run of consecutive tokens, runs start further on each time, together all."""
    previous_start, covered = -1, set()
    for window in windows:
        positions = token_positions(full, window, sequence)
        assert positions == list(range(positions[0], positions[0] + len(positions)))
        assert positions[0] > previous_start
        previous_start = positions[0]
        covered.update(positions)
    assert covered == set(range(int((full.sequence_ids == sequence).sum())))


PROPERTY_WORDS = [
    "the",
    "Tokenizers",
    "unbelievably",
    "Zürich",
    "naïve",
    "42",
    "café",
    ",",
    "!",
    "x",
    "elasticsearch",
]
property_settings = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@property_settings
@given(
    kind=st.sampled_from(TYPES),
    text_words=st.lists(st.sampled_from(PROPERTY_WORDS), min_size=1, max_size=60),
    max_length=st.integers(min_value=8, max_value=40),
    span_fraction=st.floats(min_value=0, max_value=0.9),
)
def test_windows_fit_and_cover_every_token(kind, text_words, max_length, span_fraction, make):
    text = " ".join(text_words)
    tokenizer = make(kind, max_sequence_length=max_length, truncate="none")
    span = int(span_fraction * (max_length - 2))
    everything = only_window(make(kind, max_sequence_length=4096).single(text, "first", -1))
    tokens = everything.input_ids[1:-1]
    try:
        result = tokenizer.single(text, "none", span)
    except InvalidInput as error:
        # Only a word longer than the overlap allows can stop progress.
        assert str(error) == NO_PROGRESS_MESSAGE and kind not in ("xlm_roberta", "deberta_v2")
        return
    for window in result.windows:
        assert len(window) <= max_length
    assert_contiguous_cover(everything, result.windows, 0)
    truncated = tokenizer.single(text, "first", -1)
    assert len(only_window(truncated)) <= max_length
    kept = only_window(truncated).input_ids[1:-1]
    assert np.array_equal(kept, tokens[: len(kept)])
    assert truncated.is_truncated == (len(tokens) + 2 > max_length)


@property_settings
@given(
    kind=st.sampled_from(TYPES),
    question_words=st.lists(st.sampled_from(PROPERTY_WORDS), min_size=1, max_size=4),
    context_words=st.lists(st.sampled_from(PROPERTY_WORDS), min_size=1, max_size=50),
    max_length=st.integers(min_value=24, max_value=48),
    span_fraction=st.floats(min_value=0, max_value=1),
)
def test_pair_windows_fit_repeat_the_question_and_cover_the_context(
    kind, question_words, context_words, max_length, span_fraction, make
):
    question, context = " ".join(question_words), " ".join(context_words)
    tokenizer = make(kind, max_sequence_length=max_length, truncate="none")
    everything = only_window(make(kind, max_sequence_length=4096).pair(question, context, "first", -1))
    width = max_length - tokenizer.special_count_pair - inner(everything, 0).size
    span = int(span_fraction * max(width, 0))
    try:
        result = tokenizer.pair(question, context, "none", span)
    except InvalidInput as error:
        assert str(error) == NO_PROGRESS_MESSAGE or width <= 0
        return
    for window in result.windows:
        assert len(window) <= max_length
        assert inner(window, 0).tolist() == inner(everything, 0).tolist()
        assert window.seq2_start == inner(everything, 0).size + tokenizer.special_count_pair - 1
    assert_contiguous_cover(everything, result.windows, 1)


@property_settings
@given(kind=st.sampled_from(TYPES), text=st.text(min_size=1, max_size=60).filter(lambda t: not t.isspace()))
def test_offsets_stay_inside_the_text_and_carry_no_spaces(kind, text, make):
    window = only_window(make(kind, max_sequence_length=4096).single(text, "first", -1))
    for start, end in window.offsets[window.sequence_ids == 0].tolist():
        assert 0 <= start <= end <= len(text)
        piece = text[start:end]
        assert piece == piece.strip()
