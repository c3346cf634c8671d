"""A record-level run's pseudonyms mapped to its devices (`fedrec.audit.fleet`): a device that
rotated its pseudonym is one client with one budget, the run's ledger is exactly its devices'
ledgers, and each device's store passes the device audit inside the run audit."""

import json
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest

from fedrec.audit.run import audit
from fedrec.common import privacy

sys.path.insert(0, str(Path(__file__).parent))
from handmade import RELEASE, failures, finish, ledger, make_run, notes, write  # noqa: E402


def test_a_device_that_rotated_its_pseudonym_is_one_client(tmp_path):
    # device 0 releases in rounds 1-3 and rotates after round 1: its lines of rounds 2 and 3
    # carry a new name, and their ε continue its history (2.93, 3.59 after 2 and 3 releases)
    run = make_run(tmp_path, clients=2, releases=3, devices=True, rotate_after=1, budget=4.0)
    lines = ledger(run)
    names = [x["client"] for x in lines[:3]]
    assert names[0] != names[1] == names[2]
    assert lines[1]["epsilon"] == pytest.approx(privacy.epsilon([RELEASE] * 2, 1e-5))
    report = audit(run)
    assert report["verdict"] == "pass", failures(report)
    assert any(f"pseudonym rotated before round 2: {names[0]} → {names[1]}" in n
               for n in notes(report))
    spent = report["spent"]
    assert spent["clients_released"] == 2 and spent["pseudonyms_rotated"] == 2
    assert spent["epsilon_by_client"][names[0]] == pytest.approx(lines[2]["epsilon"])


def test_a_rotation_without_the_device_stores_is_inferred_from_the_epsilons(tmp_path):
    run = make_run(tmp_path, clients=2, releases=3, devices=True, rotate_after=1, budget=4.0)
    shutil.rmtree(run / "clients")  # the ledger handed on alone
    names = [x["client"] for x in ledger(run)[:2]]
    report = audit(run)
    assert report["verdict"] == "pass", failures(report)
    assert any(f"{names[0]} → {names[1]} (inferred" in n for n in notes(report))
    # a new name whose first ε continues nobody's history is still not reproducible
    lines = ledger(run)
    lines[1]["epsilon"] *= 1.2
    lines[2]["epsilon"] *= 1.2
    write(run, lines)
    assert any("not reproducible" in f for f in failures(audit(run)))


def test_the_runs_ledger_is_exactly_the_devices_ledgers(tmp_path):
    run = make_run(tmp_path, devices=True)
    lines = ledger(run)
    write(run, [*lines, lines[0]])  # a repeat no device wrote
    finish(run)
    assert any("a line no device wrote" in f for f in failures(audit(run)))
    forged = {**lines[0], "client": "c-00000000deadbeef"}
    write(run, [*lines, forged])
    finish(run)
    found = failures(audit(run))
    assert any("c-00000000deadbeef is no pseudonym of any device" in f for f in found)


def test_a_name_two_devices_claim_and_a_device_charged_twice_for_a_round(tmp_path):
    run = make_run(tmp_path, devices=True)
    stores = sorted((run / "clients").glob("*.sqlite"))
    with sqlite3.connect(stores[0]) as db, sqlite3.connect(stores[1]) as other:
        name = other.execute("SELECT pseudonym FROM identity").fetchone()[0]
        db.execute("UPDATE identity SET pseudonym = ?", (name,))
        state = json.loads(db.execute("SELECT state FROM account").fetchone()[0])
        state["history"][1][3] = state["history"][0][3]  # both charges in round 1
        db.execute("UPDATE account SET state = ?", (json.dumps(state),))
    found = failures(audit(run))
    assert any(f"pseudonym {name} is carried by two devices" in f for f in found)
    assert "device 000000 was charged 2 times for round 1: its budget spent twice for one " \
           "round" in found


def test_personal_state_of_a_round_without_a_charge_is_an_erased_charge(tmp_path):
    run = make_run(tmp_path, devices=True)
    with sqlite3.connect(run / "clients" / "000001.sqlite") as db:
        db.execute("INSERT INTO personal VALUES (?, ?)", (2, b""))
        assert audit(run)["verdict"] == "pass"  # round 2 was charged
        db.execute("INSERT INTO personal VALUES (?, ?)", (5, b""))
    assert any("device 000001 keeps personal state trained in round(s) 5" in f
               for f in failures(audit(run)))


def test_device_findings_and_budgets_are_the_runs(tmp_path):
    run = make_run(tmp_path, devices=True)
    with sqlite3.connect(run / "clients" / "000002.sqlite") as db:
        state = json.loads(db.execute("SELECT state FROM account").fetchone()[0])
        state["epsilon_max"] = 30.0
        db.execute("UPDATE account SET state = ?", (json.dumps(state),))
        seq, text = db.execute("SELECT seq, line FROM releases ORDER BY seq").fetchone()
        db.execute("UPDATE releases SET line = ? WHERE seq = ?",
                   (json.dumps({**json.loads(text), "epsilon": 0.5}), seq))
    found = failures(audit(run))
    assert "device 000002: its privacy account's epsilon_max = 30.0; the run's is 3.0" in found
    assert any(f.startswith("device 000002: ε 0.5 in round 1 is not reproducible") for f in found)


def test_an_unfinished_simulation_is_audited_from_its_devices_ledgers(tmp_path):
    # killed before it finished: metrics.json not written, the ledger not collected yet
    run = make_run(tmp_path, devices=True)
    (run / "metrics.json").unlink()
    (run / "privacy" / "ledger.jsonl").unlink()
    report = audit(run)
    assert report["verdict"] == "pass", failures(report)
    assert report["crosscheck"]["lines"] == 6
    assert any(n.startswith("the run has not finished: its ledger is not collected yet")
               for n in notes(report))
