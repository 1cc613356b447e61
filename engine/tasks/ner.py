"""ner: IOB token classification grouped into entities (ELASTIC_REFERENCE.md §2.2)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import _kernels
from ..errors import ModelError
from ..tokenization import Window
from .common import (
    Prepared,
    TaskConfig,
    TaskRunner,
    first_window,
    graph_output,
    parse_common_update,
    reject_span,
    with_truncation,
)
from .outputs import TokenScores

NAME = "ner"
# NerConfig's default map when a model has no classification_labels (the CoNLL-2003 scheme).
DEFAULT_LABELS = ("O", "B_MISC", "I_MISC", "B_PER", "I_PER", "B_ORG", "I_ORG", "B_LOC", "I_LOC")


@dataclasses.dataclass(frozen=True)
class NerConfig(TaskConfig):
    """ner settings: the IOB labels in model output order, parsed once, and the lower-casing flag."""

    labels: tuple[str, ...] = DEFAULT_LABELS
    do_lower_case: bool = False
    # Derived from labels once per config: per label its IOB kind and entity-type id.
    tag_kinds: tuple[int, ...] = ()
    tag_entities: tuple[int, ...] = ()
    entity_names: tuple[str, ...] = ()


def parse_labels(labels: Sequence[str]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]:
    """IobTag.fromTag for every label: kind, entity-type id, and the entity names by id.

    The entity is the upper-cased tag without a leading ``B-``/``I-``/``B_``/``I_``; a tag is a
    beginning when it starts with ``b``/``B`` and outside when it is ``o``/``O``.

    Raises:
        ModelError: labels Elasticsearch's NerConfig would refuse (not IOB, no ``O``, duplicates).
    """
    if len(set(labels)) != len(labels):
        raise ModelError(f"[{NAME}] [classification_labels] must be unique; got {list(labels)}")
    if "O" not in labels:
        raise ModelError(
            f"[{NAME}] [classification_labels] must contain the outside label [O]; got {list(labels)}"
        )
    kinds: list[int] = []
    entities: list[int] = []
    names: list[str] = []
    for label in labels:
        upper = label.upper()
        if not upper.startswith(("I-", "B-", "I_", "B_", "O")):
            raise ModelError(
                f"[{NAME}] [classification_labels] must be IOB tags starting with B-, I-, B_, I_ or O; got [{label}]"
            )
        if upper == "O":
            kinds.append(_kernels.IOB_OUTSIDE)
            entities.append(-1)
            continue
        kinds.append(_kernels.IOB_BEGIN if upper.startswith("B") else _kernels.IOB_INSIDE)
        entity = upper[2:] if upper.startswith(("I-", "B-", "I_", "B_")) else upper
        if entity not in names:
            names.append(entity)
        entities.append(names.index(entity))
    return tuple(kinds), tuple(entities), tuple(names)


class Ner(TaskRunner[NerConfig, Prepared, TokenScores]):
    """The ner task (see the module docstring)."""

    name = NAME

    def parse_config(self, config: Mapping[str, Any] | None) -> NerConfig:
        manifest = self.manifest
        results_field, truncate, span = parse_common_update(NAME, manifest, config)
        reject_span(NAME, span)
        labels = tuple(manifest.labels) if manifest.labels else DEFAULT_LABELS
        kinds, entities, names = parse_labels(labels)
        return NerConfig(
            results_field=results_field,
            truncate=truncate,
            span=span,
            labels=labels,
            do_lower_case=manifest.tokenization.do_lower_case,
            tag_kinds=kinds,
            tag_entities=entities,
            entity_names=names,
        )

    def prepare(self, text: str, cfg: NerConfig) -> Prepared:
        # No windowing for NER: only the first max_sequence_length tokens are analysed.
        return first_window(self.tokenizer, text, cfg)

    def read(self, row: tuple[np.ndarray, ...], window: Window, cfg: NerConfig) -> TokenScores:
        logits = graph_output(NAME, row)
        if logits.shape != (len(window.input_ids), len(cfg.labels)):
            raise ModelError(
                f"[{NAME}] expected token logits of shape [{len(window.input_ids)}, {len(cfg.labels)}] "
                f"(tokens, labels); got {list(logits.shape)}"
            )
        return TokenScores(logits)

    def result(self, prepared: Prepared, outputs: list[TokenScores], cfg: NerConfig) -> dict[str, Any]:
        window = prepared.windows[0]
        groups = _kernels.iob_decode(
            outputs[0].logits,
            np.ascontiguousarray(window.word_ids, dtype=np.int32),
            np.asarray(cfg.tag_kinds, dtype=np.int8),
            np.asarray(cfg.tag_entities, dtype=np.int32),
        )
        text = prepared.text
        # Entity text comes from the lower-cased input when the model lower-cases (ES #87091);
        # the annotated text keeps the original case.
        source = text.lower() if cfg.do_lower_case else text
        entities: list[dict[str, Any]] = []
        for first_token, last_token, entity_id, score in groups:
            start = int(window.offsets[first_token][0])
            end = int(window.offsets[last_token][1])
            entity: dict[str, Any] = {
                "entity": source[start:end],
                "class_name": cfg.entity_names[entity_id],
                "class_probability": float(score),
            }
            if start >= 0:
                entity["start_pos"] = start
            if end >= 0:
                entity["end_pos"] = end
            entities.append(entity)
        result = {cfg.results_field: annotate(text, entities), "entities": entities}
        return with_truncation(result, prepared.is_truncated)


def annotate(text: str, entities: Sequence[Mapping[str, Any]]) -> str:
    """Elasticsearch's annotated text: each entity becomes ``[Text](CLASS&Text+with+plus)``."""
    pieces: list[str] = []
    position = 0
    for entity in entities:
        start, end = entity.get("start_pos", -1), entity.get("end_pos", -1)
        if start < 0 or end < 0:
            continue
        original = text[start:end]
        pieces.append(text[position:start])
        pieces.append(f"[{original}]({entity['class_name']}&{original.replace(' ', '+')})")
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


TASK = Ner
