"""JSON-lines files: a torn last line is a crash artifact and skipped, a torn earlier line is an
error; truncation keeps the rounds before a resume point."""

import json

import pytest

from fedrec.common.jsonl import read_jsonl, truncate_jsonl


def test_a_missing_file_has_no_records(tmp_path):
    assert read_jsonl(tmp_path / "absent.jsonl") == []


def test_a_torn_last_line_is_skipped_and_blank_lines_ignored(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text('{"round": 1}\n\n{"round": 2}\n{"round": 3, "lo')
    assert read_jsonl(path) == [{"round": 1}, {"round": 2}]


def test_a_torn_line_before_the_last_is_an_error(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text('{"round": 1}\n{"rou\n{"round": 3}\n')
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(path)


def test_truncate_keeps_the_rounds_before_the_resume_point(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"round": r, "loss": r / 10}) + "\n" for r in range(5))
                    + '{"round": 5, "lo')
    truncate_jsonl(path, 3)
    assert read_jsonl(path) == [{"round": r, "loss": r / 10} for r in range(3)]
    assert path.read_text().endswith("\n")


def test_records_are_strict_json_with_null_for_non_finite_numbers():
    import json
    import math

    from fedrec.common.jsonl import dumps, number

    line = dumps({"loss": float("nan"), "x": [1.5, float("inf")], "n": {"y": -math.inf}, "k": 2})
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line, parse_constant=lambda c: pytest.fail(c)) == {
        "loss": None, "x": [1.5, None], "n": {"y": None}, "k": 2}
    assert math.isnan(number(None)) and number(0.25) == 0.25
