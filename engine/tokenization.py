"""Tokenisation as Elasticsearch does it (ELASTIC_REFERENCE.md §4), on top of Hugging Face ``tokenizers``.

The Rust tokenizer from the package's ``tokenizer.json`` does the sub-word work (normalising, pre-tokenising,
WordPiece / byte-level BPE / Unigram); this module adds what Elasticsearch does around it, so that a model
sees exactly the rows Elasticsearch would send:

* Each sequence is encoded on its own *without* special tokens, then the specials are laid out per
  tokenization type (§4.2): ``bert``/``deberta_v2`` ``[CLS] A [SEP]`` and ``[CLS] A [SEP] B [SEP]``;
  ``mpnet``/``roberta``/``xlm_roberta`` ``<s> A </s>`` and ``<s> A </s></s> B </s>``. Encoding the two
  sequences of a pair separately is what Elasticsearch does too, and it lets zero-shot classification
  encode its input once for every label (:meth:`Tokenizer.pairs`).
* Truncation (§4.3) and windowing with ``span`` (§4.4) follow Elasticsearch's ``NlpTokenizer`` step by
  step, including its error messages. One addition: Elasticsearch checks that windowing makes progress
  only for pairs; a single sequence whose span is too close to the window width would loop forever
  there, so here it raises the same "cannot be satisfied" error.
* Token types (bert, deberta_v2): 1 for the second sequence and the SEP after it, as Hugging Face models
  were trained. Elasticsearch sends all zeros (§4.7); DESIGN.md treats that as a bug, not a contract.
* Word ids are Elasticsearch's "token map" (§4.6). WordPiece and byte-level BPE: the pieces of one
  pre-token share its index (``Encoding.word_ids``). Unigram types (``xlm_roberta``, ``deberta_v2``):
  every piece is its own word, because Elasticsearch's Unigram tokenizer maps each piece to its own
  position; so NER does no sub-word merging and windows may end inside a word there. In a pair the
  second sequence's ids are shifted by the first sequence's last id (Elasticsearch's pair rule).
  Special tokens have -1.
* Offsets are character offsets into the original text of the token's own sequence (lower-casing and
  accent stripping do not move them). For every type but ``bert`` the whitespace a piece absorbs
  (``Ġ``/``▁``, a ``<mask>`` with ``lstrip``) is trimmed off, so ``text[start:end]`` never
  starts or ends with a space. :meth:`Window.word_offsets` widens them to whole words, which is what
  Elasticsearch's WordPiece/BPE tokens carry (QA answers end on word boundaries there).

``import engine`` must not import torch: this module needs only numpy and ``tokenizers``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding
from tokenizers import Tokenizer as RustTokenizer

from .errors import InputTooLarge, InvalidInput, ModelError, PackageError
from .manifest import TRUNCATE_MODES, TokenizationConfig

NO_SPAN = -1
"""Elasticsearch's ``UNSET_SPAN_VALUE``: no windowing."""

EMPTY_TEXT_MESSAGE = "input text must not be empty or contain only whitespace"

NOT_UNICODE_MESSAGE = "input text is not valid Unicode: it contains unpaired surrogate code points"

NO_PROGRESS_MESSAGE = (
    "Tokenization cannot be satisfied with the current span setting. Consider decreasing the span setting"
)

PAIR_WITHOUT_SPECIALS_MESSAGE = "Unable to do sequence pair tokenization without special tokens"


@dataclasses.dataclass(frozen=True)
class _TypeRules:
    """What differs between Elasticsearch's tokenization types (§4.2)."""

    defaults: dict[str, str]  # special-token strings used when the manifest gives none
    pair_separators: int  # SEP tokens between the two sequences of a pair
    pair_token_types: bool  # the model takes token_type_ids (segment 1 for the second sequence)
    piece_is_word: bool  # Unigram: every piece is its own word (§4.6)
    trim_offsets: bool  # pieces may carry whitespace they absorbed (a ``▁``, an ``lstrip`` mask token)


_BERT_SPECIALS = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}
_ROBERTA_SPECIALS = {"cls": "<s>", "sep": "</s>", "pad": "<pad>", "unk": "<unk>", "mask": "<mask>"}

_RULES = {
    "bert": _TypeRules(_BERT_SPECIALS, 1, True, False, False),
    "mpnet": _TypeRules({**_ROBERTA_SPECIALS, "unk": "[UNK]"}, 2, False, False, True),
    "roberta": _TypeRules(_ROBERTA_SPECIALS, 2, False, False, True),
    "xlm_roberta": _TypeRules(_ROBERTA_SPECIALS, 2, False, True, True),
    "deberta_v2": _TypeRules(_BERT_SPECIALS, 1, True, True, True),
}

# Code points Python's str.isspace() accepts; offsets are trimmed of these.
_SPACE_CODE_POINTS = np.array(
    [cp for cp in range(0x3001) if chr(cp).isspace()],
    dtype=np.uint32,
)


@dataclasses.dataclass
class Window:
    """One model row, ready to batch: token ids with special tokens and everything needed to map back.

    Attributes:
        input_ids: int64 ``[n]``, special tokens included.
        token_type_ids: int64 ``[n]``; 1 for the second sequence and the SEP after it (bert,
            deberta_v2), 0 everywhere else.
        word_ids: int32 ``[n]``; Elasticsearch's token map (§4.6, pair rule included), -1 for specials.
        offsets: int32 ``[n, 2]``; character offsets into the original text of the token's own
            sequence, ``(0, 0)`` for specials.
        sequence_ids: int8 ``[n]``; -1 special, 0 first sequence, 1 second sequence.
        seq2_start: index of the first second-sequence token, -1 for a single sequence.
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    word_ids: np.ndarray
    offsets: np.ndarray
    sequence_ids: np.ndarray
    seq2_start: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def word_offsets(self) -> np.ndarray:
        """Each token's whole-word span: int32 ``[n, 2]``, ``(0, 0)`` for specials.

        Elasticsearch gives every WordPiece/BPE piece the offsets of its whole word, so a question
        answering span that ends on a ``##`` piece reaches the end of the word there. For the Unigram
        types every piece is its own word and this equals :attr:`offsets`.
        """
        n_tokens = len(self.input_ids)
        if n_tokens == 0:
            return self.offsets.copy()
        boundary = np.empty(n_tokens, dtype=bool)
        boundary[0] = True
        boundary[1:] = (self.word_ids[1:] != self.word_ids[:-1]) | (
            self.sequence_ids[1:] != self.sequence_ids[:-1]
        )
        run_starts = np.flatnonzero(boundary)
        run_index = np.cumsum(boundary) - 1
        starts = np.minimum.reduceat(self.offsets[:, 0], run_starts)[run_index]
        ends = np.maximum.reduceat(self.offsets[:, 1], run_starts)[run_index]
        # Specials are runs of their own (the sequence id changes around them) with (0, 0) offsets.
        return np.stack((starts, ends), axis=1).astype(np.int32)


@dataclasses.dataclass
class Tokenized:
    """The rows one input text turns into, and whether anything was cut off (ES ``is_truncated``)."""

    windows: list[Window]
    is_truncated: bool


@dataclasses.dataclass
class _Sequence:
    """One text encoded without special tokens; slicing gives views, so truncation copies nothing."""

    ids: np.ndarray  # int64 [n]
    word_ids: np.ndarray  # int32 [n]
    offsets: np.ndarray  # int32 [n, 2]

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, end: int) -> _Sequence:
        return self.slice(0, end)

    def slice(self, start: int, end: int) -> _Sequence:
        return _Sequence(self.ids[start:end], self.word_ids[start:end], self.offsets[start:end])


def validate_window_settings(truncate: str, span: int, max_sequence_length: int) -> None:
    """Check a ``truncate``/``span`` combination the way Elasticsearch's ``Tokenization`` does.

    Tasks call this when they merge a request's tokenization update, so the error comes before any
    work; :meth:`Tokenizer.single` and :meth:`Tokenizer.pair` call it again.

    Raises:
        InvalidInput: unknown ``truncate``; ``span`` below -1; ``span`` over ``max_sequence_length``;
            a span with ``truncate`` other than ``none``.
    """
    if truncate not in TRUNCATE_MODES:
        raise InvalidInput(f"[truncate] must be one of [{', '.join(TRUNCATE_MODES)}]; got [{truncate}]")
    if isinstance(span, bool) or not isinstance(span, int):
        raise InvalidInput(f"[span] must be an integer; got [{span}]")
    if span < 0 and span != NO_SPAN:
        raise InvalidInput(
            f"[span] must be non-negative to indicate span length or [{NO_SPAN}] "
            "to indicate no windowing should occur"
        )
    if span > max_sequence_length:
        raise InvalidInput(
            f"[span] provided [{span}] must not be greater than [max_sequence_length] "
            f"provided [{max_sequence_length}]"
        )
    if span != NO_SPAN and truncate != "none":
        raise InvalidInput(f"[span] must not be provided when [truncate] is [{truncate}]")


def _input_too_large(n_tokens: int, max_sequence_length: int) -> InputTooLarge:
    return InputTooLarge(
        f"Input too large. The tokenized input length [{n_tokens}] exceeds the maximum sequence length "
        f"[{max_sequence_length}]"
    )


def _window_bounds(word_ids: np.ndarray, width: int, span: int) -> list[tuple[int, int]]:
    """Elasticsearch's span loop (§4.4): ``[start, end)`` token ranges that end and start on whole words.

    A window is shortened so that it does not end inside a word, the next one starts ``span`` tokens
    before the previous end, moved back to the start of a word.
    """
    words = word_ids.tolist()
    n_tokens = len(words)
    bounds: list[tuple[int, int]] = []
    start = end = 0
    while end < n_tokens:
        end = min(start + width, n_tokens)
        if end != n_tokens:
            while end > start + 1 and words[end] == words[end - 1]:
                end -= 1
        bounds.append((start, end))
        previous_start = start
        start = end - span
        if start <= previous_start:
            raise InvalidInput(NO_PROGRESS_MESSAGE)
        if start < n_tokens:
            while start > previous_start + 1 and words[start] == words[start - 1]:
                start -= 1
    return bounds


def _byte_decoder() -> dict[str, int]:
    """The inverse of the byte-level BPE alphabet: printable Latin-1 bytes stand for themselves, every
    other byte value is shifted to code point 256 and up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {chr(byte): byte for byte in printable}
    shifted = 256
    for byte in range(256):
        if byte not in printable:
            table[chr(shifted)] = byte
            shifted += 1
    return table


_JAVA_TRIM = "".join(chr(cp) for cp in range(0x21))  # Java String.trim() drops every char <= U+0020


class Tokenizer:
    """A package's tokenizer with Elasticsearch's special-token layout, truncation and windowing.

    Thread-safe: the Rust tokenizer encodes with ``&self`` and this class keeps no per-call state.

    Attributes:
        config: the manifest's tokenization block (type, ``max_sequence_length``, defaults).
        mask_token, mask_token_id: the mask string and its id (-1 when the vocabulary has none).
        pad_token_id, cls_token_id, sep_token_id, unk_token_id: special-token ids.
        special_count_single, special_count_pair: special tokens a single / pair row adds.
    """

    def __init__(
        self, rust: RustTokenizer, config: TokenizationConfig, special_tokens: dict[str, Any] | None = None
    ) -> None:
        if config.type == "roberta" and config.add_prefix_space is not None:
            rust = _with_prefix_space(rust, config.add_prefix_space)
        # Elasticsearch's truncation and windowing replace whatever tokenizer.json asks for.
        rust.no_truncation()
        rust.no_padding()
        self._rust = rust
        self.config = config
        self._rules = _RULES[config.type]
        tokens, ids = self._resolve_specials(special_tokens or {})
        self.mask_token = tokens["mask"]
        self.mask_token_id = ids["mask"]
        self.pad_token_id = ids["pad"]
        self.unk_token_id = ids["unk"]
        self.cls_token_id = ids["cls"]
        self.sep_token_id = ids["sep"]
        with_specials = config.with_special_tokens
        self.special_count_single = 2 if with_specials else 0
        self.special_count_pair = 2 + self._rules.pair_separators if with_specials else 0
        self._byte_table = _byte_decoder() if config.type == "roberta" else None

    @classmethod
    def from_file(
        cls, path: str | Path, config: TokenizationConfig, special_tokens: dict[str, Any] | None = None
    ) -> Tokenizer:
        """Load ``tokenizer.json`` and lay it out for ``config.type``.

        Args:
            path: a Hugging Face ``tokenizers`` JSON file.
            config: the manifest's tokenization block.
            special_tokens: the manifest's ``{"cls": [token, id], ...}``; missing entries are looked up
                in the vocabulary by the type's usual strings (``[CLS]`` or ``<s>`` and so on).

        Raises:
            PackageError: the file cannot be read, or a manifest special token disagrees with it.
            ModelError: the vocabulary lacks a token Elasticsearch requires (PAD, UNK, and CLS/SEP
                when ``with_special_tokens``).
        """
        try:
            rust = RustTokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception for unreadable files
            raise PackageError(f"cannot load tokenizer [{path}]: {error}") from error
        return cls(rust, config, special_tokens)

    def _resolve_specials(self, given: dict[str, Any]) -> tuple[dict[str, str], dict[str, int]]:
        tokens: dict[str, str] = {}
        ids: dict[str, int] = {}
        for role, default in self._rules.defaults.items():
            if role in given:
                try:
                    token, manifest_id = given[role]
                except (TypeError, ValueError) as error:
                    raise PackageError(
                        f"manifest special token [{role}] must be [token, id]; got {given[role]!r}"
                    ) from error
                actual = self._rust.token_to_id(token)
                if actual != manifest_id:
                    raise PackageError(
                        f"special token [{token}] has id [{manifest_id}] in the manifest but "
                        f"[{actual}] in the tokenizer"
                    )
            else:
                token = default
            tokens[role] = token
            found = self._rust.token_to_id(token)
            required = role in ("pad", "unk") or (role in ("cls", "sep") and self.config.with_special_tokens)
            if found is None and required:
                raise ModelError(f"stored vocabulary is missing required [{token}] token")
            ids[role] = -1 if found is None else found
        return tokens, ids

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer knows, added tokens included."""
        return self._rust.get_vocab_size(with_added_tokens=True)

    def id_to_token(self, i: int) -> str:
        """The vocabulary string of id ``i``.

        Raises:
            ModelError: ``i`` is not in the vocabulary (a model with more output rows than tokens).
        """
        token = self._rust.id_to_token(i)
        if token is None:
            raise ModelError(f"token id [{i}] is not in the vocabulary of size [{self.vocab_size}]")
        return token

    def decode_token(self, i: int) -> str:
        """One predicted token as Elasticsearch's fill_mask shows it (§2.1 step 4).

        bert, mpnet, deberta_v2: the raw vocabulary string (``##`` kept). roberta: the byte-level
        characters decoded to UTF-8, then Java ``trim()``. xlm_roberta: one leading ``▁`` removed.
        """
        token = self.id_to_token(i)
        if self._byte_table is not None:
            data = bytearray()
            for char in token:
                byte = self._byte_table.get(char)
                if byte is None:  # an added token outside the byte alphabet is kept as written
                    return token.strip(_JAVA_TRIM)
                data.append(byte)
            return data.decode("utf-8", errors="replace").strip(_JAVA_TRIM)
        if self.config.type == "xlm_roberta" and token.startswith("▁"):
            return token[1:]
        return token

    # ------------------------------------------------------------------ encoding

    def _check_text(self, text: str) -> None:
        if not isinstance(text, str):
            raise InvalidInput(f"input text must be a string; got [{type(text).__name__}]")
        if not text or text.isspace():
            raise InvalidInput(EMPTY_TEXT_MESSAGE)

    def _encode(self, text: str) -> _Sequence:
        self._check_text(text)
        try:
            encoding = self._rust.encode(text, add_special_tokens=False)
        except TypeError as error:  # the Rust side rejects strings it cannot turn into UTF-8
            raise InvalidInput(NOT_UNICODE_MESSAGE) from error
        return self._to_sequence(encoding, text)

    def _encode_many(self, texts: Sequence[str]) -> list[_Sequence]:
        for text in texts:
            self._check_text(text)
        try:
            encodings = self._rust.encode_batch(list(texts), add_special_tokens=False)
        except TypeError as error:
            raise InvalidInput(NOT_UNICODE_MESSAGE) from error
        return [self._to_sequence(encoding, text) for encoding, text in zip(encodings, texts, strict=True)]

    def _to_sequence(self, encoding: Encoding, text: str) -> _Sequence:
        ids = np.array(encoding.ids, dtype=np.int64)
        n_tokens = len(ids)
        # fromiter over the flattened pairs is faster than np.array on a list of tuples.
        offsets = np.fromiter(chain.from_iterable(encoding.offsets), dtype=np.int32, count=2 * n_tokens)
        offsets = offsets.reshape(n_tokens, 2)
        if self._rules.piece_is_word:
            word_ids = np.arange(n_tokens, dtype=np.int32)
        else:
            word_ids = np.array(encoding.word_ids, dtype=np.int32)
        if self._rules.trim_offsets and n_tokens:
            offsets = _trim_whitespace(offsets, text)
        return _Sequence(ids, word_ids, offsets)

    # ------------------------------------------------------------------ rows

    def _single_window(self, seq: _Sequence) -> Window:
        n_tokens = len(seq)
        if not self.config.with_special_tokens:
            return Window(
                input_ids=seq.ids.copy(),
                token_type_ids=np.zeros(n_tokens, dtype=np.int64),
                word_ids=seq.word_ids.copy(),
                offsets=seq.offsets.copy(),
                sequence_ids=np.zeros(n_tokens, dtype=np.int8),
                seq2_start=-1,
            )
        size = n_tokens + 2
        input_ids = np.empty(size, dtype=np.int64)
        input_ids[0] = self.cls_token_id
        input_ids[1:-1] = seq.ids
        input_ids[-1] = self.sep_token_id
        word_ids = np.full(size, -1, dtype=np.int32)
        word_ids[1:-1] = seq.word_ids
        offsets = np.zeros((size, 2), dtype=np.int32)
        offsets[1:-1] = seq.offsets
        sequence_ids = np.zeros(size, dtype=np.int8)
        sequence_ids[0] = sequence_ids[-1] = -1
        return Window(input_ids, np.zeros(size, dtype=np.int64), word_ids, offsets, sequence_ids, -1)

    def _pair_window(self, first: _Sequence, second: _Sequence) -> Window:
        n_first, n_second = len(first), len(second)
        seq2_start = 1 + n_first + self._rules.pair_separators
        size = seq2_start + n_second + 1
        input_ids = np.empty(size, dtype=np.int64)
        input_ids[0] = self.cls_token_id
        input_ids[1 : 1 + n_first] = first.ids
        input_ids[1 + n_first : seq2_start] = self.sep_token_id
        input_ids[seq2_start:-1] = second.ids
        input_ids[-1] = self.sep_token_id
        token_type_ids = np.zeros(size, dtype=np.int64)
        if self._rules.pair_token_types:
            token_type_ids[seq2_start:] = 1
        shift = int(first.word_ids[-1]) if n_first else 0
        word_ids = np.full(size, -1, dtype=np.int32)
        word_ids[1 : 1 + n_first] = first.word_ids
        word_ids[seq2_start:-1] = second.word_ids + shift
        offsets = np.zeros((size, 2), dtype=np.int32)
        offsets[1 : 1 + n_first] = first.offsets
        offsets[seq2_start:-1] = second.offsets
        sequence_ids = np.full(size, -1, dtype=np.int8)
        sequence_ids[1 : 1 + n_first] = 0
        sequence_ids[seq2_start:-1] = 1
        return Window(input_ids, token_type_ids, word_ids, offsets, sequence_ids, seq2_start)

    # ------------------------------------------------------------------ single sequences

    def single(self, text: str, truncate: str, span: int) -> Tokenized:
        """Tokenize one text into one row, or several windows when ``span`` is set (§4.3, §4.4).

        Raises:
            InvalidInput: empty text, a bad ``truncate``/``span`` combination, or a span that cannot
                make progress.
            InputTooLarge: too many tokens with ``truncate: none`` and no span.
        """
        validate_window_settings(truncate, span, self.config.max_sequence_length)
        return self._layout_single(self._encode(text), truncate, span)

    def single_batch(self, texts: Sequence[str], truncate: str, span: int) -> list[Tokenized]:
        """:meth:`single` for many texts at once; ``encode_batch`` releases the GIL and uses all cores,
        which pays off for many short texts (embeddings, ingest)."""
        validate_window_settings(truncate, span, self.config.max_sequence_length)
        return [self._layout_single(seq, truncate, span) for seq in self._encode_many(texts)]

    def _layout_single(self, seq: _Sequence, truncate: str, span: int) -> Tokenized:
        max_length = self.config.max_sequence_length
        inner_width = max_length - self.special_count_single
        n_tokens = len(seq) + self.special_count_single
        if n_tokens <= max_length:
            return Tokenized([self._single_window(seq)], is_truncated=False)
        if truncate != "none":
            if inner_width < 0:
                raise _input_too_large(n_tokens, max_length)
            return Tokenized([self._single_window(seq.head(inner_width))], is_truncated=True)
        if span == NO_SPAN:
            raise _input_too_large(n_tokens, max_length)
        windows = [
            self._single_window(seq.slice(start, end))
            for start, end in _window_bounds(seq.word_ids, inner_width, span)
        ]
        return Tokenized(windows, is_truncated=False)

    # ------------------------------------------------------------------ pairs

    def pair(self, first: str, second: str, truncate: str, span: int) -> Tokenized:
        """Tokenize a sequence pair (QA: question, context; text_similarity: query, document).

        With a span the second sequence is windowed and the first repeated whole in every window.

        Raises:
            InvalidInput: empty text, bad settings, no special tokens, a span too wide for the room
                the first sequence leaves, or a span that cannot make progress.
            InputTooLarge: too long for ``truncate: none``, or a sequence that cannot be truncated
                enough.
        """
        validate_window_settings(truncate, span, self.config.max_sequence_length)
        self._check_pair_specials()
        seq1, seq2 = self._encode(first), self._encode(second)
        max_length = self.config.max_sequence_length
        n_tokens = len(seq1) + len(seq2) + self.special_count_pair
        is_truncated = False
        if n_tokens > max_length and span < 0:
            seq1, seq2 = self._truncate_pair(seq1, seq2, truncate)
            is_truncated = True
        if is_truncated or n_tokens < max_length:
            return Tokenized([self._pair_window(seq1, seq2)], is_truncated)
        width = max_length - self.special_count_pair - len(seq1)
        if width <= 0:
            raise InputTooLarge(
                f"Unable to do sequence pair tokenization: the first sequence "
                f"[{len(seq1) + self.special_count_pair} tokens] is longer than the max sequence length "
                f"[{max_length} tokens]"
            )
        if span > width:
            raise InvalidInput(
                "Unable to do sequence pair tokenization: the combined first sequence, span length and "
                f"delimiting tokens [{len(seq1)} + {span} + {self.special_count_pair} = "
                f"{len(seq1) + span + self.special_count_pair} tokens] is longer than the max sequence "
                f"length [{max_length} tokens]. Reduce the size of the [span] window."
            )
        windows = [
            self._pair_window(seq1, seq2.slice(start, end))
            for start, end in _window_bounds(seq2.word_ids, width, span)
        ]
        return Tokenized(windows, is_truncated=False)

    def pairs(self, first: str, seconds: Sequence[str], truncate: str) -> list[Tokenized]:
        """One pair per second sequence, ``first`` encoded once (zero-shot: input text, hypotheses).

        No windowing, as Elasticsearch's zero-shot path; ``truncate`` applies per pair.

        Raises:
            InvalidInput / InputTooLarge: as :meth:`pair`.
        """
        validate_window_settings(truncate, NO_SPAN, self.config.max_sequence_length)
        self._check_pair_specials()
        seq1 = self._encode(first)
        max_length = self.config.max_sequence_length
        results = []
        for seq2 in self._encode_many(seconds):
            if len(seq1) + len(seq2) + self.special_count_pair > max_length:
                first_part, second_part = self._truncate_pair(seq1, seq2, truncate)
                results.append(Tokenized([self._pair_window(first_part, second_part)], is_truncated=True))
            else:
                results.append(Tokenized([self._pair_window(seq1, seq2)], is_truncated=False))
        return results

    def _check_pair_specials(self) -> None:
        if not self.config.with_special_tokens:
            raise InvalidInput(PAIR_WITHOUT_SPECIALS_MESSAGE)

    def _truncate_pair(self, seq1: _Sequence, seq2: _Sequence, truncate: str) -> tuple[_Sequence, _Sequence]:
        """Cut an over-long pair to ``max_sequence_length`` (§4.3), keeping the beginnings."""
        max_length = self.config.max_sequence_length
        extra = self.special_count_pair
        n_first, n_second = len(seq1), len(seq2)
        room = max_length - extra
        if truncate == "none" or room < 0:
            raise _input_too_large(n_first + n_second + extra, max_length)
        if truncate == "first":
            if n_second > room:
                raise InputTooLarge(_pair_truncation_message("first", "second", n_second, room))
            return seq1.head(room - n_second), seq2
        if truncate == "second":
            if n_first > room:
                raise InputTooLarge(_pair_truncation_message("second", "first", n_first, room))
            return seq1, seq2.head(room - n_first)
        half = room // 2
        first_length = min(n_first, half) if n_second > half else min(n_first, room - n_second)
        second_length = min(n_second, room - first_length)
        return seq1.head(first_length), seq2.head(second_length)


def _with_prefix_space(rust: RustTokenizer, add_prefix_space: bool) -> RustTokenizer:
    """The tokenizer with every ByteLevel step set to ``add_prefix_space``, nested ones included.

    Elasticsearch's roberta option decides, whatever tokenizer.json says; editing the JSON reaches
    ByteLevel steps inside a ``Sequence``, which the Python objects do not expose for writing.
    """
    data = json.loads(rust.to_str())
    pending = [data.get("pre_tokenizer"), data.get("post_processor")]
    found = False
    while pending:
        node = pending.pop()
        if not isinstance(node, dict):
            continue
        if node.get("type") in ("ByteLevel", "RobertaProcessing"):
            node["add_prefix_space"] = add_prefix_space
            found = found or node["type"] == "ByteLevel"
        pending.extend(node.get("pretokenizers", []) + node.get("processors", []))
    if not found:
        raise PackageError("[add_prefix_space] needs a tokenizer.json with a ByteLevel pre-tokenizer")
    return RustTokenizer.from_str(json.dumps(data))


def _pair_truncation_message(truncate: str, which: str, n_tokens: int, room: int) -> str:
    return (
        f"Attempting truncation [{truncate}] but input is too large for the {which} sequence. "
        f"The tokenized input length [{n_tokens}] exceeds the maximum sequence length [{room}], "
        "when taking special tokens into account"
    )


def _trim_whitespace(offsets: np.ndarray, text: str) -> np.ndarray:
    """Move each start past leading and each end before trailing whitespace, without a per-token loop.

    ``next_solid[i]`` is the first non-space position at or after ``i``; ``solid_end[j]`` the smallest
    end ``<= j`` that keeps the last character non-space. Empty pieces (a lone ``▁``) become empty spans.
    """
    code_points = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    is_space = np.isin(code_points, _SPACE_CODE_POINTS)
    if not is_space.any():
        return offsets
    length = len(code_points)
    positions = np.arange(length + 1)
    next_solid = np.minimum.accumulate(np.where(np.append(is_space, False), length, positions)[::-1])[::-1]
    solid_end = np.maximum.accumulate(np.where(np.insert(is_space, 0, True), 0, positions))
    starts = np.minimum(next_solid[offsets[:, 0]], offsets[:, 1])
    ends = np.maximum(solid_end[offsets[:, 1]], starts)
    return np.stack((starts, ends), axis=1).astype(np.int32)
