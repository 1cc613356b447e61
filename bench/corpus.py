"""Benchmark corpora: a user's text file, the real corpora in ../shared/data, or the built-in ones.

Benchmarks measure real length distributions (padding waste and attention cost depend on them), so the
named corpora read real text; nothing here is committed data. The built-in corpora (``builtin-queries``,
``builtin-sentences``, ``builtin-passages``, the default) need nothing but Python: real English prose
from the docstrings of the standard library's own modules, cut to query (3-10 words), sentence (10-30
words) and passage (80-100 words) lengths, in a fixed order, so the same Python gives the same texts.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from engine.errors import InvalidInput

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

# Standard-library modules with long prose docstrings, in a fixed order (their docs, classes and functions).
DOCSTRING_MODULES = (
    "argparse", "asyncio", "collections", "concurrent.futures", "configparser", "contextlib", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fractions", "functools",
    "gettext", "heapq", "http.client", "http.cookiejar", "imaplib", "inspect", "ipaddress", "json",
    "logging", "mailbox", "multiprocessing", "os", "pathlib", "pickle", "pydoc", "queue", "random", "re",
    "shutil", "smtplib", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile",
    "textwrap", "threading", "tkinter", "turtle", "typing", "unittest", "urllib.request", "uuid", "warnings",
    "xml.dom.minidom", "zipfile",
)
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)][.!?])\s+(?=[A-Z])")
_PROSE_WORD = re.compile(r"^[A-Za-z][A-Za-z'-]*[,.;:!?]?$")


def _docstrings() -> Iterator[str]:
    for name in DOCSTRING_MODULES:
        # Only docstrings are read, but touching a deprecated stdlib member (typing.io) still warns.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                module = importlib.import_module(name)
            except ImportError:  # tkinter and turtle are optional in some Python builds
                continue
            docs = [inspect.getdoc(module) or ""]
            for _, member in sorted(vars(module).items()):
                if (inspect.isclass(member) or inspect.isfunction(member)) and getattr(
                    member, "__module__", ""
                ) == name:
                    docs.append(inspect.getdoc(member) or "")
        yield from docs


def _prose_sentences() -> list[str]:
    """Sentences of plain English from the docstrings: paragraphs without code, mostly ordinary words."""
    sentences = []
    for doc in _docstrings():
        for paragraph in doc.split("\n\n"):
            lines = paragraph.splitlines()
            if not lines or any(line.startswith((" ", ">>>", "-", "*", ":", "..")) for line in lines):
                continue
            for sentence in _SENTENCE_END.split(" ".join(line.strip() for line in lines)):
                words = sentence.split()
                if len(words) >= 3 and sum(bool(_PROSE_WORD.match(word)) for word in words) >= 0.8 * len(words):
                    sentences.append(" ".join(words))
    return list(dict.fromkeys(sentences))  # the same docstring is inherited by several classes


def _builtin_queries() -> list[str]:
    """Search-query lengths: the first 3-10 words of each sentence, without its end punctuation."""
    queries = []
    for number, sentence in enumerate(_prose_sentences()):
        words = sentence.rstrip(".!?").split()
        queries.append(" ".join(words[: 3 + number % 8]))
    return list(dict.fromkeys(queries))


def _builtin_sentences() -> list[str]:
    return [sentence for sentence in _prose_sentences() if 10 <= len(sentence.split()) <= 30]


def _builtin_passages() -> list[str]:
    """Consecutive sentences joined until a passage holds 80-100 words (about 130 word pieces, like MS MARCO)."""
    passages, words = [], []
    for sentence in _prose_sentences():
        words.extend(sentence.split())
        if len(words) >= 80:
            passages.append(" ".join(words[:100]))
            words = []
    return passages


BUILTIN_CORPORA: dict[str, Callable[[], list[str]]] = {
    "builtin-queries": _builtin_queries,
    "builtin-sentences": _builtin_sentences,
    "builtin-passages": _builtin_passages,
}
DEFAULT_CORPUS = "builtin-passages"


def corpus_names() -> list[str]:
    return sorted({*BUILTIN_CORPORA, *CORPORA})


def load_corpus(name_or_path: str, limit: int | None = None) -> list[str]:
    """Texts of a named corpus (``builtin-queries``/``-sentences``/``-passages``; with ../shared/data also
    ``passages``, ``dbpedia``, ``conll``, ``sts``) or of a file, one text per line. A built-in corpus
    shorter than ``limit`` repeats (the lengths are what matter).

    Raises:
        InvalidInput: the name is no corpus and no file, the named corpus needs ../shared/data and it is
            not on this machine, or the file holds no text.
    """
    path = Path(name_or_path)
    if path.is_file():
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    elif name_or_path in BUILTIN_CORPORA:
        texts = BUILTIN_CORPORA[name_or_path]()
        if limit and texts:
            texts = (texts * (limit // len(texts) + 1))[:limit]
    elif name_or_path in CORPORA:
        if not SHARED_DATA.is_dir():
            raise InvalidInput(f"corpus [{name_or_path}] reads {SHARED_DATA}, which is absent on this machine; "
                               f"use a built-in corpus ({', '.join(sorted(BUILTIN_CORPORA))}) or a text file")
        texts = CORPORA[name_or_path]()
    else:
        raise InvalidInput(f"--corpus [{name_or_path}] is neither a file nor one of {corpus_names()}")
    if not texts:
        raise InvalidInput(f"corpus [{name_or_path}] holds no text")
    return texts[:limit] if limit else texts
