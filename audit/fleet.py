"""Who released each ledger line: a record-level run's pseudonyms mapped to its devices, and
the run's ledger checked against the devices' own stores.

In a simulation every virtual device keeps its privacy account and its own ledger in
`clients/NNNNNN.sqlite` (`fedrec.audit.device`), and the run's `privacy/ledger.jsonl` is
those ledgers collected when the run finishes. So, where the stores are there:

- every name in the run's ledger is a pseudonym some device's own ledger carries; a device
  that rotated its pseudonym (`fedrec client pseudonym --rotate`) carries each of its names,
  and its lines under all of them are one client: one budget, one cumulative ε (a note says
  where a name changed);
- the run's ledger holds exactly the devices' lines — none that no device wrote, none fewer
  (until the run has finished and collected them, a device's newest lines may be missing:
  a note);
- each device passes the device audit: every line shows a charge of its account, every ε
  reproduces from the account's history, no charge over its budget — and its budget, δ and
  accountant are the run's; a device charged at most once per round, and in every round
  whose personal state it keeps (it saves that state only after a charged release).

Without the stores (a ledger handed on alone), a rotation is inferred where a name's first ε
is exactly another name's history continued (`infer_rotations`): a note, not proof.
"""

from __future__ import annotations

import json
import math
from collections import Counter

from fedrec.audit import device, mechanisms
from fedrec.audit.mechanisms import fail
from fedrec.audit.records import canonical


def identities(rec, findings: list) -> dict[str, str]:
    """Pseudonym -> the device (its store's NNNNNN) whose own ledger or identity carries it;
    a name two devices claim is a failure."""
    owner: dict[str, str] = {}
    for d in rec.devices:
        names = {d.pseudonym} if d.pseudonym else set()
        for _, text in d.rows:
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue  # the device audit reports it
            if isinstance(line, dict) and isinstance(line.get("client"), str):
                names.add(line["client"])
        for name in names:
            if owner.setdefault(name, d.key) != d.key:
                fail(findings, f"pseudonym {name} is carried by two devices, {owner[name]} and "
                               f"{d.key} (pseudonyms are random: one of them is forged)")
    return owner


def check_devices(rec, lines: list[dict], owner: dict[str, str], findings: list) -> None:
    """The run's ledger against the device stores, and each store's own audit."""
    p = rec.privacy
    accounts = [d for d in rec.devices if d.account is not None or d.rows]
    if p.mode != "record":
        if accounts:
            fail(findings, f"{len(accounts)} devices keep record-level privacy accounts, but "
                           f"the run's privacy mode is {p.mode!r}")
        return
    if not rec.devices:
        if lines and (rec.metrics or {}).get("engine") not in (None, "", "deployment"):
            fail(findings, "a simulation's record-level releases are charged on its devices, "
                           "but clients/ holds no device store to check them against")
        return
    for name in sorted({line["client"] for line in lines} - set(owner)):
        fail(findings, f"ledger client {name} is no pseudonym of any device of this run "
                       "(a forged line, or a deleted device)")
    _compare_ledgers(rec, findings)
    for d in [d for d in rec.devices if d.account is not None or d.rows or d.error]:
        if d.error:
            fail(findings, f"device {d.key}: unreadable store ({d.error})")
            continue
        report = device.check_store(str(d.path), d.account, d.rows, d.pseudonym)
        for f in report["findings"]:
            row = f" (its ledger row {f['line']})" if f["line"] else ""
            fail(findings, f"device {d.key}: {f['what']}{row}", severity=f["severity"])
        _check_account(d, p, findings)


def _compare_ledgers(rec, findings: list) -> None:
    """The run's ledger is the devices' ledgers collected: the same lines, as many times."""
    run_lines = Counter()
    numbers: dict[str, list[int]] = {}
    for line in rec.ledger_all:
        text = canonical(line)
        run_lines[text] += 1
        numbers.setdefault(text, []).append(line["line"])
    device_lines: Counter = Counter()
    where: dict[str, str] = {}
    for d in rec.devices:
        for seq, text in d.rows:
            try:
                entry = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                device_lines[canonical(entry)] += 1
                where.setdefault(canonical(entry), f"device {d.key} row {seq}")
    for text, extra in (run_lines - device_lines).items():
        for number in numbers[text][-extra:]:
            fail(findings, "a line no device wrote (or one copy more than the devices hold): "
                           "an added, edited or repeated line", number)
    for text in device_lines - run_lines:
        round_ = json.loads(text).get("round")
        fail(findings, f"{where[text]} (round {round_}) is missing from the run's ledger"
             + ("" if rec.finished else
                ": the run has not finished, so it has not collected the devices' ledgers yet"),
             severity="failure" if rec.finished else "note")


def _check_account(d, p, findings: list) -> None:
    """A device's account keeps the run's budget, δ and accountant, and one charge a round."""
    account = d.account or {}
    for key, expected in (("epsilon_max", p.epsilon), ("delta", p.delta),
                          ("accountant", p.accountant)):
        value = account.get(key)
        if value is not None and value != expected:
            fail(findings, f"device {d.key}: its privacy account's {key} = {value!r}; the run's "
                           f"is {expected!r}")
    history = account.get("history")
    rounds = [h[3] for h in history if isinstance(h, list) and len(h) == 4] if isinstance(
        history, list) else []
    for round_, count in Counter(rounds).items():
        if count > 1:
            fail(findings, f"device {d.key} was charged {count} times for round {round_}: its "
                           "budget spent twice for one round")
    trained = sorted(set(d.personal_rounds) - set(rounds))
    if trained:  # a device saves its personal state only after a charged release
        fail(findings, f"device {d.key} keeps personal state trained in round(s) "
                       f"{', '.join(map(str, trained))}, but its account charged no release "
                       "there: an erased charge")


def infer_rotations(lines: list[dict], p, findings: list) -> dict[str, str]:
    """Without device stores: a name whose first ε does not reproduce from its own lines but
    does from an earlier name's whole history followed by its own is that name's device under
    a new pseudonym (a note). Returns name -> the first name of its device."""
    by_name: dict[str, list[dict]] = {}
    for line in lines:
        by_name.setdefault(line["client"], []).append(line)
    histories = {name: [(x["noise_multiplier"], x["sample_rate"], x["steps"]) for x in rows]
                 for name, rows in by_name.items() if all(_mechanism(x) for x in rows)}
    owner: dict[str, str] = {}
    taken: set[str] = set()
    for name, rows in by_name.items():
        first = rows[0]
        if name not in histories or not mechanisms.number(first["epsilon"]) or name == "server":
            continue
        if _reproduces(first["epsilon"], histories[name][:1], p):
            continue
        for earlier, history in histories.items():
            previous = by_name[earlier]
            if (earlier == name or earlier in taken or previous[-1]["line"] > first["line"]
                    or previous[-1]["round"] >= first["round"]):
                continue
            if _reproduces(first["epsilon"], [*history, histories[name][0]], p):
                owner[name] = owner.get(earlier, earlier)
                taken.add(earlier)
                fail(findings, f"pseudonym rotated before round {first['round']}: {earlier} → "
                               f"{name} (inferred: its first ε continues {earlier}'s history)",
                     first["line"], severity="note")
                break
    return owner


def _mechanism(line: dict) -> bool:
    return (mechanisms.valid_sigma(line["noise_multiplier"])
            and mechanisms.number(line["sample_rate"]) and 0 < line["sample_rate"] <= 1
            and mechanisms.integer(line["steps"]) and 1 <= line["steps"] <= mechanisms.MAX_STEPS
            and mechanisms.integer(line["round"]))


def _reproduces(epsilon: float, history: list[tuple], p) -> bool:
    reference = mechanisms.epsilon_of(history, p)
    return math.isclose(epsilon, reference, rel_tol=mechanisms.TOLERANCE,
                        abs_tol=mechanisms.PRV_ABSOLUTE if p.accountant == "prv" else 0.0)
