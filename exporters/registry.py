"""What the exporter supports, as data: architectures × tasks, their inputs, tokenizers and graph outputs.

Adding an architecture or a task means adding a row here (and, for a new head shape, a wrapper in
``wrappers.py``; model quirks such as DPR's and RetriBERT's encoder classes live in ``loading.py``).
Every row checks itself in ``__post_init__`` so that a typo fails at import, not halfway through an
export.

Supported pairs (``SUPPORTED`` below is the source of truth; ``supported_pairs()`` lists them):

* BERT, DeBERTa-v2/v3, DistilBERT, ELECTRA, MobileBERT, MPNet, RoBERTa, XLM-RoBERTa: every task.
* BART: every task but ``ner`` (transformers has no ``BartForTokenClassification``).
* DPR (context and question encoders): ``text_embedding`` only (the encoder's pooled CLS output).
* RetriBERT: ``text_embedding`` only (query tower by default, document tower on request).
* sentence-transformers bi-encoders over any of these (``modules.json``, the pre-5 and the 5.x layout):
  ``text_embedding`` with Pooling (cls / max / mean / mean_sqrt_len, concatenated when several), Dense
  and Normalize in the graph; weightedmean and lasttoken pooling are refused (``sentence_pipeline.py``).

Manifest fields the exporter adds beyond docs/INTERNALS.md: ``task_options.pooling`` (text_embedding),
``task_options.prompts`` / ``default_prompt_name`` / ``include_prompt`` (sentence-transformers prompt
settings, recorded and never applied), ``provenance.max_sequence_length`` (value, origin and reason:
origin ``tokenizer``, ``config``, ``flag``, ``question_answering`` or ``bert_default``, see
``tokenizer.max_sequence_length``), ``task_options.tower`` (RetriBERT), ``optimization.rejected`` (why
the fused graph was not used) and
``quantization.int8_rejected`` (the quantiser's report when int8 missed its threshold and the fp32 graph
shipped instead). The package never holds the fp32 graph next to the int8 one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from engine.errors import ExportError
from engine.manifest import SIMILARITIES, TASKS, TOKENIZER_TYPES

ALL_TASKS = frozenset(TASKS)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")

# The model head each task is served by; "base" is the bare encoder (AutoModel).
HEADS = {
    "fill_mask": "masked_lm",
    "text_expansion": "masked_lm",
    "ner": "token_classification",
    "question_answering": "question_answering",
    "text_classification": "sequence_classification",
    "zero_shot_classification": "sequence_classification",
    "text_similarity": "sequence_classification",
    "text_embedding": "base",
    "pass_through": "base",
}

# Tasks whose rows are sequence pairs at inference time (so the parity check feeds pairs too).
PAIR_TASKS = frozenset({"question_answering", "text_similarity", "zero_shot_classification"})

# The quantiser's accuracy metric per task (exporters.quantize contract).
QUANTIZATION_METRICS = {
    "fill_mask": "token_argmax",
    "ner": "token_argmax",
    "question_answering": "token_argmax",
    "text_classification": "argmax",
    "zero_shot_classification": "argmax",
    "text_similarity": "score",
    "text_embedding": "cosine",
    "text_expansion": "sparse_cosine",
    "pass_through": "cosine",
}
QUANTIZATION_THRESHOLD = 0.99

ZERO_SHOT_HYPOTHESIS_TEMPLATE = "This example is {}."
NLI_LABELS = frozenset({"entailment", "neutral", "contradiction"})


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """One graph output: its ONNX name, its axes (names from docs/INTERNALS.md) and what it holds."""

    name: str
    axes: tuple[str, ...]
    meaning: str

    def __post_init__(self) -> None:
        if not self.axes or self.axes[0] != "batch":
            raise ValueError(f"output [{self.name}] must start with the batch axis")

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "axes": list(self.axes), "meaning": self.meaning}


OUTPUTS: Mapping[str, tuple[OutputSpec, ...]] = {
    "fill_mask": (OutputSpec("logits", ("batch", "sequence", "vocab"), "masked-LM logits per token"),),
    "ner": (OutputSpec("logits", ("batch", "sequence", "labels"), "token-classification logits"),),
    "question_answering": (
        OutputSpec("start_logits", ("batch", "sequence"), "answer-start logit per token"),
        OutputSpec("end_logits", ("batch", "sequence"), "answer-end logit per token"),
    ),
    "text_classification": (OutputSpec("logits", ("batch", "labels"), "class logits in label order"),),
    "zero_shot_classification": (
        OutputSpec("logits", ("batch", "labels"), "NLI logits in the model's label order"),
    ),
    "text_similarity": (OutputSpec("logits", ("batch", "labels"), "one relevance logit (no sigmoid)"),),
    "text_embedding": (
        OutputSpec("sentence_embedding", ("batch", "embedding"), "final sentence embedding (pooled)"),
    ),
    "text_expansion": (
        OutputSpec(
            "sparse_weights",
            ("batch", "vocab"),
            "SPLADE term weights: max over unmasked tokens of log(1 + relu(MLM logits))",
        ),
    ),
    "pass_through": (OutputSpec("last_hidden_state", ("batch", "sequence", "hidden"), "encoder output"),),
}


@dataclasses.dataclass(frozen=True)
class ArchitectureSpec:
    """One supported Hugging Face ``config.model_type``.

    Attributes:
        model_type: ``config.model_type`` as transformers spells it.
        tokenizer_type: Elasticsearch tokenization type (ELASTIC_REFERENCE.md §8.4 mapping).
        inputs: graph inputs in order; eland's traced signature without ``position_ids`` (§8.3).
        tasks: tasks this architecture can serve.
        unsupported_reason: said to the user when a task outside ``tasks`` is asked for.
    """

    model_type: str
    tokenizer_type: str
    inputs: tuple[str, ...]
    tasks: frozenset[str]
    unsupported_reason: str = ""

    def __post_init__(self) -> None:
        if self.tokenizer_type not in TOKENIZER_TYPES:
            raise ValueError(f"{self.model_type}: unknown tokenizer type {self.tokenizer_type}")
        if not set(self.inputs) <= set(INPUT_NAMES) or self.inputs[:2] != INPUT_NAMES[:2]:
            raise ValueError(f"{self.model_type}: inputs must start with input_ids, attention_mask")
        if not self.tasks <= ALL_TASKS or not self.tasks:
            raise ValueError(f"{self.model_type}: unknown tasks {sorted(self.tasks - ALL_TASKS)}")
        if self.tasks != ALL_TASKS and not self.unsupported_reason:
            raise ValueError(f"{self.model_type}: say why some tasks are unsupported")


_BERT_INPUTS = INPUT_NAMES
_TWO_INPUTS = INPUT_NAMES[:2]

SUPPORTED: Mapping[str, ArchitectureSpec] = {
    spec.model_type: spec
    for spec in (
        ArchitectureSpec("bert", "bert", _BERT_INPUTS, ALL_TASKS),
        ArchitectureSpec(
            "bart",
            "roberta",
            _TWO_INPUTS,
            ALL_TASKS - {"ner"},
            "transformers has no token-classification head for BART (no BartForTokenClassification)",
        ),
        ArchitectureSpec(
            "dpr",
            "bert",
            _BERT_INPUTS,
            frozenset({"text_embedding"}),
            "a DPR checkpoint is a context or question encoder: it only produces embeddings",
        ),
        # DeBERTa-v3 checkpoints have type_vocab_size 0: their graph then has no token_type_ids input
        # (see ``graph_inputs``).
        ArchitectureSpec("deberta-v2", "deberta_v2", _BERT_INPUTS, ALL_TASKS),
        ArchitectureSpec("distilbert", "bert", _TWO_INPUTS, ALL_TASKS),
        ArchitectureSpec("electra", "bert", _BERT_INPUTS, ALL_TASKS),
        ArchitectureSpec("mobilebert", "bert", _BERT_INPUTS, ALL_TASKS),
        ArchitectureSpec("mpnet", "mpnet", _TWO_INPUTS, ALL_TASKS),
        ArchitectureSpec("roberta", "roberta", _TWO_INPUTS, ALL_TASKS),
        ArchitectureSpec(
            "retribert",
            "bert",
            _TWO_INPUTS,
            frozenset({"text_embedding"}),
            "RetriBERT is a pair of retrieval towers: it only produces embeddings",
        ),
        ArchitectureSpec("xlm-roberta", "xlm_roberta", _TWO_INPUTS, ALL_TASKS),
    )
}

# Known sentence-embedding models and the similarity their authors trained them for; anything else gets
# its similarity from its sentence-transformers config (see ``suggest_similarity``).
SIMILARITY_SEEDS: Mapping[str, str] = {
    "sentence-transformers/all-minilm-l6-v2": "cosine",
    "sentence-transformers/all-mpnet-base-v2": "cosine",
}
# sentence-transformers' ``similarity_fn_name`` → the manifest's (Elasticsearch's) names.
ST_SIMILARITY_NAMES: Mapping[str, str] = {"cosine": "cosine", "dot": "dot_product", "euclidean": "l2_norm"}


def architecture_spec(model_type: str) -> ArchitectureSpec:
    """The row for ``model_type``, or an ``ExportError`` naming what is supported."""
    spec = SUPPORTED.get(model_type)
    if spec is None:
        raise ExportError(
            f"unsupported architecture [{model_type}]; supported: {', '.join(sorted(SUPPORTED))}"
        )
    return spec


def supported_pairs() -> list[tuple[str, str]]:
    """Every (architecture, task) pair the exporter handles, sorted; the documentation's table."""
    return sorted((spec.model_type, task) for spec in SUPPORTED.values() for task in spec.tasks)


def check_task(spec: ArchitectureSpec, task: str) -> None:
    """Refuse a task the architecture has no head for, saying why."""
    if task not in ALL_TASKS:
        raise ExportError(f"unknown task [{task}]; expected one of {', '.join(TASKS)}")
    if task not in spec.tasks:
        raise ExportError(
            f"architecture [{spec.model_type}] cannot serve [{task}]: {spec.unsupported_reason}; "
            f"it supports {', '.join(sorted(spec.tasks))}"
        )


def graph_inputs(spec: ArchitectureSpec, type_vocab_size: int | None) -> tuple[str, ...]:
    """The graph's inputs: the architecture's, less ``token_type_ids`` when the model has no segment
    embedding (DeBERTa-v3), since the exporter would drop the unused input anyway."""
    if "token_type_ids" in spec.inputs and type_vocab_size == 0:
        return tuple(name for name in spec.inputs if name != "token_type_ids")
    return spec.inputs


@dataclasses.dataclass(frozen=True)
class PositionTable:
    """What a model config says about input positions, read the way each architecture's modeling code
    in transformers uses them.

    Attributes:
        positions: tokens the position table can embed (``max_position_embeddings`` less ``offset``), or
            ``None`` when the config has no ``max_position_embeddings``.
        offset: table rows no token can use. RoBERTa and XLM-RoBERTa number positions from
            ``padding_idx + 1`` with ``padding_idx = pad_token_id``; MPNet does too, but its
            ``padding_idx`` is always 1 whatever the pad id; BART's table already holds
            ``max_position_embeddings + 2`` rows, so its offset costs no position.
        absolute: longer rows fail (an absolute table); ``False`` for DeBERTa-v2/v3 without
            ``position_biased_input``, whose relative attention runs at any length, so ``positions`` is
            only the length it was trained at.
    """

    positions: int | None
    offset: int = 0
    absolute: bool = True
    model_type: str = ""

    @property
    def limit(self) -> int | None:
        """The most tokens a row may hold, or ``None`` when no table bounds it."""
        return self.positions if self.absolute else None

    def describe(self) -> str:
        """Where ``positions`` came from, for the export's output and the manifest."""
        if self.positions is None:
            return "no max_position_embeddings"
        if self.offset:
            return (
                f"max_position_embeddings {self.positions + self.offset} minus {self.model_type}'s position "
                f"offset {self.offset}"
            )
        return f"max_position_embeddings {self.positions}"


# Learned positions that start after padding_idx (fairseq's convention): padding_idx is the config's
# pad id for these, and fixed at 1 for MPNet (transformers' MPNetEmbeddings).
_PAD_ID_OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta"})
_MPNET_PADDING_IDX = 1


def position_table(config: Mapping[str, Any]) -> PositionTable:
    """The model's :class:`PositionTable`, from its raw ``config.json``."""
    model_type = str(config.get("model_type", ""))
    table_rows = config.get("max_position_embeddings")
    if not isinstance(table_rows, int) or isinstance(table_rows, bool) or table_rows <= 0:
        return PositionTable(None, model_type=model_type)
    offset = 0
    if model_type in _PAD_ID_OFFSET_POSITIONS:
        pad_token_id = config.get("pad_token_id")
        offset = (1 if pad_token_id is None else int(pad_token_id)) + 1
    elif model_type == "mpnet":
        offset = _MPNET_PADDING_IDX + 1
    absolute = not (model_type == "deberta-v2" and not config.get("position_biased_input", True))
    return PositionTable(max(table_rows - offset, 0), offset, absolute, model_type)


def detect_task(
    architectures: Sequence[str] | None,
    id2label: Mapping[int, str] | None,
    name: str,
    is_sentence_transformer: bool,
) -> str:
    """Pick a task the way eland's ``task_type_from_model_config`` does (ELASTIC_REFERENCE.md §8.2).

    ``is_sentence_transformer`` extends eland's ``sentence-transformers/`` name test to local directories
    that hold a ``modules.json``, which is how such a model is recognised without its hub id.
    """
    sentence_model = is_sentence_transformer or name.startswith("sentence-transformers/")
    candidates: set[str] = set()
    for architecture in architectures or ():
        if "MaskedLM" in architecture:
            candidates |= {"fill_mask", "text_embedding"}
        if "TokenClassification" in architecture:
            candidates.add("ner")
        if "SequenceClassification" in architecture:
            candidates |= {"text_classification", "zero_shot_classification", "text_similarity"}
        if "QuestionAnswering" in architecture:
            candidates.add("question_answering")
        if architecture in ("DPRQuestionEncoder", "DPRContextEncoder"):
            candidates.add("text_embedding")
    if not candidates:
        if sentence_model:
            return "text_embedding"
        raise ExportError(
            f"cannot tell which task [{name}] is for (architectures {list(architectures or [])}); pass --task"
        )
    if "text_similarity" in candidates:
        labels = [str(label).lower() for label in (id2label or {}).values()]
        if len(labels) == 1:
            return "text_similarity"
        if labels and set(labels) <= NLI_LABELS:
            return "zero_shot_classification"
        return "text_classification"
    if candidates == {"fill_mask", "text_embedding"}:
        return "text_embedding" if sentence_model else "fill_mask"
    if len(candidates) > 1:
        raise ExportError(f"[{name}] has heads for several tasks {sorted(candidates)}; pass --task")
    return candidates.pop()


def labels_for_task(task: str, id2label: Mapping[int, str] | None, name: str) -> list[str] | None:
    """The manifest ``labels`` (id2label sorted by id; ner ``-`` → ``_`` as eland does), after checking
    that the model can serve the task with them (ELASTIC_REFERENCE.md §2.2, §2.4, §2.7, §2.8)."""
    ordered = [
        str(label) for _, label in sorted((int(key), value) for key, value in (id2label or {}).items())
    ]
    if task == "text_similarity":
        if len(ordered) != 1:
            raise ExportError(
                f"[text_similarity] needs a cross-encoder with exactly one output logit; [{name}] has "
                f"{len(ordered)} labels {ordered} (Elasticsearch would fail with "
                f"'Expected exactly [1] value in text_similarity result; got [{len(ordered)}]')"
            )
        return None
    if task == "text_classification":
        if len(ordered) < 2:
            raise ExportError(
                f"[text_classification] requires at least 2 [classification_labels]; [{name}] has {ordered}"
            )
        return ordered
    if task == "zero_shot_classification":
        lowered = [label.lower() for label in ordered]
        if len(ordered) != 3 or set(lowered) != NLI_LABELS:
            raise ExportError(
                "[zero_shot_classification] needs an NLI model whose labels are entailment, neutral and "
                f"contradiction; [{name}] has {ordered}"
            )
        return ordered
    if task == "ner":
        converted = [label.replace("-", "_") for label in ordered]
        prefixes = ("I_", "B_", "O")
        bad = [label for label in converted if not label.upper().startswith(prefixes)]
        if bad or "O" not in converted:
            raise ExportError(
                f"[ner] needs IOB labels (B-/I- prefixes and an 'O' label); [{name}] has {ordered}"
            )
        return converted
    return None


def suggest_similarity(
    source_id: str,
    model_type: str,
    normalized: bool,
    st_similarity_fn: str | None,
) -> str:
    """The similarity that suits an embedding model: a known model's, else a normalised output's cosine,
    else what its sentence-transformers config says, else dot product for DPR, else cosine."""
    seeded = SIMILARITY_SEEDS.get(source_id.lower())
    lowered = source_id.lower()
    if seeded is None and "msmarco" in lowered and "dot" in lowered:
        seeded = "dot_product"
    if seeded is None and normalized:
        seeded = "cosine"
    if seeded is None and st_similarity_fn:
        seeded = ST_SIMILARITY_NAMES.get(st_similarity_fn)
    if seeded is None and model_type == "dpr":
        seeded = "dot_product"
    similarity = seeded or "cosine"
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity {similarity} is not a manifest similarity")
    return similarity
