"""Reading a run's records strictly (`fedrec.audit.records`): a key given twice in one JSON
object is a failure wherever it is, a torn last line is a killed run's (a note) until the run
has finished."""

import json
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrec.audit import records
from fedrec.audit.run import audit

sys.path.insert(0, str(Path(__file__).parent))
from handmade import failures, ledger, make_run, make_user_run  # noqa: E402

KEYS = st.text(st.characters(codec="utf-8", exclude_characters='"\\'), min_size=1, max_size=8)
VALUES = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.none())


@given(st.dictionaries(KEYS, VALUES, min_size=1, max_size=6), st.data())
def test_a_repeated_key_is_found_and_a_plain_object_read_as_json_reads_it(obj, data):
    text = json.dumps(obj)
    findings = []
    assert records.loads(text, findings, "x") == json.loads(text) and findings == []
    key = data.draw(st.sampled_from(sorted(obj)))
    repeated = "{" + json.dumps(key) + ": 0, " + text[1:]
    assert records.loads(repeated, findings, "x") == json.loads(repeated)
    assert [f["severity"] for f in findings] == ["failure"]
    assert f"key {key!r} appears twice" in findings[0]["what"]


def test_a_repeated_key_in_any_record_of_a_run_fails_it(tmp_path):
    run = make_run(tmp_path)
    lines = ledger(run)
    text = json.dumps(lines[0])
    (run / "privacy" / "ledger.jsonl").write_text(
        '{"epsilon": 0.01, ' + text[1:] + "\n" + "".join(json.dumps(x) + "\n" for x in lines[1:]))
    found = failures(audit(run))
    assert any(f.startswith("ledger line: key 'epsilon' appears twice") for f in found)
    rounds = (run / "rounds.jsonl").read_text()
    (run / "rounds.jsonl").write_text(rounds.replace('"aggregated": true',
                                                     '"aggregated": false, "aggregated": true', 1))
    metrics = (run / "metrics.json").read_text()
    (run / "metrics.json").write_text(metrics.replace('"releases": 6',
                                                      '"releases": 1, "releases": 6'))
    found = failures(audit(run))
    assert any(f.startswith("rounds.jsonl line 1: key 'aggregated' appears twice")
               for f in found)
    assert any(f.startswith("metrics.json: key 'releases' appears twice") for f in found)


def test_a_torn_last_line_is_a_killed_runs_until_the_run_finished(tmp_path):
    run = make_run(tmp_path)
    with open(run / "rounds.jsonl", "a") as fh:
        fh.write('{"round": 3, "aggreg')
    assert "rounds.jsonl line 3 is not JSON" in failures(audit(run))
    (run / "metrics.json").unlink()
    report = audit(run)
    assert "rounds.jsonl line 3 is not JSON (torn: the run was killed while writing it)" in [
        f["what"] for f in report["findings"] if f["severity"] == "note"]


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4),
                                     st.floats(allow_nan=False, allow_infinity=False)),
                           lambda inner: st.lists(inner, max_size=2)
                           | st.dictionaries(st.text(max_size=3), inner, max_size=2),
                           max_leaves=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["unit", "client", "round", "noise_multiplier", "sample_rate", "steps",
                            "max_grad_norm", "delta", "accountant", "epsilon"]),
       value=JSON_VALUES, mode=st.sampled_from(["record", "user"]))
def test_any_value_in_any_ledger_field_is_a_finding_never_a_crash(tmp_path_factory, key, value,
                                                                  mode):
    run = make_run(tmp_path_factory.mktemp("run"), mode=mode, devices=mode == "record")
    lines = ledger(run)
    if lines[-1][key] == value:
        return
    lines[-1][key] = value
    (run / "privacy" / "ledger.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert audit(run)["verdict"] == "fail"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["rounds.jsonl", "metrics.json", "plan.json"]), data=st.data(),
       value=JSON_VALUES, mode=st.sampled_from(["record", "user"]))
def test_any_value_in_rounds_metrics_or_plan_is_never_a_crash(tmp_path_factory, where, data,
                                                             value, mode):
    run = make_user_run(tmp_path_factory.mktemp("run"), [10, 8, 10], epsilon=8.0) \
        if mode == "user" else make_run(tmp_path_factory.mktemp("run"), devices=True)
    path = run / where
    if where == "rounds.jsonl":
        records_ = [json.loads(t) for t in path.read_text().splitlines()]
        target = records_[data.draw(st.integers(0, len(records_) - 1))]
    else:
        records_ = [json.loads(path.read_text())]
        target = records_[0]
        target = data.draw(st.sampled_from([target, target.get("privacy") or target]))
    target[data.draw(st.sampled_from(sorted(target)))] = value
    path.write_text("".join(json.dumps(x) + "\n" for x in records_))
    assert audit(run)["verdict"] in ("pass", "fail")
