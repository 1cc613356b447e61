"""Torch modules that give each task's graph the contract DESIGN.md fixes (outputs, in order).

Each wrapper takes the graph inputs positionally (``input_ids, attention_mask[, token_type_ids]``) and
calls the Hugging Face model with keyword arguments: the legacy ONNX exporter traces positional
arguments, and transformers' signatures put other parameters between those three (``use_cache``,
``position_ids``, ...), so passing them by position would feed the wrong parameter.

Everything a task computes from the model's raw output that Elasticsearch expects *inside* the graph
lives here: sentence-transformers pooling/Dense/Normalize, SPLADE max pooling, the DPR pooler,
RetriBERT's projection, and question answering's start/end split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len")


class GraphWrapper(nn.Module):
    """Base class: maps positional graph inputs to the model's keyword arguments, runs the model once and
    hands its output to :meth:`read`, which subclasses define to pick (and post-process) the graph output.
    Wrappers that do not run the whole model with these inputs (BART classification, RetriBERT towers)
    override ``forward`` instead."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def model_inputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return inputs

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.read(
            self.model(**self.model_inputs(input_ids, attention_mask, token_type_ids)), attention_mask
        )

    def read(self, output: Any, attention_mask: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        raise NotImplementedError(f"{type(self).__name__} must define read() or override forward()")


class LogitsOutput(GraphWrapper):
    """``logits`` of a masked-LM, token- or sequence-classification head."""

    def read(self, output: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        return output.logits


class BartSequenceClassification(GraphWrapper):
    """BART's classification head on the hidden state of each row's last ``</s>``.

    ``BartForSequenceClassification`` gathers every ``</s>`` with a boolean mask and reshapes by their
    count, which fails (or raises) when rows hold different numbers of ``</s>``. Picking the last one
    by index gives the same vector for well-formed rows and still runs on any input: a row without
    ``</s>`` uses its last real token.
    """

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        is_eos = input_ids == self.model.config.eos_token_id
        last_eos = torch.where(is_eos, positions, torch.full_like(positions, -1)).max(dim=1).values
        last_real = attention_mask.sum(dim=1) - 1
        index = torch.where(last_eos >= 0, last_eos, last_real)
        rows = hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
        return self.model.classification_head(rows)


class QuestionAnsweringOutput(GraphWrapper):
    """Start and end logits ``[batch, seq]`` each (eland stacks them; two named outputs say more)."""

    def read(self, output: Any, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return output.start_logits, output.end_logits


class SparseExpansion(GraphWrapper):
    """SPLADE weights ``[batch, vocab]``: max over unmasked tokens of ``log(1 + relu(MLM logits))``.

    Padding is excluded by multiplying with the mask before the max: every weight is ≥ 0, so a zeroed
    padded row can never win over a real token (and an all-zero column stays 0, as SPLADE defines it).
    """

    def read(self, output: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = output.logits
        weights = torch.log1p(torch.relu(logits)) * attention_mask.unsqueeze(-1).to(logits.dtype)
        return torch.max(weights, dim=1).values


class LastHiddenState(GraphWrapper):
    """The encoder's last hidden state ``[batch, seq, hidden]`` (pass_through)."""

    def read(self, output: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        return output.last_hidden_state


class PooledOutput(GraphWrapper):
    """A DPR encoder's ``pooler_output`` (the CLS vector, projected when the checkpoint has a projection)."""

    def read(self, output: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        return output.pooler_output


class RetriBertTower(GraphWrapper):
    """One RetriBERT tower: its BERT encoder's pooled output through the tower's projection.

    This is ``RetriBertModel.embed_questions`` / ``embed_answers`` without gradient checkpointing; the
    towers never see token types, so the graph has no ``token_type_ids`` input.
    """

    def __init__(self, model: nn.Module, input_names: Sequence[str], tower: str) -> None:
        super().__init__(model, input_names)
        if tower == "query":
            self.encoder, self.projection = model.bert_query, model.project_query
        else:
            self.encoder = model.bert_query if model.bert_doc is None else model.bert_doc
            self.projection = model.project_doc

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.encoder(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.projection(pooled)


class SentenceEmbedding(GraphWrapper):
    """A sentence-transformers bi-encoder as one graph: encoder, Pooling, Dense layers, Normalize.

    Pooling follows sentence-transformers' ``Pooling``: several modes concatenate in the order given
    (the reader of ``modules.json`` puts the pre-5 layout's modes in that layout's fixed order); max
    pooling sets padded positions to -1e9 first, mean divides by the clamped token count. Rows are
    right-padded, so the CLS vector is the first position.
    """

    def __init__(
        self,
        model: nn.Module,
        input_names: Sequence[str],
        pooling: Sequence[str],
        dense: Sequence[nn.Module],
        normalize: bool,
    ) -> None:
        super().__init__(model, input_names)
        unknown = set(pooling) - set(POOLING_MODES)
        if unknown or not pooling:
            raise ValueError(f"pooling modes must be a non-empty sequence of {POOLING_MODES}; got {pooling}")
        self.pooling = tuple(pooling)
        self.dense = nn.Sequential(*dense)
        self.normalize = normalize

    def read(self, output: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = output.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = []
        for mode in self.pooling:
            if mode == "cls":
                pooled.append(hidden[:, 0])
            elif mode == "max":
                pooled.append(torch.max(hidden.masked_fill(mask == 0, -1e9), dim=1).values)
            else:
                summed = (hidden * mask).sum(dim=1)
                counts = torch.clamp(mask.sum(dim=1), min=1e-9)
                pooled.append(summed / (counts if mode == "mean" else torch.sqrt(counts)))
        embedding = self.dense(torch.cat(pooled, dim=1))
        if self.normalize:
            embedding = nn.functional.normalize(embedding, p=2.0, dim=1)
        return embedding


class DenseLayer(nn.Module):
    """sentence-transformers' ``Dense`` module: a linear layer followed by its activation."""

    def __init__(self, linear: nn.Linear, activation: nn.Module) -> None:
        super().__init__()
        self.linear = linear
        self.activation = activation

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(features))
