"""Benchmark corpora: a user's text file, or the real corpora in ../shared/data.

Benchmarks measure real length distributions (padding waste and attention cost depend on them), so the
named corpora read real text; nothing here is committed data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("ENGINE_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "data"


def _dbpedia_passages(min_words: int, max_words: int) -> list[str]:
    """DBpedia abstracts cut to MS MARCO-like passages (about 130 word pieces each)."""
    texts = []
    with open(SHARED_DATA / "retrieval" / "dbpedia_subset" / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            words = json.loads(line)["text"].split()
            if len(words) >= min_words:
                texts.append(" ".join(words[:max_words]))
    return texts


def conll_sentences(limit: int | None = None) -> list[tuple[list[str], list[str]]]:
    """CoNLL-2003 test sentences as (tokens, IOB2 tags); the NER corpus and the NER accuracy both read it."""
    sentences, tokens, tags = [], [], []
    with open(SHARED_DATA / "ner" / "conll2003_test_a.txt", encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if tokens:
                    sentences.append((tokens, tags))
                tokens, tags = [], []
                continue
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        sentences.append((tokens, tags))
    return sentences[:limit] if limit else sentences


def _conll_texts() -> list[str]:
    return [" ".join(tokens) for tokens, _ in conll_sentences() if len(tokens) >= 3]


def _sts_sentences() -> list[str]:
    texts = []
    with open(SHARED_DATA / "sts" / "sts-test_a.csv", encoding="utf-8") as handle:
        for line in handle:
            columns = line.rstrip("\n").split("\t")
            if len(columns) >= 7:
                texts.extend(columns[5:7])
    return texts


CORPORA = {
    "passages": lambda: _dbpedia_passages(80, 100),
    "dbpedia": lambda: _dbpedia_passages(1, 10_000),
    "conll": _conll_texts,
    "sts": _sts_sentences,
}


def load_corpus(name_or_path: str, limit: int | None = None) -> list[str]:
    """Texts of a named corpus (``passages``, ``dbpedia``, ``conll``, ``sts``) or of a file, one per line.

    Raises:
        FileNotFoundError: the named corpus needs ../shared/data and it is not on this machine.
    """
    path = Path(name_or_path)
    if path.is_file():
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif name_or_path in CORPORA:
        if not SHARED_DATA.is_dir():
            raise FileNotFoundError(f"corpus [{name_or_path}] reads {SHARED_DATA}, which is absent; pass a text file")
        texts = CORPORA[name_or_path]()
    else:
        raise FileNotFoundError(f"[{name_or_path}] is neither a file nor one of {sorted(CORPORA)}")
    return texts[:limit] if limit else texts
