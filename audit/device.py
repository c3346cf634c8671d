"""Reading a device's store the way an auditor does: with `sqlite3` alone, read-only.

A device keeps its record-level privacy account, its own ledger and its pseudonym in one SQLite
file (`fedrec.client.store.DeviceStore`; a simulation's virtual devices in
`RUN/clients/NNNNNN.sqlite`). The audit depends on `fedrec.common` only, so it does not open
the file through `DeviceStore`: it reads the plain tables the store documents —

    account(state)        the privacy account, JSON: `history` [[σ, q, steps, round], ...] and
                          `last` (the last charge; `logged`: its ledger line is written)
    releases(seq, line)   the device's ledger, one JSON `fedrec.common.privacy.Release` a row
    identity(pseudonym)
    personal(round, …)    the rounds whose personal state it keeps (only their numbers are read)

The connection is read-only (`mode=ro`): nothing in the store is changed, and a store still in
use by a running device reads as of its last committed write. (SQLite may leave an empty
`-wal`/`-shm` pair next to a store it read: its journal files, no data.)

`audit_device` (`fedrec audit STORE`) checks one device with the run audit's conventions
(`fedrec.audit.run`, which in turn reads a simulation's stores with `DeviceStoreReader`):

- every ledger line is a record-level entry of the account's δ and accountant, with possible
  parameters, and shows one charge of the account's history (same σ, q, steps, round), in
  order: a line that shows none was added or edited, a charge without a line was deleted —
  except the last charge while the account marks it unlogged (a note: the device stopped
  between charging and logging; it writes the line at its next visit);
- each line's cumulative ε is what dp-accounting makes of the history up to its charge,
  within the run audit's tolerance; every charge keeps the account's σ;
- no charge takes ε over the budget, where the account records one (`epsilon_max`);
- every line carries the device's pseudonym, or an earlier one (a rotation: a note).

A round that comes again after a later one is no failure here: a resumed federation redoes
rounds, and each redo is charged again — the history shows it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

# run.py imports this module too (through fleet.py): only attributes are used, at call time
from fedrec.audit import mechanisms, records, run
from fedrec.audit.mechanisms import fail as _fail
from fedrec.common import crosscheck, privacy
from fedrec.common.errors import ConfigError, FedrecError

CLIENTS_DIR = "clients"  # under a simulation's run directory
STORE_GLOB = "*.sqlite"  # NNNNNN.sqlite, one per virtual device
SCHEMA_VERSION = 1  # `fedrec.client.store.SCHEMA_VERSION` this reader understands
TABLES = ("account", "releases", "identity")


class DeviceStoreError(FedrecError):
    """A file that cannot be read as a device store (the message names the file)."""


def store_paths(run_dir: str | Path) -> list[Path]:
    """The device stores a simulation left in `run_dir`, in device order."""
    return sorted((Path(run_dir) / CLIENTS_DIR).glob(STORE_GLOB))


class DeviceStoreReader:
    """The store at `path`, opened read-only. An empty database (a store created but never
    written) reads as a device with no account, no ledger and no pseudonym. Raises
    `DeviceStoreError` for a file that is no device store, or one of a newer schema."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DeviceStoreError(f"{self.path}: no device store there")
        try:
            self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise DeviceStoreError(f"{self.path}: cannot open the device store ({exc})") from None
        try:
            self._tables = self._check()
        except BaseException:
            self._db.close()
            raise

    def _check(self) -> set[str]:
        try:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            tables = {name for (name,) in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            raise DeviceStoreError(f"{self.path}: not a device store ({exc})") from None
        if version > SCHEMA_VERSION:
            raise DeviceStoreError(f"{self.path}: device store schema version {version} is "
                                   f"newer than this audit reads (version {SCHEMA_VERSION})")
        if version == 0 and not tables:
            return set()  # created, never written
        missing = [t for t in TABLES if t not in tables]
        if version == 0 or missing:
            raise DeviceStoreError(f"{self.path}: an SQLite database, but not a fedrec device "
                                   f"store (schema version {version}, missing tables "
                                   f"{missing})")
        return tables

    def _rows(self, sql: str) -> list[tuple]:
        try:
            return self._db.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise DeviceStoreError(f"{self.path}: unreadable device store ({exc})") from None

    def _json(self, text, what: str):
        try:
            return json.loads(text)
        except (TypeError, ValueError):
            raise DeviceStoreError(f"{self.path}: the {what} is not JSON") from None

    def account(self) -> dict | None:
        """The privacy account's state (`history`, `last`, ...), or None: the device has
        charged nothing (no record-level DP, or not yet)."""
        if "account" not in self._tables:
            return None
        rows = self._rows("SELECT state FROM account")
        if not rows:
            return None
        state = self._json(rows[0][0], "privacy account")
        if not isinstance(state, dict):
            raise DeviceStoreError(f"{self.path}: the privacy account is not a JSON object")
        return state

    def pseudonym(self) -> str | None:
        """The device's current pseudonym (None: it never had one)."""
        if "identity" not in self._tables:
            return None
        rows = self._rows("SELECT pseudonym FROM identity")
        return str(rows[0][0]) if rows else None

    def releases(self) -> list[dict]:
        """The device's own ledger lines, oldest first (as stored; not checked here)."""
        return [self._json(line, f"ledger row {seq}") for seq, line in self.ledger_rows()]

    def personal_rounds(self) -> list[int]:
        """The rounds whose personal state the device keeps (their numbers only: the state is
        the user's). Under record-level DP a device saves it only after a charged release."""
        if "personal" not in self._tables:
            return []
        return [r for (r,) in self._rows("SELECT round FROM personal ORDER BY round")
                if isinstance(r, int)]

    def ledger_rows(self) -> list[tuple[int, str]]:
        """The device's own ledger as stored: (row number, JSON text), oldest first."""
        if "releases" not in self._tables:
            return []
        return self._rows("SELECT seq, line FROM releases ORDER BY seq")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DeviceStoreReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- the audit of one device ---------------------------------------------------------------
BUDGET_KEY = "epsilon_max"  # the account's ε budget, where a device records it


def audit_device(path: str | Path) -> dict:
    """The audit of one device's store as plain data, in the run audit's shape (`promise`,
    `spent`, `crosscheck`, `findings`, `verdict`; rendered by `fedrec.audit.report`)."""
    path = Path(path)
    with DeviceStoreReader(path) as store:
        state, rows, pseudonym = store.account(), store.ledger_rows(), store.pseudonym()
    return check_store(str(path), state, rows, pseudonym)


def check_store(name: str, state: dict | None, rows: list[tuple[int, str]],
                pseudonym: str | None) -> dict:
    """The audit of a device store's contents: its account's `state`, its ledger `rows`
    [(seq, JSON text), ...] and its `pseudonym` (`name` names the store in the report).

    The account's history of charges [[σ, q, steps, round], ...] is the truth the ledger must
    show: every ledger line matches one charge, in order, and its cumulative ε is what an
    independent accountant (dp-accounting) makes of the history up to that charge."""
    findings: list[dict] = []
    lines = records.parse_ledger(rows, findings)
    if state is None and lines:
        _fail(findings, "the store has ledger lines but no privacy account to check them "
                        "against")
    account = state or {}
    p = _account_config(state if state is not None else (lines[0] if lines else {}), findings)
    charges = _charges(account, findings)
    valid = {line["line"] for line in lines if run._valid(line, p, findings, "the account's")}
    pairs = _match(lines, charges, account, findings)
    epsilons = _independent(charges, p)
    checked = _crosscheck(pairs, valid, epsilons, p, findings)
    _check_last(account, charges, epsilons, p, findings)
    budget = account.get(BUDGET_KEY)
    _check_budget(pairs, charges, epsilons, p, budget, findings)
    names = _check_pseudonyms(lines, pseudonym, findings)
    result = {
        "device": name, "schema_version": SCHEMA_VERSION,
        "pseudonym": pseudonym, "pseudonyms": names,
        "promise": {"unit": "record", "epsilon": budget,  # δ, accountant: none before a charge
                    "delta": p.delta if state or lines else None,
                    "accountant": p.accountant if state or lines else None,
                    "noise_multiplier": account.get("noise_multiplier")},
        "crosscheck": run._crosscheck_summary(checked, p),
        "spent": _spent(pairs, charges, epsilons, p, budget, len(lines)),
        "findings": findings,
    }
    result["verdict"] = "fail" if any(f["severity"] == "failure" for f in findings) else "pass"
    return result


def _account_config(source: dict, findings: list):
    """The unit, δ and accountant of `source` (the account; for a store without one, its first
    ledger line) as a `PrivacyConfig`."""
    try:
        p = privacy.PrivacyConfig(mode="record", delta=source.get("delta", 1e-5),
                                  accountant=source.get("accountant", "rdp")).validate()
    except (ConfigError, TypeError):
        _fail(findings, f"the privacy account's δ {source.get('delta')!r} or accountant "
                        f"{source.get('accountant')!r} is no valid one: checked at δ = 1e-5, "
                        "rdp")
        return privacy.PrivacyConfig(mode="record")
    if source.get("unit", "record") != "record":
        _fail(findings, f"the privacy account's unit is {source.get('unit')!r}; a device "
                        "accounts record-level")
    return p


def _charges(account: dict, findings: list) -> list[tuple[float, float, int, int]]:
    """The account's history as (σ, q, steps, round), or [] (and a finding) if malformed."""
    history = account.get("history", [])
    charges = []
    for i, entry in enumerate(history if isinstance(history, list) else [None], start=1):
        if not (isinstance(entry, list) and len(entry) == 4 and mechanisms.valid_sigma(entry[0])
                and mechanisms.number(entry[1]) and 0 < entry[1] <= 1
                and mechanisms.integer(entry[2]) and 1 <= entry[2] <= mechanisms.MAX_STEPS
                and mechanisms.integer(entry[3])):
            _fail(findings, f"the privacy account's charge {i} is no [σ in "
                            f"[{mechanisms.SIGMA_MIN:g}, {privacy.NOISE_MULTIPLIER_MAX:g}], q in (0, 1], "
                            f"steps ≥ 1, round]: {entry!r}")
            return []
        charges.append((float(entry[0]), float(entry[1]), entry[2], entry[3]))
    sigma = account.get("noise_multiplier")
    for i, (s, _, _, round_) in enumerate(charges, start=1):
        if mechanisms.number(sigma) and s != sigma:
            _fail(findings, f"the privacy account's charge {i} (round {round_}) has σ {s:g}, "
                            f"but the account's σ is {sigma:g} (a device keeps its σ)")
    return charges


def _same_charge(line: dict, charge: tuple) -> bool:
    """Whether `line` (a ledger line, or the account's `last`) shows `charge`."""
    sigma, q, steps, round_ = charge
    noise, rate = line.get("noise_multiplier"), line.get("sample_rate")
    return (line.get("round") == round_ and line.get("steps") == steps
            and mechanisms.number(noise) and math.isclose(noise, sigma, rel_tol=1e-12)
            and mechanisms.number(rate) and math.isclose(rate, q, rel_tol=1e-12))


def _match(lines: list[dict], charges: list, account: dict, findings: list) -> list[tuple]:
    """(line, charge index) for each ledger line that shows a charge, in order. A line that
    shows none was added or edited; a charge without a line was deleted — unless it is the
    last one and the account says it is not logged yet (a device stopped between charging a
    release and writing its line)."""
    pairs, unlogged, next_ = [], [], 0
    for line in lines:
        k = next((k for k in range(next_, len(charges)) if _same_charge(line, charges[k])),
                 None)
        if k is None:
            _fail(findings, f"ledger line of round {line['round']} (σ {line['noise_multiplier']}, "
                            f"q {line['sample_rate']}, {line['steps']} steps) matches no charge "
                            "in the privacy account: an added or edited line", line["line"])
            continue
        unlogged += range(next_, k)
        pairs.append((line, k))
        next_ = k + 1
    unlogged += range(next_, len(charges))
    last = account.get("last") or {}
    for k in unlogged:
        round_ = charges[k][3]
        if k == len(charges) - 1 and last.get("logged") is False:
            _fail(findings, f"the last charge (round {round_}) has no ledger line yet: the "
                            "device stopped between charging it and logging it (it writes the "
                            "line at its next visit); its ε counts as spent", severity="note")
        else:
            _fail(findings, f"the privacy account charged a release in round {round_} (charge "
                            f"{k + 1}) that has no ledger line: a deleted line")
    if charges and last and not _same_charge(last, charges[-1]):
        _fail(findings, f"the account's last charge (round {last.get('round')}) is not the "
                        f"last entry of its history (round {charges[-1][3]})")
    return pairs


def _independent(charges: list, p) -> list[tuple[float, float | None]]:
    """(RDP, PLD) ε after each charge by dp-accounting; PLD for every charge of a `prv`
    account, else for the last only (it is slow)."""
    out = []
    for k in range(len(charges)):
        history = [c[:3] for c in charges[:k + 1]]
        pld = (crosscheck.pld_epsilon(history, p.delta, fine=p.accountant == "prv")
               if p.accountant == "prv" or k == len(charges) - 1 else None)
        out.append((crosscheck.rdp_epsilon(history, p.delta), pld))
    return out


def _reference(epsilons: tuple, p) -> float:
    return mechanisms.reference_epsilon(*epsilons, p)


def _crosscheck(pairs, valid: set, epsilons, p, findings: list) -> list[dict]:
    """Each valid ledger line's ε against the independent ε of the account's history up to its
    charge (the run audit's tolerance)."""
    out = []
    for line, k in pairs:
        if line["line"] not in valid:
            continue
        out.append(mechanisms.crosscheck_line(
            line, *epsilons[k], p, findings, f"in round {line['round']}",
            f" from the account's history of {k + 1} charges"))
    return out


def _check_last(account: dict, charges, epsilons, p, findings: list) -> None:
    """The ε the account holds for its last charge (a replay reuses it) reproduces too."""
    claimed = (account.get("last") or {}).get("epsilon")
    if not charges or claimed is None:
        return
    reference = _reference(epsilons[-1], p)
    if not (mechanisms.number(claimed) and mechanisms.reproduces(claimed, reference, p)):
        _fail(findings, f"the account's last charge claims ε {claimed!r}; dp-accounting gives "
                        f"{reference:.4g} for its history")


def _check_budget(pairs, charges, epsilons, p, budget, findings: list) -> None:
    if budget is None:
        _fail(findings, "the store does not record the device's ε budget: ε spent is reported, "
                        "not checked against a budget", severity="note")
        return
    if not (mechanisms.number(budget) and budget > 0):
        _fail(findings, f"the account's budget {BUDGET_KEY} = {budget!r} is no ε")
        return
    logged = {k: line for line, k in pairs}
    for k, charge in enumerate(charges):
        reference = _reference(epsilons[k], p)
        ledger = logged[k]["epsilon"] if k in logged else 0.0
        spent = max(ledger if mechanisms.number(ledger) else 0.0,
                    reference / (1 + mechanisms.ACCOUNTANTS_AGREE))
        if spent > budget * (1 + 1e-9):
            _fail(findings, f"the device charged a release in round {charge[3]} at ε "
                            f"{spent:.4g} (dp-accounting {reference:.4g}), over its budget "
                            f"{budget:g}", logged[k]["line"] if k in logged else None)


def _check_pseudonyms(lines: list[dict], current: str | None, findings: list) -> list[str]:
    """The names the ledger uses, in order. Each change is a rotation (a note); a name that
    comes back after another is not (a rotated-away pseudonym is never kept)."""
    names: list[str] = []
    for line in lines:
        name = str(line["client"])
        if names and name == names[-1]:
            continue
        if name in names:
            _fail(findings, f"client {name} reappears after {names[-1]}: no rotation does that "
                            "(a device keeps no old pseudonym)", line["line"])
            continue
        if names:
            _fail(findings, f"pseudonym rotated before round {line['round']}: {names[-1]} → "
                            f"{name}", line["line"], severity="note")
        names.append(name)
    if lines and current is None:
        _fail(findings, "the store has ledger lines but no pseudonym", severity="warning")
    elif names and names[-1] != current:
        _fail(findings, f"pseudonym rotated after the last release: the device is now "
                        f"{current}", severity="note")
    return names


def _spent(pairs, charges, epsilons, p, budget, releases: int) -> dict:
    logged = {k: line["epsilon"] for line, k in pairs if mechanisms.number(line["epsilon"])}
    sigmas, rates, steps = ([c[i] for c in charges] for i in range(3))
    return {
        "unit": "record", "delta": p.delta, "budget": budget,
        "epsilon": _reference(epsilons[-1], p) if charges else 0.0,  # every charge counts
        "epsilon_ledger": logged[max(logged)] if logged else 0.0,
        "releases": releases, "charges": len(charges),
        "noise_multiplier": sorted(set(sigmas)),
        "sample_rate": [min(rates), max(rates)] if charges else None,
        "steps": [min(steps), max(steps)] if charges else None, "steps_total": sum(steps),
        # [release, round, ledger ε (None: not logged), independent ε]
        "epsilon_by_release": [[k + 1, c[3], logged.get(k), _reference(epsilons[k], p)]
                               for k, c in enumerate(charges)],
    }
