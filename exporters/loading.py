"""Load a Hugging Face model (and its sentence-transformers modules) into the task's graph wrapper.

Weights load from safetensors; pickles only when the user passed ``--allow-pickle``. A checkpoint that
lacks trained weights for the task's head (a masked-LM asked for text_classification, say) is refused:
transformers would quietly initialise the head at random and the package would serve noise.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from engine.errors import ExportError

from .registry import HEADS, ArchitectureSpec
from .sentence_pipeline import read_sentence_pipeline
from .source import ModelSource
from .wrappers import (
    BartSequenceClassification,
    GraphWrapper,
    LastHiddenState,
    LogitsOutput,
    PooledOutput,
    QuestionAnsweringOutput,
    RetriBertTower,
    SentenceEmbedding,
    SparseExpansion,
)


@dataclasses.dataclass
class LoadedModel:
    """The wrapper to trace and what the manifest records about the model behind it."""

    wrapper: GraphWrapper
    id2label: dict[int, str] | None
    normalized: bool
    st_similarity: str | None
    num_heads: int
    hidden_size: int
    task_options: dict[str, Any]
    notices: list[str] = dataclasses.field(default_factory=list)


def _auto_class(head: str) -> Any:
    import transformers

    return {
        "masked_lm": transformers.AutoModelForMaskedLM,
        "token_classification": transformers.AutoModelForTokenClassification,
        "question_answering": transformers.AutoModelForQuestionAnswering,
        "sequence_classification": transformers.AutoModelForSequenceClassification,
        "base": transformers.AutoModel,
    }[head]


# transformers' attention implementation to trace, per model_type: "eager" unless another one traces into a
# graph ONNX Runtime's fuser turns into its Attention op. DistilBERT's eager attention masks with a
# masked_fill (Where) whose fill constant ORT 1.32's fuser looks for on the wrong node, so it never fuses;
# its sdpa attention traces to the additive-mask pattern the fuser knows (Attention + EmbedLayerNormalization
# per package, checked against the unfused graph and PyTorch like every fusion).
ATTENTION_IMPLEMENTATION = {"distilbert": "sdpa"}


def _model_class(spec: ArchitectureSpec, head: str, config: dict[str, Any]) -> Any:
    """The transformers class to load: DPR and RetriBERT have no Auto mapping for their encoders."""
    import transformers

    if spec.model_type == "dpr":
        architectures = config.get("architectures") or []
        for name in ("DPRQuestionEncoder", "DPRContextEncoder"):
            if name in architectures:
                return getattr(transformers, name)
        raise ExportError(
            f"a DPR checkpoint must declare DPRQuestionEncoder or DPRContextEncoder; this one has {architectures}"
        )
    if spec.model_type == "retribert":
        return transformers.RetriBertModel
    return _auto_class(head)


def _load_config(source: ModelSource, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source.model_path), trust_remote_code=trust_remote_code)
    if config.model_type == "retribert" and not hasattr(config, "position_embedding_type"):
        # transformers 4.57's deprecated RetriBERT builds BertModels that read this BERT setting, which
        # RetriBERT checkpoints never saved; RetriBERT only ever used absolute positions.
        config.position_embedding_type = "absolute"
    return config


def _load_pretrained(
    model_class: Any, source: ModelSource, model_type: str, head: str, trust_remote_code: bool
) -> nn.Module:
    has_safetensors = any(source.model_path.glob("*.safetensors"))
    try:
        model, info = model_class.from_pretrained(
            str(source.model_path),
            config=_load_config(source, trust_remote_code),
            use_safetensors=has_safetensors,
            trust_remote_code=trust_remote_code,
            attn_implementation=ATTENTION_IMPLEMENTATION.get(model_type, "eager"),
            output_loading_info=True,
        )
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ExportError(
            f"cannot load the model in [{source.model_path}]: {str(error).splitlines()[0]}"
        ) from error
    missing = list(info.get("missing_keys", []))
    if head == "base":
        # The bare encoder's pooler is unused by every base task but DPR's (whose pooler is the CLS row).
        missing = [key for key in missing if "pooler" not in key.split(".")]
    if missing:
        shown = ", ".join(sorted(missing)[:4])
        raise ExportError(
            f"[{source.id}] has no trained weights for the [{head}] head this task needs (missing {shown}"
            f"{', ...' if len(missing) > 4 else ''}); export a checkpoint fine-tuned for the task"
        )
    model.eval()
    return model


def _dimensions(config: Any) -> tuple[int, int]:
    """Attention heads and hidden size, for ORT's fuser (DistilBERT names them differently)."""
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or 0
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or 0
    if getattr(config, "model_type", "") == "mobilebert":
        hidden = getattr(config, "true_hidden_size", hidden)
    return int(heads), int(hidden)


def load_model(
    source: ModelSource,
    spec: ArchitectureSpec,
    task: str,
    input_names: tuple[str, ...],
    retribert_tower: str,
    trust_remote_code: bool,
    allow_pickle: bool,
) -> LoadedModel:
    """Load the model for ``task`` and wrap it in the graph contract of that task."""
    head = HEADS[task]
    model = _load_pretrained(
        _model_class(spec, head, source.config), source, spec.model_type, head, trust_remote_code
    )
    normalized, similarity, task_options, notices = False, None, {}, []
    wrapper: GraphWrapper
    if spec.model_type == "dpr":
        wrapper = PooledOutput(model, input_names)
    elif spec.model_type == "retribert":
        wrapper = RetriBertTower(model, input_names, retribert_tower)
        task_options["tower"] = retribert_tower
    elif task == "text_embedding":
        pipeline = read_sentence_pipeline(source, allow_pickle)
        wrapper = SentenceEmbedding(model, input_names, pipeline.pooling, pipeline.dense, pipeline.normalize)
        normalized, similarity = pipeline.normalize, pipeline.similarity
        task_options.update(pipeline.task_options())
        notices = pipeline.notices()
    elif task == "pass_through":
        wrapper = LastHiddenState(model, input_names)
    elif task == "question_answering":
        wrapper = QuestionAnsweringOutput(model, input_names)
    elif task == "text_expansion":
        wrapper = SparseExpansion(model, input_names)
    elif head == "sequence_classification" and spec.model_type == "bart":
        wrapper = BartSequenceClassification(model, input_names)
    else:
        wrapper = LogitsOutput(model, input_names)
    wrapper.eval()
    heads, hidden = _dimensions(model.config)
    id2label = getattr(model.config, "id2label", None)
    return LoadedModel(
        wrapper=wrapper,
        id2label={int(key): str(value) for key, value in id2label.items()} if id2label else None,
        normalized=normalized,
        st_similarity=similarity,
        num_heads=heads,
        hidden_size=hidden,
        task_options=task_options,
        notices=notices,
    )
