"""``engine batch`` on this machine (no Ray): every row once, in order, bad rows as error records,
results equal to ``engine.run`` (up to the float rounding of a different batch padding)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import engine
from engine.cli import main
from engine.errors import InferenceTimeout, InvalidInput
from engine.rows import run_rows
from tests.ray.conftest import assert_same_results, corpus


def test_a_batch_job_records_errors_that_are_not_about_one_row() -> None:
    """``engine run`` fails on a timeout (tests/unit/test_rows.py); a batch job records it in the rows
    of the failed call and goes on: a bad row is an error record, never a dead job."""

    def infer(texts: list[str], **config: object) -> list[dict]:
        if any(not text for text in texts):
            raise InvalidInput("input text must not be empty")
        if "slow" in texts:
            raise InferenceTimeout("timeout [1s] waiting for inference result")
        return [{"echo": text} for text in texts]

    with pytest.raises(InferenceTimeout):
        run_rows(infer, ["a", "slow"])
    rows = run_rows(infer, ["a", "b", "", "slow"], record_call_errors=True)
    assert [result for result, _ in rows] == [{"echo": "a"}, {"echo": "b"}, None, None]
    assert rows[2][1]["status"] == 400 and rows[3][1]["status"] == 408
    assert rows[3][1]["type"] == InferenceTimeout.error_type


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_jsonl_job_keeps_order_and_every_row(minilm_package: Path, tmp_path: Path) -> None:
    texts = corpus(300)
    records: list[dict] = [{"id": i, "text": text} for i, text in enumerate(texts)]
    records[17]["text"] = ""
    records[200]["text"] = 42
    source = _write_jsonl(tmp_path / "in.jsonl", records)
    lines = source.read_text().splitlines(keepends=True)
    # a blank line is a row too, and so is a line that is not JSON or not a JSON object
    source.write_text("".join(lines[:100] + ["\n"] + lines[100:250] + ['{"id": 1, "text": \n', "[1, 2]\n"]
                              + lines[250:]))
    out = tmp_path / "out.jsonl"
    code = main(["batch", "--task", "text_embedding", "--model", str(minilm_package), "--input", str(source),
                 "--output", str(out), "--batch-size", "32", "--number-of-allocations", "2", "--no-progress"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 303
    not_json, not_object = rows.pop(251), rows.pop(251)
    assert not_json["line"] == 252 and not_json["error"]["status"] == 400 and "is not JSON" in not_json["error"]["reason"]
    assert not_object == {"line": 253, "error": {"type": "illegal_argument_exception", "status": 400,
                                                 "reason": f"--input [{source}] line 253 is not a JSON object"}}
    blank = rows.pop(100)
    assert blank["error"]["status"] == 400 and "result" not in blank
    assert [row["id"] for row in rows] == list(range(300))
    assert rows[17]["error"]["status"] == 400 and "result" not in rows[17]
    assert rows[200]["error"]["type"] == "illegal_argument_exception"
    good = [i for i in range(300) if i not in (17, 200)]
    expected = engine.run("text_embedding", [texts[i] for i in good], model=str(minilm_package))
    assert_same_results([rows[i]["result"] for i in good], expected)
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_txt_input_to_parquet(minilm_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pyarrow_parquet = pytest.importorskip("pyarrow.parquet", reason="parquet needs pyarrow (pip install pyarrow)")
    texts = corpus(20)
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts[:5] + [""] + texts[5:]) + "\n")
    out = tmp_path / "out.parquet"
    assert main(["batch", "--task", "text_embedding", "--model", str(minilm_package), "--input", str(source),
                 "--output", str(out)]) == 0
    progress = capsys.readouterr().err  # stderr is no terminal here: stage lines, no bar
    assert "engine batch: 21 rows, running locally" in progress and "\r" not in progress and "row/s" not in progress
    table = pyarrow_parquet.read_table(out).to_pylist()
    assert [row["text"] for row in table] == texts[:5] + [""] + texts[5:]
    assert table[5]["result"] is None and json.loads(table[5]["error"])["status"] == 400
    expected = engine.run("text_embedding", texts, model=str(minilm_package))
    assert_same_results([json.loads(row["result"]) for i, row in enumerate(table) if i != 5], expected)


def test_bad_arguments_exit_with_the_error_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    assert main(["batch", "--task", "text_embedding", "--input", str(source), "--output",
                 str(tmp_path / "out.csv"), "--no-progress"]) == InvalidInput.exit_code
    assert "--output" in capsys.readouterr().err
