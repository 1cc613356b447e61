"""bench_sizes' case table, texts and GPT-2 BPE tokenizer: cheap checks, no model is built or exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_sizes, gpt2_bpe
from bench.bench_sizes import CASES, texts_for
from bench.mpnet import ModelMissing


def test_cases_differing_only_in_texts_share_a_package() -> None:
    assert CASES["distilbert-ner-2000"].model_key == CASES["distilbert-ner"].model_key
    assert CASES["bert-cls-512"].model_key == CASES["bert-cls"].model_key
    keys = {case.model_key for case in CASES.values()}
    assert len(keys) == len({(case.architecture, case.task, case.tokenizer) for case in CASES.values()})
    assert CASES["bert-qa-2000"].model_key != CASES["bert-cls"].model_key


def test_task_config_is_json_for_the_pipeline_child() -> None:
    labels = CASES["bart-mnli-zs10"].task_config["labels"]
    assert isinstance(labels, list) and len(labels) == len(set(labels)) == 10
    assert json.loads(json.dumps(CASES["bart-mnli-zs10"].task_config)) == {"labels": labels}
    qa = CASES["bert-qa-2000"].task_config  # windows: the engine refuses a 2,000-token context without a span
    assert qa == {"question": bench_sizes.QUESTION, "tokenization": {"truncate": "none", "span": 128}}
    assert CASES["roberta-embed"].task_config == {}


@pytest.mark.parametrize("name", ["distilbert-ner-2000", "bert-qa-2000"])
def test_long_texts_hold_the_case_s_words(name: str) -> None:
    case = CASES[name]
    texts = texts_for(case, 5)
    assert len(texts) == 5
    assert all(len(text.split()) == case.words for text in texts)
    assert len(set(texts)) == 5


def test_512_token_passages_fill_bert_s_positions_and_no_more() -> None:
    import transformers

    from bench.models import minilm_dir

    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    texts = texts_for(CASES["bert-cls-512"], 12)
    lengths = [len(tokenizer(text).input_ids) for text in texts]
    assert len(texts) == 12 and len(set(texts)) == 12
    assert all(500 <= length <= 512 for length in lengths), lengths


def test_short_texts_are_the_corpus_texts() -> None:
    texts = texts_for(CASES["bart-mnli-zs10"], 7)
    assert len(texts) == 7 and all(texts)


def test_unknown_case_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench_sizes.main(["--cases", "mpnet-embed,no-such-case"])
    assert "no-such-case" in capsys.readouterr().err


def test_roberta_vocab_puts_the_specials_first_and_mask_last() -> None:
    vocab = gpt2_bpe.roberta_vocab({"!": 0, "a": 1, "<|endoftext|>": 2})
    assert vocab == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "!": 4, "a": 5, "<|endoftext|>": 6, "<mask>": 7}


def test_missing_bpe_files_say_how_to_fetch_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpt2_bpe, "BPE_DIR", tmp_path / "gpt2-bpe")
    with pytest.raises(ModelMissing, match="openai-whisper==20230124"):
        gpt2_bpe.gpt2_bpe_dir()


def test_roberta_tokenizer_splits_a_pair_like_roberta(tmp_path: Path) -> None:
    try:
        gpt2_bpe.gpt2_bpe_dir()
    except ModelMissing as missing:
        pytest.skip(str(missing))
    import transformers

    gpt2_bpe.save_roberta_tokenizer("RobertaTokenizerFast", tmp_path, 512)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.model_max_length == 512
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Hello world.", "This example is sports.").input_ids)
    assert tokens == ["<s>", "Hello", "Ġworld", ".", "</s>", "</s>", "This", "Ġexample", "Ġis", "Ġsports", ".",
                      "</s>"]
    assert max(tokenizer.get_vocab().values()) < 50265  # fits RoBERTa's and BART's embedding
