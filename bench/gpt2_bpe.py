"""GPT-2's byte-level BPE, which RoBERTa and BART tokenize with, for the base-size benchmarks.

No PyPI package ships RoBERTa's or BART's tokenizer files, but ``openai-whisper==20230124`` ships GPT-2's
(``whisper/assets/gpt2/vocab.json`` and ``merges.txt``, the 50,257-token vocabulary and 50,000 merges
RoBERTa and BART reuse unchanged). With the same merges a text splits into the same pieces, so token
counts (what throughput depends on) are the real models'; only the ids differ: RoBERTa's vocabulary
puts ``<s> <pad> </s> <unk>`` first and ``<mask>`` last, which :func:`roberta_vocab` reproduces by
shifting GPT-2's ids by four (no id exceeds RoBERTa's and BART's 50,265-row embedding).

The files are read from ``$ENGINE_TEST_CACHE/gpt2-bpe`` (default ``~/.cache/engine-test/gpt2-bpe``);
:data:`FETCH_HINT` says how to put them there (the sdist's setup.py needs ``pkg_resources``, hence a
Python whose setuptools still has it, e.g. Debian's ``/usr/bin/python3``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .mpnet import CACHE, ModelMissing

SDIST = "openai-whisper==20230124"
BPE_DIR = CACHE / "gpt2-bpe"
FETCH_HINT = (f"python3 -m pip download --no-deps --no-build-isolation {SDIST} -d /tmp/whisper && "
              f"mkdir -p {BPE_DIR} && tar xzf /tmp/whisper/openai-whisper-20230124.tar.gz -C {BPE_DIR} "
              "--strip-components=4 openai-whisper-20230124/whisper/assets/gpt2/vocab.json "
              "openai-whisper-20230124/whisper/assets/gpt2/merges.txt")
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


def gpt2_bpe_dir() -> Path:
    """The folder holding GPT-2's ``vocab.json`` and ``merges.txt``.

    Raises:
        ModelMissing: the files are not there (the message says how to fetch them).
    """
    if not (BPE_DIR / "vocab.json").is_file() or not (BPE_DIR / "merges.txt").is_file():
        raise ModelMissing(f"needs GPT-2's BPE files in {BPE_DIR}: {FETCH_HINT}")
    return BPE_DIR


def roberta_vocab(gpt2_vocab: dict[str, int]) -> dict[str, int]:
    """RoBERTa's layout of GPT-2's vocabulary: the four specials, GPT-2's tokens shifted by four, ``<mask>``."""
    vocab = {token: index for index, token in enumerate(ROBERTA_SPECIALS)}
    vocab.update({token: index + len(ROBERTA_SPECIALS) for token, index in gpt2_vocab.items()})
    vocab["<mask>"] = len(vocab)
    return vocab


def save_roberta_tokenizer(tokenizer_class: str, out: Path, model_max_length: int) -> None:
    """Save a fast ``RobertaTokenizerFast``/``BartTokenizerFast`` built on GPT-2's merges into ``out``."""
    import transformers

    source = gpt2_bpe_dir()
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out / "vocab.json"
    vocab_file.write_text(json.dumps(roberta_vocab(json.loads((source / "vocab.json").read_text()))))
    (out / "merges.txt").write_bytes((source / "merges.txt").read_bytes())
    tokenizer = getattr(transformers, tokenizer_class)(vocab_file=str(vocab_file), merges_file=str(out / "merges.txt"),
                                                        model_max_length=model_max_length)
    tokenizer.save_pretrained(out)
