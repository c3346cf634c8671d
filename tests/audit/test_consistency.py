"""A run's records against each other (`fedrec.audit.consistency`): each contradiction between
config.toml, plan.json, the ledger, rounds.jsonl and metrics.json is a failure; an honest run
has none."""

import json
import re
import sys
from pathlib import Path

import pytest

from fedrec.audit.run import audit
from fedrec.common import privacy

sys.path.insert(0, str(Path(__file__).parent))
from handmade import failures, finish, ledger, make_run, make_user_run, write  # noqa: E402


def set_toml(run, key: str, value: str) -> None:
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(re.sub(rf"^{key} = .*$", f"{key} = {value}", text,
                                            count=1, flags=re.M))


def rounds_of(run) -> list[dict]:
    return [json.loads(t) for t in (run / "rounds.jsonl").read_text().splitlines()]


def write_rounds(run, rounds) -> None:
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))


@pytest.mark.parametrize("mode", ["record", "user"])
def test_an_honest_run_has_no_contradiction(tmp_path, mode):
    report = audit(make_run(tmp_path, mode=mode))
    assert report["verdict"] == "pass", failures(report)


def test_a_release_in_a_round_the_run_never_had(tmp_path):
    run = make_run(tmp_path)
    lines = ledger(run)
    lines[0]["round"] = 7
    write(run, lines)
    assert "a release in round 7, a round the run never had (rounds.jsonl records rounds 1–2)" \
        in failures(audit(run))
    # a run that has not finished may have charged the round in flight when it stopped
    (run / "metrics.json").unlink()
    lines[0]["round"] = 3
    write(run, lines)
    report = audit(run)
    assert "a release in round 3, the round in flight when the run stopped" in [
        f["what"] for f in report["findings"] if f["severity"] == "warning"]


def test_a_release_count_other_than_the_metrics(tmp_path):
    run = make_run(tmp_path)
    write(run, ledger(run)[:-1])
    assert any("metrics.json's privacy.releases = 6; the run's records give 5" in f
               for f in failures(audit(run)))


@pytest.mark.parametrize("how", ["emptied", "removed"])
def test_a_ledger_emptied_or_removed_while_the_records_say_releases_happened(tmp_path, how):
    run = make_run(tmp_path)
    path = run / "privacy" / "ledger.jsonl"
    path.write_text("") if how == "emptied" else path.unlink()
    found = failures(audit(run))
    assert "a DP run with aggregated rounds has no valid ledger line" in found
    missing = "empty" if how == "emptied" else "missing"
    assert f"the ledger is {missing}, but metrics.json counts 6 releases" in found


@pytest.mark.parametrize("mode", ["record", "user"])
def test_mode_off_in_a_run_that_released_under_dp(tmp_path, mode):
    run = make_run(tmp_path, mode=mode)
    (run / "plan.json").unlink()  # config.toml alone says "off": the other records deny it
    set_toml(run, "mode", '"off"')
    found = failures(audit(run))
    assert any(f.startswith("config.toml says privacy mode = 'off', but the run released "
                            "under DP: the ledger holds") for f in found)


def test_a_clip_norm_other_than_the_configured_one(tmp_path):
    run = make_run(tmp_path)
    lines = ledger(run)
    lines[2]["max_grad_norm"] = 4.0
    write(run, lines)
    assert any("clip norm 4.0, but the run clips at max_grad_norm = 1" in f
               for f in failures(audit(run)))


@pytest.mark.parametrize("mode", ["record", "user"])
def test_two_releases_for_one_round_are_a_double_spend_or_a_charged_redo(tmp_path, mode):
    run = make_run(tmp_path, mode=mode, releases=2, budget=4.0)
    lines = ledger(run)
    again = dict(lines[1])  # a second release for round 2, with the ε it would give
    again["epsilon"] = privacy.epsilon([tuple(lines[0][k] for k in (
        "noise_multiplier", "sample_rate", "steps"))] * 3, 1e-5)
    write(run, [*lines[:2], again, *lines[2:]])
    finish(run)
    report = audit(run)
    if mode == "record":
        assert any("released twice for round 2 (ledger lines 2 and 3): its budget spent twice"
                   in f for f in failures(report))
    else:  # the server's redone round (a crash between its charge and its checkpoint): two
        # real releases, both charged — a note, and the spend the audit reports counts both
        assert any("round 2 released twice" in f["what"] and f["severity"] == "note"
                   for f in report["findings"])
        assert report["spent"]["epsilon"] == pytest.approx(again["epsilon"], rel=1e-6)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("epsilon", "5.0", "config.toml's privacy.epsilon = 5.0, but the run's plan"),
    ("delta", "1e-06", "config.toml's privacy.delta = 1e-06, but the run's plan"),
    ("max_grad_norm", "2.0", "config.toml's privacy.max_grad_norm = 2.0, but the run's plan"),
    ("rounds", "5", "config.toml's federation.rounds = 5, but the run's plan"),
])
def test_config_against_the_plan_it_made(tmp_path, key, value, message):
    run = make_run(tmp_path)
    set_toml(run, key, value)
    assert any(message in f for f in failures(audit(run)))


def test_the_plans_resolved_privacy_is_what_its_config_gives(tmp_path):
    run = make_run(tmp_path)
    plan = json.loads((run / "plan.json").read_text())
    plan["privacy"]["planned_rounds"] += 2
    plan["cohort"] = 7
    (run / "plan.json").write_text(json.dumps(plan))
    found = failures(audit(run))
    assert any(f.startswith("plan.json plans") and "participations per client" in f
               for f in found)
    assert any(f.startswith("plan.json's cohort = 7") for f in found)


def test_rounds_jsonl_is_one_line_per_round_and_agrees_with_the_metrics(tmp_path):
    run = make_run(tmp_path, releases=2)
    rounds = rounds_of(run)
    rounds[0].update(sampled=5, completed=3, failed=1)
    write_rounds(run, [rounds[0], rounds[0], rounds[1]])
    found = failures(audit(run))
    assert "rounds.jsonl records round 1 twice (lines 1 and 2)" in found
    assert "rounds.jsonl round 1: 1 failed, but 5 sampled and 3 completed" in found
    write_rounds(run, [rounds[1]])
    found = failures(audit(run))
    assert "rounds.jsonl has no line for round 1 (it records rounds up to 2)" in found
    write_rounds(run, [{**rounds[0], "failed": 2}])
    found = failures(audit(run))
    assert ("the run finished (metrics.json) after round 1 of rounds.jsonl; config.toml plans 2 "
            "rounds") in found
    assert "metrics.json's rounds = 2; rounds.jsonl gives 1" in found


def test_user_level_releases_against_the_rounds(tmp_path):
    run = make_user_run(tmp_path, reported=[10, 10, 10], epsilon=8.0)
    rounds = rounds_of(run)
    rounds[0]["epsilon"] /= 2
    rounds[1]["aggregated"] = False
    write_rounds(run, rounds)
    found = failures(audit(run))
    assert any(f.startswith("rounds.jsonl gives ε") and "after round 1; the ledger" in f
               for f in found)
    assert "round 2 was not aggregated (rounds.jsonl), yet the ledger has its release" in found


def test_the_metrics_summary_against_the_ledger(tmp_path):
    run = make_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["privacy"].update(epsilon_max=1.0, clients_released=9, epsilon_budget=30.0)
    (run / "metrics.json").write_text(json.dumps(metrics))
    found = failures(audit(run))
    for key in ("epsilon_max", "clients_released", "epsilon_budget"):
        assert any(f.startswith(f"metrics.json's privacy.{key} = ") for f in found), key
    del metrics["privacy"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert "metrics.json has no privacy summary, but the run is a DP run" in failures(audit(run))
