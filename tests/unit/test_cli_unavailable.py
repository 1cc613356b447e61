"""A verb whose optional part cannot be imported still parses its options and says what to install,
instead of argparse's "unrecognized arguments" (which sent users looking for a typo)."""

from __future__ import annotations

import importlib

import pytest

from engine import cli


def test_a_verb_that_cannot_import_names_its_extra(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    real_import = importlib.import_module

    def failing_import(name: str, *args: object) -> object:
        if name == "engine.batch_job":
            raise ImportError("No module named 'tqdm'")
        return real_import(name, *args)

    monkeypatch.setattr(cli.importlib, "import_module", failing_import)
    code = cli.main(["batch", "--task", "text_embedding", "--input", "in.jsonl", "--output", "out.jsonl"])
    err = capsys.readouterr().err
    assert code == 1
    assert "engine batch: needs engine[batch]" in err and "tqdm" in err
    assert "unrecognized arguments" not in err


def test_unknown_options_of_an_available_verb_are_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["models", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
