"""`fedrec audit STORE` on real device stores: an honest device passes, a tampered store fails,
a crash between charge and ledger line is a note, and a store of a newer schema is refused."""

import json
import sqlite3
from dataclasses import asdict

import pytest

from fedrec.audit import device
from fedrec.audit.device import DeviceStoreError, audit_device
from fedrec.audit.report import render
from fedrec.client import store as client_store
from fedrec.client.budget import PrivacyAccount
from fedrec.client.store import DeviceStore
from fedrec.common import crosscheck, privacy

DELTA = 1e-5
RELEASE = (2.5, 0.5, 4)  # σ, q, steps of every release: ε 2.10, 2.93, 3.59 after 1, 2, 3
ROUNDS = (2, 5, 9)  # the rounds the device took part in


def log_last_charge(store: DeviceStore, account: PrivacyAccount) -> None:
    """What the ClientApp (`fedrec.client.app`, `_log_last_charge`) does after training: the
    ledger line of the account's last charge, then the mark that it is written."""
    last = account.last
    store.append_release(asdict(privacy.Release(
        "record", store.pseudonym(), last["round"], last["noise_multiplier"],
        last["sample_rate"], last["steps"], 1.0, account.delta, account.accountant,
        last["epsilon"])))
    account.mark_logged()


def make_store(tmp_path, rounds=ROUNDS, log_last=True, budget=None, rotate_after=None,
               accountant="rdp", release=RELEASE):
    """A device's store after it released an update in each of `rounds`, charged and logged
    the way the ClientApp does it."""
    path = tmp_path / "device.sqlite"
    with DeviceStore(path, fsync=False) as store:
        account = PrivacyAccount(store, DELTA, accountant)
        for i, round_ in enumerate(rounds):
            account.charge(round_, f"inputs of round {round_}", *release)
            if log_last or i < len(rounds) - 1:
                log_last_charge(store, account)
            if rotate_after == round_:
                store.rotate_pseudonym()
        if budget is not None:  # a device that records its budget in its account
            store.write_account({**store.read_account(), device.BUDGET_KEY: budget})
    return path


def rows(path) -> list[dict]:
    with sqlite3.connect(path) as db:
        return [json.loads(line) for (line,) in db.execute("SELECT line FROM releases ORDER BY seq")]


def set_row(path, seq: int, line: dict) -> None:
    with sqlite3.connect(path) as db:
        db.execute("UPDATE releases SET line = ? WHERE seq = ?", (json.dumps(line), seq))


def edit_account(path, change) -> None:
    with sqlite3.connect(path) as db:
        state = json.loads(db.execute("SELECT state FROM account").fetchone()[0])
        change(state)
        db.execute("UPDATE account SET state = ?", (json.dumps(state),))


def failures(report) -> list[str]:
    return [f["what"] for f in report["findings"] if f["severity"] == "failure"]


def notes(report) -> list[str]:
    return [f["what"] for f in report["findings"] if f["severity"] == "note"]


def test_the_audit_reads_the_schema_version_the_store_writes():
    assert device.SCHEMA_VERSION == client_store.SCHEMA_VERSION


def test_an_honest_device_passes_and_reports_its_spend(tmp_path):
    path = make_store(tmp_path)
    before = path.read_bytes()
    report = audit_device(path)
    assert report["verdict"] == "pass" and failures(report) == []
    spent = report["spent"]
    expected = crosscheck.rdp_epsilon([RELEASE] * 3, DELTA)
    assert spent["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert spent["epsilon_ledger"] == pytest.approx(privacy.epsilon([RELEASE] * 3, DELTA))
    assert spent["releases"] == spent["charges"] == 3 and spent["delta"] == DELTA
    assert spent["noise_multiplier"] == [2.5] and spent["sample_rate"] == [0.5, 0.5]
    assert spent["steps"] == [4, 4] and spent["steps_total"] == 12
    assert [r[1] for r in spent["epsilon_by_release"]] == list(ROUNDS)
    assert report["crosscheck"]["lines"] == 3 and report["crosscheck"]["max_difference_rdp"] < 0.01
    with DeviceStore(path, create=False) as store:
        assert report["pseudonym"] == store.pseudonym() and report["pseudonyms"] == [
            store.pseudonym()]
    # no budget in the store: said so, not a failure
    assert report["promise"]["epsilon"] is None
    assert any("does not record the device's ε budget" in n for n in notes(report))
    assert path.read_bytes() == before  # read-only


def test_an_edited_epsilon_is_caught(tmp_path):
    path = make_store(tmp_path)
    line = rows(path)[1]
    line["epsilon"] *= 0.9  # the device reports less than it spent
    set_row(path, 2, line)
    found = failures(audit_device(path))
    assert len(found) == 1 and "in round 5 is not reproducible" in found[0]


@pytest.mark.parametrize("seq", [1, 3])
def test_a_deleted_ledger_line_is_caught(tmp_path, seq):
    path = make_store(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM releases WHERE seq = ?", (seq,))
    report = audit_device(path)
    assert report["verdict"] == "fail"
    round_ = ROUNDS[seq - 1]
    assert any(f"charged a release in round {round_} (charge {seq}) that has no ledger line"
               in f for f in failures(report))


def test_an_added_line_is_caught(tmp_path):
    path = make_store(tmp_path)
    extra = {**rows(path)[-1], "round": 12,  # an honest-looking fourth release
             "epsilon": privacy.epsilon([RELEASE] * 4, DELTA)}
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO releases (line) VALUES (?)", (json.dumps(extra),))
    found = failures(audit_device(path))
    assert len(found) == 1 and "round 12" in found[0] and "matches no charge" in found[0]


def test_a_changed_sigma_in_the_account_history_is_caught(tmp_path):
    path = make_store(tmp_path)
    edit_account(path, lambda state: state["history"][1].__setitem__(0, 3.0))
    found = failures(audit_device(path))
    assert any("charge 2 (round 5) has σ 3, but the account's σ is 2.5" in f for f in found)
    assert any("round 5" in f and "matches no charge" in f for f in found)
    assert any("in round 9 is not reproducible" in f for f in found)


def test_an_unlogged_last_charge_is_a_note_not_a_failure(tmp_path):
    path = make_store(tmp_path, log_last=False)
    report = audit_device(path)
    assert report["verdict"] == "pass", failures(report)
    assert any("the last charge (round 9) has no ledger line yet" in n for n in notes(report))
    spent = report["spent"]
    assert spent["releases"] == 2 and spent["charges"] == 3
    # the charge counts as spent, though no line shows it yet
    assert spent["epsilon"] == pytest.approx(crosscheck.rdp_epsilon([RELEASE] * 3, DELTA))
    assert spent["epsilon_by_release"][-1][2] is None
    # marked logged, yet no line: deleted
    edit_account(path, lambda state: state["last"].__setitem__("logged", True))
    assert any("round 9 (charge 3) that has no ledger line" in f
               for f in failures(audit_device(path)))


def test_a_line_written_twice_after_a_crash_counts_once(tmp_path):
    path = make_store(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO releases (line) VALUES (?)", (json.dumps(rows(path)[-1]),))
    report = audit_device(path)
    assert report["verdict"] == "pass" and report["spent"]["releases"] == 3
    assert any("identical repeat" in n for n in notes(report))


def test_the_budget_is_checked_where_the_store_records_it(tmp_path):
    report = audit_device(make_store(tmp_path / "a", rounds=(2, 5), budget=3.0))
    assert report["verdict"] == "pass" and report["promise"]["epsilon"] == 3.0
    assert not any("budget" in n for n in notes(report))
    found = failures(audit_device(make_store(tmp_path / "b", budget=3.0)))  # ε 3.59 > 3
    assert len(found) == 1 and "in round 9 at ε 3.586" in found[0] and "over its budget 3" in found[0]


def test_a_rotated_pseudonym_is_a_note(tmp_path):
    path = make_store(tmp_path, rotate_after=5)
    report = audit_device(path)
    assert report["verdict"] == "pass", failures(report)
    first, second = report["pseudonyms"]
    assert second == report["pseudonym"] and first != second
    assert any(f"pseudonym rotated before round 9: {first} → {second}" in n for n in notes(report))
    # a name back after another one is no rotation
    set_row(path, 1, {**rows(path)[0], "client": second})
    assert any(f"client {second} reappears after {first}" in f
               for f in failures(audit_device(path)))


def test_impossible_or_foreign_parameters_are_findings(tmp_path):
    path = make_store(tmp_path)
    set_row(path, 1, {**rows(path)[0], "delta": 1e-3})
    set_row(path, 2, {**rows(path)[1], "unit": "user"})
    found = failures(audit_device(path))
    assert any("delta 0.001 differs from the account's 1e-05" in f for f in found)
    assert any("unit 'user' differs from the account's 'record'" in f for f in found)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE releases SET line = 'not json' WHERE seq = 3")
    assert any("not a JSON line" in f for f in failures(audit_device(path)))


def test_a_prv_account_is_checked_against_privacy_loss_distributions(tmp_path):
    path = make_store(tmp_path, rounds=(1, 2), accountant="prv", release=(8.0, 0.5, 4))
    report = audit_device(path)
    assert report["verdict"] == "pass", failures(report)
    assert report["crosscheck"]["reference"] == "PLD" and report["crosscheck"]["pld_lines"] == 2


def test_a_store_of_a_newer_schema_is_refused_naming_both_versions(tmp_path):
    path = make_store(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {client_store.SCHEMA_VERSION + 1}")
    with pytest.raises(DeviceStoreError) as error:
        audit_device(path)
    message = str(error.value)
    assert str(path) in message and f"version {client_store.SCHEMA_VERSION + 1}" in message
    assert f"version {device.SCHEMA_VERSION}" in message


def test_a_device_that_released_nothing_passes(tmp_path):
    path = tmp_path / "device.sqlite"
    DeviceStore(path, fsync=False).close()
    report = audit_device(path)
    assert report["verdict"] == "pass" and report["spent"]["charges"] == 0


def test_a_device_report_renders_as_markdown_html_and_json(tmp_path, html_outline):
    report = audit_device(make_store(tmp_path, budget=4.0))
    md, png = render(report, "md", tmp_path / "report.md")
    text = md.read_text()
    assert "**Verdict: PASS**" in text and "# Privacy audit of the device store" in text
    assert "ε = 3.586" in text and "Unit: one record" in text and "σ = 2.5" in text
    assert png.name == "report-epsilon-by-release.png" and png.stat().st_size > 5000
    tags, images = html_outline(render(report, "html", tmp_path / "report.html")[0].read_text())
    assert {"h1", "table", "img"} <= set(tags)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    data = json.loads(render(report, "json", tmp_path / "report.json")[0].read_text())
    assert data["verdict"] == "pass" and data["spent"]["charges"] == 3


def test_the_command_audits_a_store_and_exits_1_on_a_failure_2_on_a_newer_schema(tmp_path,
                                                                                capsys):
    from fedrec.cli.main import main

    path = make_store(tmp_path)
    main(["audit", str(path)])
    out = capsys.readouterr().out
    assert "verdict: PASS" in out and (tmp_path / "device-audit.md").exists()
    line = rows(path)[0]
    set_row(path, 1, {**line, "epsilon": 0.1})
    with pytest.raises(SystemExit) as exited:
        main(["audit", str(path), "--format", "json", "--out", str(tmp_path / "a.json")])
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert "verdict: FAIL" in out and "not reproducible" in out and "(ledger line 1)" in out
    with pytest.raises(SystemExit) as exited:
        main(["audit", str(path), "--egress-log", str(path)])
    assert exited.value.code == 2
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(SystemExit) as exited:
        main(["audit", str(path)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert str(path) in err and "version 99" in err and "Traceback" not in err
