"""Small tokenizers for the types no offline model gives us, trained here with the ``tokenizers`` trainers.

Each builder writes a ``tokenizer.json`` laid out like the Hugging Face fast tokenizer of that family
(special tokens, ``lstrip`` on ``<mask>``, pre-tokenizer, and a post-processor that adds the specials,
which the tests use as an independent oracle for the layouts). The vocabularies are tiny on purpose:
words split into many pieces, which is what windowing and word-id tests need.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

CORPUS = [
    "Hello world, this is a small corpus for tokenizer tests.",
    "Héllo wörld! Tokenizers are fun; unbelievable things happen in Zürich.",
    "The capital of France is Paris, and the capital of Germany is Berlin.",
    "Running runners ran quickly over the green hills near the old river.",
    "Elasticsearch answers questions about windows, spans and truncation.",
    "Naïve café owners in São Paulo serve 42 kinds of coffee every day.",
] * 8

# Specials in the id order of the Hugging Face checkpoints of each family.
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]
DEBERTA_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]


def _save(tokenizer: Tokenizer, path: Path, lstrip_mask: str | None) -> Path:
    """Write tokenizer.json, giving the mask token ``lstrip`` as RoBERTa-style checkpoints do."""
    data = json.loads(tokenizer.to_str())
    for added in data["added_tokens"]:
        if added["content"] == lstrip_mask:
            added["lstrip"] = True
    path.write_text(json.dumps(data))
    return path


def _template(cls: str, sep: str, tokenizer: Tokenizer, double_sep: bool) -> processors.TemplateProcessing:
    middle = f"{sep} {sep}" if double_sep else sep
    second_type = "0" if double_sep else "1"
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {middle} $B:{second_type} {sep}:{second_type}",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )


def build_roberta(path: Path) -> Path:
    """Byte-level BPE with RoBERTa's specials and post-processor (offsets trimmed of the space byte)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=ROBERTA_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")), trim_offsets=True
    )
    return _save(tokenizer, path, "<mask>")


def build_mpnet(path: Path) -> Path:
    """Lower-casing WordPiece with MPNet's mixed specials (``<s>`` ... ``[UNK]`` ... ``<mask>``)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=180, special_tokens=MPNET_SPECIALS)
    )
    tokenizer.post_processor = _template("<s>", "</s>", tokenizer, double_sep=True)
    return _save(tokenizer, path, "<mask>")


def _unigram(specials: list[str], unk: str) -> Tokenizer:
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=160, special_tokens=specials, unk_token=unk)
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def build_xlm_roberta(path: Path) -> Path:
    """SentencePiece-style Unigram with ``▁`` and XLM-R's specials."""
    tokenizer = _unigram(ROBERTA_SPECIALS, "<unk>")
    tokenizer.post_processor = _template("<s>", "</s>", tokenizer, double_sep=True)
    return _save(tokenizer, path, "<mask>")


def build_deberta_v2(path: Path) -> Path:
    """Unigram with DeBERTa-v2's BERT-style specials and segment ids."""
    tokenizer = _unigram(DEBERTA_SPECIALS, "[UNK]")
    tokenizer.post_processor = _template("[CLS]", "[SEP]", tokenizer, double_sep=False)
    return _save(tokenizer, path, None)


BUILDERS = {
    "roberta": build_roberta,
    "mpnet": build_mpnet,
    "xlm_roberta": build_xlm_roberta,
    "deberta_v2": build_deberta_v2,
}

# Words that MiniLM's uncased WordPiece keeps as one token each: exact token counts for worked examples.
ONE_TOKEN_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "as",
    "with",
    "by",
    "at",
    "from",
    "his",
    "her",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "has",
    "had",
    "not",
    "but",
    "first",
    "one",
    "their",
    "its",
    "new",
    "after",
    "who",
    "they",
    "have",
    "two",
]


def words(count: int, offset: int = 0) -> str:
    """``count`` distinct one-token words (cycling), so a text's token count is known exactly."""
    return " ".join(ONE_TOKEN_WORDS[(offset + i) % len(ONE_TOKEN_WORDS)] for i in range(count))
