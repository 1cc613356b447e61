"""The package's tokenizer: ``tokenizer.json``, the Elasticsearch tokenization block and special tokens.

The engine tokenizes with Hugging Face ``tokenizers`` and applies Elasticsearch's truncation and
windowing itself, so the saved ``tokenizer.json`` has its own truncation and padding switched off; its
normaliser, pre-tokenizer, model and post-processor (special-token template) are kept as the model's
authors defined them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from engine.errors import ExportError
from engine.manifest import TokenizationConfig

from .registry import PositionTable

TOKENIZER_NAME = "tokenizer.json"
SENTENCE_CONFIG_NAME = "sentence_bert_config.json"
# eland's ceiling on a trustworthy length (REASONABLE_MAX_LENGTH in eland's _find_max_sequence_length,
# ELASTIC_REFERENCE.md §8.4): larger values are the transformers "unset" sentinel (1e30) or lengths the model
# was never trained at. eland trusts only lengths below it; 8192 itself is trusted here (XLM-R-based
# 8k models such as BGE-M3 say exactly 8192). Lengths derived from the config are capped at it too.
MAX_TRUSTED_LENGTH = 8192
BERT_DEFAULT_LENGTH = 512
# eland's question-answering settings (SQuAD conventions, §2.3 and §8.4).
QA_MAX_SEQUENCE_LENGTH = 386
QA_SPAN = 128
LENGTH_ORIGINS = ("flag", "tokenizer", "config", "question_answering", "bert_default")
SPECIAL_TOKEN_ROLES = ("cls", "sep", "pad", "unk", "mask")
REQUIRED_ROLES = ("cls", "sep", "pad", "unk")
# Files a fast tokenizer can be built from: its own JSON, or the vocabularies transformers converts.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "*.model")


@dataclasses.dataclass(frozen=True)
class PackageTokenizer:
    """A loaded fast tokenizer plus what the manifest says about it."""

    hf_tokenizer: Any  # transformers.PreTrainedTokenizerFast; typed loosely to keep transformers lazy
    tokenization: TokenizationConfig
    special_tokens: dict[str, list[Any]]
    length: SequenceLength

    def save(self, directory: Path) -> None:
        """Write ``tokenizer.json`` with truncation and padding off."""
        backend = self.hf_tokenizer.backend_tokenizer
        backend.no_truncation()
        backend.no_padding()
        backend.save(str(directory / TOKENIZER_NAME))

    def encode(self, texts: list[str], pairs: list[str] | None, max_length: int) -> dict[str, Any]:
        """Padded numpy batch with correct masks and segment ids, as the engine will feed the graph."""
        return dict(
            self.hf_tokenizer(
                texts,
                pairs,
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
            )
        )


def load_tokenizer(path: Path, trust_remote_code: bool) -> Any:
    """The source's fast tokenizer, or an ``ExportError`` when there is none to package."""
    from transformers import AutoTokenizer

    if not any(any(path.glob(pattern)) for pattern in TOKENIZER_FILES):
        raise ExportError(
            f"[{path}] has no tokenizer (expected tokenizer.json, vocab.txt, vocab.json with merges.txt, "
            "or a sentencepiece .model file)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(path), use_fast=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ExportError(f"cannot load the tokenizer of [{path}]: {str(error).splitlines()[0]}") from error
    if isinstance(tokenizer, bool) or not getattr(tokenizer, "is_fast", False):
        raise ExportError(
            f"[{path}] has no tokenizer this engine can run (needs tokenizer.json or files transformers can "
            "convert to one: vocab.txt, vocab.json + merges.txt, or a sentencepiece model)"
        )
    return tokenizer


def _normalizer_lowercases(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    if node.get("type") == "Lowercase":
        return True
    if node.get("type") == "BertNormalizer":
        return bool(node.get("lowercase"))
    return any(_normalizer_lowercases(child) for child in node.get("normalizers") or [])


def _backend_lowercases(hf_tokenizer: Any) -> bool:
    return _normalizer_lowercases(json.loads(hf_tokenizer.backend_tokenizer.to_str()).get("normalizer"))


def _do_lower_case(hf_tokenizer: Any) -> bool:
    """The tokenizer's lower-casing: its settings, or its normaliser (which is what the package runs, and
    may lower-case where the settings do not: see :func:`apply_sentence_lower_case`)."""
    value = getattr(hf_tokenizer, "do_lower_case", None)
    if value is None:
        value = hf_tokenizer.init_kwargs.get("do_lower_case")
    return bool(value) or _backend_lowercases(hf_tokenizer)


def apply_sentence_lower_case(hf_tokenizer: Any, path: Path) -> bool:
    """sentence-transformers lower-cases every text when the Transformer module's
    ``sentence_bert_config.json`` says ``do_lower_case: true`` (5.x by putting a Lowercase normaliser in
    front of the tokenizer's own); do the same, so the package tokenizes as the library does. Returns
    whether a normaliser was added."""
    file = path / SENTENCE_CONFIG_NAME
    if not file.is_file():
        return False
    try:
        config = json.loads(file.read_text())
    except ValueError as error:
        raise ExportError(f"cannot parse {file}: {error}") from error
    if not (isinstance(config, dict) and config.get("do_lower_case")) or _backend_lowercases(hf_tokenizer):
        return False
    from tokenizers import normalizers

    backend = hf_tokenizer.backend_tokenizer
    current = backend.normalizer
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), *([current] if current else [])])
    return True


@dataclasses.dataclass(frozen=True)
class SequenceLength:
    """The package's ``max_sequence_length`` and where it came from.

    Attributes:
        value: tokens per model row.
        origin: ``flag`` (``--max-sequence-length``), ``tokenizer`` (its ``model_max_length``),
            ``config`` (the model's position table), ``question_answering`` (eland's 386) or
            ``bert_default`` (eland's 512 for BERT tokenizers when nothing else says).
        reason: one line saying how the value was reached, printed by the export.
    """

    value: int
    origin: str
    reason: str

    def __post_init__(self) -> None:
        if self.origin not in LENGTH_ORIGINS:
            raise ValueError(f"unknown max_sequence_length origin [{self.origin}]")

    def to_json(self) -> dict[str, Any]:
        """The manifest's record of it (``provenance.max_sequence_length``)."""
        return {"value": self.value, "origin": self.origin, "reason": self.reason}


def _tokenizer_length(hf_tokenizer: Any) -> int | None:
    """``model_max_length`` when the tokenizer really sets one (not transformers' 1e30 "unset" sentinel,
    nor a length past eland's 8192 ceiling)."""
    length = getattr(hf_tokenizer, "model_max_length", None)
    if isinstance(length, int) and not isinstance(length, bool) and 0 < length <= MAX_TRUSTED_LENGTH:
        return length
    return None


def max_sequence_length(
    hf_tokenizer: Any, tokenizer_type: str, override: int | None, task: str, positions: PositionTable
) -> SequenceLength:
    """eland's rule (§8.4), with the model config where eland gives up: an explicit value; question
    answering's 386; the tokenizer's ``model_max_length`` when ≤ 8192; else the position table's length
    (``max_position_embeddings`` less the architecture's offset, capped at eland's 8192 ceiling); else
    512 for BERT tokenizers.

    No length may exceed an absolute position table: rows that long would fail at inference time.
    An explicit value over it is refused; a derived one is lowered to it.
    """
    limit, where = positions.limit, positions.describe()
    if override is not None:
        if override <= 0:
            raise ExportError(f"[max_sequence_length] must be greater than 0; got [{override}]")
        if limit is not None and override > limit:
            raise ExportError(
                f"[max_sequence_length] [{override}] exceeds the model's {limit} positions ({where})"
            )
        return SequenceLength(override, "flag", "--max-sequence-length")
    if task == "question_answering":
        wanted, origin, reason = (
            QA_MAX_SEQUENCE_LENGTH,
            "question_answering",
            "eland's question-answering length",
        )
    elif (length := _tokenizer_length(hf_tokenizer)) is not None:
        wanted, origin, reason = length, "tokenizer", "the tokenizer's model_max_length"
    elif positions.positions is not None:
        capped = min(positions.positions, MAX_TRUSTED_LENGTH)
        reason = f"the tokenizer sets no model_max_length; {where}"
        if capped < positions.positions:
            reason += f", capped at {MAX_TRUSTED_LENGTH} as eland caps"
        return SequenceLength(capped, "config", reason)
    elif tokenizer_type == "bert":
        wanted, origin, reason = BERT_DEFAULT_LENGTH, "bert_default", "eland's default for BERT tokenizers"
    else:
        raise ExportError(
            "cannot tell the model's maximum input length (its tokenizer sets no model_max_length and its "
            "config no max_position_embeddings); pass --max-sequence-length"
        )
    if limit is not None and wanted > limit:
        return SequenceLength(limit, "config", f"{reason} {wanted}, lowered to the model's {where}")
    return SequenceLength(wanted, origin, reason)


def special_tokens(hf_tokenizer: Any, path: Path) -> dict[str, list[Any]]:
    """``{"cls": [token, id], ...}``; Elasticsearch needs CLS, SEP, PAD and UNK (§4.2)."""
    found: dict[str, list[Any]] = {}
    for role in SPECIAL_TOKEN_ROLES:
        token = getattr(hf_tokenizer, f"{role}_token", None)
        if token is None:
            continue
        token_id = hf_tokenizer.convert_tokens_to_ids(str(token))
        if token_id is None:
            continue
        found[role] = [str(token), int(token_id)]
    missing = [role for role in REQUIRED_ROLES if role not in found]
    if missing:
        raise ExportError(f"the tokenizer of [{path}] has no {', '.join(missing)} token")
    return found


def tokenization_config(
    hf_tokenizer: Any, tokenizer_type: str, task: str, max_length: int
) -> TokenizationConfig:
    """The Elasticsearch tokenization block, with eland's per-task rules (§8.4): QA windows with span
    128 and no truncation; text_similarity truncates the second sequence (the document)."""
    truncate, span = "first", -1
    if task == "question_answering":
        truncate, span = "none", QA_SPAN
        if span >= max_length:
            raise ExportError(
                f"question answering windows overlap by {QA_SPAN} tokens, so [max_sequence_length] must be "
                f"greater than {QA_SPAN}; got [{max_length}]"
            )
    elif task == "text_similarity":
        truncate = "second"
    lower = tokenizer_type in ("bert", "mpnet", "deberta_v2") and _do_lower_case(hf_tokenizer)
    add_prefix_space = None
    if tokenizer_type == "roberta":
        add_prefix_space = bool(getattr(hf_tokenizer, "add_prefix_space", False))
    return TokenizationConfig(
        type=tokenizer_type,
        do_lower_case=lower,
        max_sequence_length=max_length,
        truncate=truncate,
        span=span,
        with_special_tokens=True,
        add_prefix_space=add_prefix_space,
    )


def prepare_tokenizer(
    path: Path,
    tokenizer_type: str,
    task: str,
    max_length_override: int | None,
    trust_remote_code: bool,
    positions: PositionTable | None = None,
) -> PackageTokenizer:
    """Load the source's tokenizer and work out everything the manifest records about it."""
    hf_tokenizer = load_tokenizer(path, trust_remote_code)
    apply_sentence_lower_case(hf_tokenizer, path)
    length = max_sequence_length(
        hf_tokenizer, tokenizer_type, max_length_override, task, positions or PositionTable(None)
    )
    return PackageTokenizer(
        hf_tokenizer=hf_tokenizer,
        tokenization=tokenization_config(hf_tokenizer, tokenizer_type, task, length.value),
        special_tokens=special_tokens(hf_tokenizer, path),
        length=length,
    )
