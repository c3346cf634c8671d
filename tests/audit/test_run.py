"""`fedrec audit` on hand-made run directories: the cross-check against published values and
dp-accounting, tampered ledgers caught, reports that render."""

import json
import sqlite3
import sys
from pathlib import Path

import pytest

from fedrec.audit.report import render
from fedrec.audit.run import audit, audit_sweep, is_sweep
from fedrec.client.store import DeviceStore
from fedrec.common import crosscheck, privacy

sys.path.insert(0, str(Path(__file__).parent))
from handmade import (  # noqa: E402
    BUDGET,
    RELEASE,
    USER_RELEASE,
    failures,
    finish,
    ledger,
    make_run,
    make_user_run,
    notes,
    write,
)


def test_independent_accountant_reproduces_published_values():
    # Opacus' accountant test: σ=1.5, q=0.04, 2250 steps, δ=1e-5 -> ε = 7.3291
    assert crosscheck.rdp_epsilon([(1.5, 0.04, 2250)], 1e-5) == pytest.approx(7.3291, rel=1e-3)
    # consecutive identical releases compose as one long mechanism
    assert crosscheck.rdp_epsilon([(1.5, 0.04, 1000), (1.5, 0.04, 1250)], 1e-5) == \
        pytest.approx(7.3291, rel=1e-3)
    # PLD is the tighter accountant: below RDP, within a few percent here
    pld = crosscheck.pld_epsilon([(1.5, 0.04, 2250)], 1e-5)
    assert 0.8 * 7.3291 < pld < 7.3291
    assert crosscheck.rdp_epsilon([], 1e-5) == crosscheck.pld_epsilon([], 1e-5) == 0.0
    # the public-API path (for dp-accounting versions without the per-step helper) agrees
    assert crosscheck._rdp_epsilon_public(((1.0, 0.25, 30),), 1e-5) == pytest.approx(
        crosscheck.rdp_epsilon([(1.0, 0.25, 30)], 1e-5), rel=1e-9)


@pytest.mark.parametrize("history", [[(1.0, 0.25, 10)] * 3, [(0.9, 1.0, 2), (0.9, 0.5, 4)],
                                     [(2.7, 1.0, 18)], [(5.0, 0.01, 10000)]])
def test_independent_rdp_agrees_with_the_runs_accountant(history):
    assert crosscheck.rdp_epsilon(history, 1e-5) == pytest.approx(
        privacy.epsilon(history, 1e-5, "rdp"), rel=0.01)
    assert crosscheck.pld_epsilon(history, 1e-5) == pytest.approx(
        privacy.epsilon(history, 1e-5, "prv"), rel=0.05)


def test_an_honest_record_level_run_passes_and_reports_the_spend(tmp_path):
    report = audit(make_run(tmp_path))
    assert report["verdict"] == "pass" and failures(report) == []
    spent = report["spent"]
    per_release = privacy.epsilon([RELEASE] * 2, 1e-5, "rdp")
    assert spent["clients_released"] == 3 and spent["never_took_part"] == 7
    assert spent["epsilon_max"] == pytest.approx(per_release)
    # one more release would exceed ε = 3: every client is at its cap
    assert privacy.epsilon([RELEASE] * 3, 1e-5, "rdp") > BUDGET
    assert spent["clients_at_cap"] == 3
    assert report["crosscheck"]["lines"] == 6 and report["crosscheck"]["max_difference_rdp"] < 0.01


def test_an_edited_epsilon_is_caught(tmp_path):
    run = make_run(tmp_path)
    lines = ledger(run)
    lines[1]["epsilon"] *= 0.9  # a device reporting less than it spent
    write(run, lines)
    assert any("not reproducible" in f for f in failures(audit(run)))


def test_a_missing_line_is_caught(tmp_path):
    run = make_run(tmp_path, releases=3)
    write(run, [x for i, x in enumerate(ledger(run)) if i != 0])  # first release of client 0
    report = audit(run)
    assert report["verdict"] == "fail"
    assert any("not reproducible" in f for f in failures(report))


def test_a_release_after_the_budget_is_spent_is_caught(tmp_path):
    run = make_run(tmp_path, clients=1, releases=2)
    lines = ledger(run)
    eps = privacy.epsilon([RELEASE] * 3, 1e-5, "rdp")
    lines.append({**lines[-1], "round": 3, "epsilon": eps})  # honest ε, but over the budget
    write(run, lines)
    assert any("over its budget" in f for f in failures(audit(run)))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("noise_multiplier", 0.0, "σ must be in [0.05, 10000]"),
    # σ² underflows / overflows in any accountant: a finding, not a crash
    ("noise_multiplier", 4e-192, "σ must be in"), ("noise_multiplier", 1.7976931348623157e308,
                                                   "σ must be in"),
    ("sample_rate", 1.5, "q must be in (0, 1]"),
    ("steps", 0, "steps must be an integer"), ("delta", 1e-3, "delta 0.001 differs"),
])
def test_impossible_parameters_are_caught(tmp_path, field, value, message):
    run = make_run(tmp_path, clients=1)
    lines = ledger(run)
    lines[0][field] = value
    write(run, lines)
    assert any(message in f for f in failures(audit(run)))


def test_a_decreasing_epsilon_and_a_duplicate_line(tmp_path):
    run = make_run(tmp_path, clients=1)
    lines = ledger(run)
    write(run, [lines[0], lines[0], lines[1]])  # a crash artifact: one release, noted
    report = audit(run)
    assert report["verdict"] == "pass"
    assert [f["severity"] for f in report["findings"]] == ["note"]
    lines[1]["epsilon"] = lines[0]["epsilon"] / 2
    write(run, lines)
    assert any("decreases" in f for f in failures(audit(run)))


def test_user_level_round_without_a_ledger_line_is_caught(tmp_path):
    run = make_run(tmp_path, mode="user", releases=2)
    assert audit(run)["verdict"] == "pass"
    assert audit(run)["spent"]["epsilon"] == pytest.approx(
        privacy.epsilon([USER_RELEASE] * 2, 1e-5, "rdp"))
    write(run, ledger(run)[:1])
    assert any("round 2 was aggregated but has no ledger line" in f
               for f in failures(audit(run)))


def test_an_egress_log_outside_the_schema_fails_the_audit(tmp_path):
    from fedrec.common.wire import WireSchema

    run = make_run(tmp_path)
    (run / "wire-schema.json").write_text(WireSchema(((2,),)).to_json())
    entry = {"message_type": "evaluate", "error": None, "records": {
        "evaluateres.loss": {"kind": "MetricRecord", "entries": {"loss": 0.5}},
        "evaluateres.num_examples": {"kind": "MetricRecord", "entries": {"num_examples": 1}},
        "evaluateres.metrics": {"kind": "ConfigRecord", "entries": {"hr@10": 1.0}},
        "evaluateres.status": {"kind": "ConfigRecord",
                               "entries": {"code": 0, "message": "Success"}}}}
    (run / "egress.jsonl").write_text(json.dumps(entry) + "\n")
    report = audit(run)
    assert report["egress"]["messages"] == 1 and report["verdict"] == "pass"
    entry["records"]["evaluateres.metrics"]["entries"]["email"] = "ada@example.com"
    (run / "egress.jsonl").write_text(json.dumps(entry) + "\n")
    assert any("egress log line 1: unexpected-key" in f for f in failures(audit(run)))


def test_reports_render_as_markdown_html_and_json_with_plots(tmp_path, html_outline):
    run = make_run(tmp_path, clients=5)
    report = audit(run)
    md, *pngs = render(report, "md", run / "report.md")
    text = md.read_text()
    assert "**Verdict: PASS**" in text and "What ε means" in text and "record" in text
    assert {p.name for p in pngs} == {"report-epsilon-by-round.png",
                                      "report-epsilon-by-client.png"}
    assert all(p.stat().st_size > 5000 for p in pngs)
    page = render(report, "html", run / "report.html")[0].read_text()
    tags, images = html_outline(page)
    assert {"html", "h1", "table", "img"} <= set(tags)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    data = json.loads(render(report, "json", run / "report.json")[0].read_text())
    assert data["verdict"] == "pass" and data["spent"]["clients_released"] == 5


def test_a_sweep_is_audited_run_by_run_with_utility_against_epsilon(tmp_path):
    for name in ("a", "b"):
        make_run(tmp_path / name)
    assert is_sweep(tmp_path / "a") and not is_sweep(tmp_path / "a" / "run")
    report = audit_sweep(tmp_path / "a")  # one run inside
    assert len(report["runs"]) == 1 and report["utility_vs_epsilon"][0]["ndcg@10"] == 0.05
    files = render(report, "md", tmp_path / "sweep.md")
    assert any(p.name == "sweep-utility-vs-epsilon.png" for p in files)


def test_the_command_exits_1_on_a_failed_audit_and_names_the_failure(tmp_path, capsys):
    from fedrec.cli.main import main

    run = make_run(tmp_path)
    main(["audit", str(run), "--format", "html"])
    out = capsys.readouterr().out
    assert "verdict: PASS" in out and (run / "report.html").exists()
    lines = ledger(run)
    lines[0]["epsilon"] = 0.1
    write(run, lines)
    with pytest.raises(SystemExit) as exited:
        main(["audit", str(run)])
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert "verdict: FAIL" in out and "not reproducible" in out


def test_a_deleted_last_line_is_caught_against_the_devices_accounts(tmp_path):
    run = make_run(tmp_path, devices=True)
    assert audit(run)["verdict"] == "pass"
    write(run, ledger(run)[:-1])  # client 2's last release: nothing after it to disagree
    found = failures(audit(run))
    assert "device 000002 row 2 (round 2) is missing from the run's ledger" in found
    assert any("metrics.json's privacy.releases = 6; the run's records give 5" in f
               for f in found)
    finish(run)  # metrics.json rewritten to match: the device's own ledger still disagrees
    assert "device 000002 row 2 (round 2) is missing from the run's ledger" in failures(
        audit(run))
    write(run, [])
    found = failures(audit(run))
    assert "has no valid ledger line" in " ".join(found)
    assert sum("is missing from the run's ledger" in f for f in found) == 6


def test_device_stores_are_read_read_only_and_odd_ones_are_findings(tmp_path):
    run = make_run(tmp_path, devices=True)
    stores = sorted((run / "clients").glob("*.sqlite"))
    before = [p.read_bytes() for p in stores]
    # client 2 crashed after charging its last release, before writing the line: allowed
    with DeviceStore(stores[2], fsync=False) as store:
        state = store.read_account()
        state["last"]["logged"] = False
        store.write_account(state)
    with sqlite3.connect(stores[2]) as db:
        db.execute("DELETE FROM releases WHERE seq = (SELECT MAX(seq) FROM releases)")
    write(run, ledger(run)[:-1])
    finish(run)
    report = audit(run)
    assert report["verdict"] == "pass", failures(report)
    assert any("device 000002: the last charge (round 2) has no ledger line yet" in f["what"]
               for f in report["findings"] if f["severity"] == "note")
    assert [p.read_bytes() for p in stores[:2]] == before[:2]  # the audit changed nothing
    # a store without an account (a device that charged nothing) is not a device to check
    DeviceStore(run / "clients" / "000003.sqlite", fsync=False).close()
    assert audit(run)["verdict"] == "pass"
    (run / "clients" / "000004.sqlite").write_text("not a database")
    assert any(f.startswith("device 000004: unreadable store") for f in failures(audit(run)))


def test_an_edited_sigma_with_a_recomputed_epsilon_is_caught(tmp_path):
    run = make_run(tmp_path, clients=1)
    lines = ledger(run)
    lines[1]["noise_multiplier"] = 40.0  # then "repair" ε to what dp-accounting would say
    lines[1]["epsilon"] = privacy.epsilon([RELEASE, (40.0, *RELEASE[1:])], 1e-5, "rdp")
    write(run, lines)
    found = failures(audit(run))
    assert any("σ changed from 2.5 to 40" in f for f in found)
    assert any("the run fixed σ = 2.5" in f for f in found)


def test_a_user_level_line_from_another_client_is_caught(tmp_path):
    run = make_run(tmp_path, mode="user", releases=2)
    lines = ledger(run)
    lines[1]["client"] = "c-aaaa"
    write(run, lines)
    found = failures(audit(run))
    assert any("only the server releases aggregates" in f for f in found)
    assert any("round 2 was aggregated but has no ledger line" in f for f in found)


def test_malformed_lines_are_findings_not_crashes(tmp_path):
    run = make_run(tmp_path, clients=1)
    lines = ledger(run)
    lines[0]["round"] = "1"
    (run / "privacy" / "ledger.jsonl").write_text(
        "5\n[[1]]\n" + "".join(json.dumps(x) + "\n" for x in lines))
    with open(run / "rounds.jsonl", "a") as fh:
        fh.write('{"round": 3, "aggreg')  # a torn last line, as a killed run leaves it
    found = failures(audit(run))
    assert sum("not a ledger entry" in f for f in found) == 2
    assert any("round must be an integer" in f for f in found)


def test_an_honest_prv_ledger_with_small_epsilon_passes(tmp_path):
    run = make_run(tmp_path, clients=1, releases=2, accountant="prv", sigma=8.0)
    report = audit(run)
    assert report["verdict"] == "pass", failures(report)
    assert report["spent"]["epsilon_max"] < 1.0  # where ±0.002 of PRV is over 0.2 %


def test_user_level_dropouts_in_every_round_pass(tmp_path):
    # every round lost clients, so every logged σ is below the plan's: σ·√(m′/m)
    run = make_user_run(tmp_path, reported=[9, 7, 8], epsilon=8.0)
    rounds = [json.loads(t) for t in (run / "rounds.jsonl").read_text().splitlines()]
    sigma = json.loads((run / "plan.json").read_text())["privacy"]["noise_multiplier"]
    assert all(x["noise_multiplier"] < sigma for x in ledger(run))
    report = audit(run)
    assert report["verdict"] == "pass", failures(report)
    assert report["promise"]["noise_multiplier"] == sigma
    assert [r[0] for r in report["spent"]["epsilon_by_round"]] == [
        r["round"] for r in rounds if r["aggregated"]]


def test_user_level_sigma_must_match_the_clients_that_reported(tmp_path):
    run = make_user_run(tmp_path, reported=[9, 7, 8], epsilon=8.0)
    rounds = {r["round"]: r for r in map(json.loads,
                                         (run / "rounds.jsonl").read_text().splitlines())}
    lines = ledger(run)
    target = lines[-1]
    reported = rounds[target["round"]]["completed"]
    # the σ of one more reporting client, ε recomputed to match
    target["noise_multiplier"] *= ((reported + 1) / reported) ** 0.5
    history = [(x["noise_multiplier"], x["sample_rate"], 1) for x in lines]
    for i, line in enumerate(lines):
        line["epsilon"] = privacy.epsilon(history[:i + 1], 1e-5)
    write(run, lines)
    assert any(f"round {target['round']}: σ" in f
               and f"the {reported} of 10 clients rounds.jsonl says reported" in f
               for f in failures(audit(run)))


def test_a_budget_that_ran_out_is_said_and_checked(tmp_path, html_outline):
    # σ is planned for 4 full rounds: the dropouts of round 2 spend faster, so round 4 would
    # overspend and is blocked
    run = make_user_run(tmp_path, reported=[10, 8, 10, 10], epsilon=3.0)
    rounds = [json.loads(t) for t in (run / "rounds.jsonl").read_text().splitlines()]
    blocked = [r["round"] for r in rounds if r["budget_exhausted"]]
    assert blocked and all(not r["aggregated"] for r in rounds if r["round"] >= blocked[0])
    after = blocked[0] - 1
    report = audit(run)
    assert report["verdict"] == "pass", failures(report)
    assert report["spent"]["budget_exhausted_after_round"] == after
    assert report["spent"]["rounds_blocked_by_budget"] == len(blocked)
    assert any(f"budget ε = 3 ran out after round {after}: the {len(blocked)} round(s) after it "
               "were not aggregated" in n for n in notes(report))
    text = render(report, "md", run / "report.md")[0].read_text()
    assert f"**The budget ran out after round {after}**" in text
    # metrics.json saying otherwise contradicts rounds.jsonl
    metrics = json.loads((run / "metrics.json").read_text())
    if "budget_exhausted_after_round" in metrics["privacy"]:  # the server says it too
        assert metrics["privacy"]["budget_exhausted_after_round"] == after
    metrics["privacy"]["budget_exhausted_after_round"] = after + 1
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert any(f"metrics.json says the budget ran out after round {after + 1}" in f
               for f in failures(audit(run)))


def test_a_round_blocked_with_budget_to_spare_is_caught(tmp_path):
    # round 2 recorded as blocked, its release taken out and round 3's ε made to match
    run = make_user_run(tmp_path, reported=[10, 10, 10], epsilon=8.0)
    rounds = [json.loads(t) for t in (run / "rounds.jsonl").read_text().splitlines()]
    first, _, third = ledger(run)
    third["epsilon"] = privacy.epsilon([(first["noise_multiplier"], first["sample_rate"], 1)]
                                       * 2, 1e-5)
    rounds[1].update(aggregated=False, budget_exhausted=True, epsilon=first["epsilon"])
    rounds[2].update(epsilon=third["epsilon"])
    (run / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    write(run, [first, third])
    finish(run)
    found = failures(audit(run))
    assert any("round 2 was blocked as over budget, but its aggregate of 10 clients would "
               "have spent only" in f for f in found), found


def test_a_round_blocked_before_one_that_fitted_is_no_end_of_the_budget(tmp_path):
    # 9 then 7 reporting clients: round 2's aggregate would overspend, round 3's (8) fits
    run = make_user_run(tmp_path, reported=[9, 7, 8], epsilon=8.0)
    rounds = [json.loads(t) for t in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["aggregated"] for r in rounds] == [True, False, True]
    report = audit(run)
    assert report["verdict"] == "pass", failures(report)
    assert report["spent"]["budget_exhausted_after_round"] is None
    assert any(n.startswith("round(s) 2 were not aggregated") for n in notes(report))
