"""A run directory's records, read the way an auditor reads them: every file optional, nothing
written, every JSON object parsed strictly.

Strictly means a key given twice in one object is a failure: Python's `json` (like most
readers) keeps the last value, so a line `{"epsilon": 8.1, ..., "epsilon": 2.0}` would show
one reader one number and another reader the other. Such a line is still read (last value),
so the rest of the audit sees what a lenient reader sees.

What is read (`RunRecords`):

    config.toml            the run's effective config; `[privacy]` as a `PrivacyConfig`
    plan.json              the run plan the apps received (σ, planned participations, cohort)
    privacy/ledger.jsonl   one release a line
    rounds.jsonl           one line per round the server closed
    metrics.json           the run's summary, written when it finished (absent: not finished)
    metrics.jsonl          one line per evaluated round
    clients/NNNNNN.sqlite  a simulation's device stores (`fedrec.audit.device`)
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fedrec.audit.mechanisms import fail
from fedrec.common import privacy
from fedrec.common.errors import ConfigError, RunDirError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LEDGER = Path("privacy") / "ledger.jsonl"
REQUIRED = set(privacy.LEDGER_KEYS)


class RepeatedKey(ValueError):
    """A JSON object that gives one key twice."""


def _unique_keys(pairs: list[tuple]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RepeatedKey(key)
        out[key] = value
    return out


def loads(text: str, findings: list, what: str, line: int | None = None):
    """`text` as JSON; a repeated key is a failure (and the value is read as `json` reads it:
    the last one wins). Raises `json.JSONDecodeError` for text that is no JSON."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RepeatedKey as exc:
        fail(findings, f"{what}: key {exc.args[0]!r} appears twice in one JSON object (readers "
                       "disagree on which value counts: an edit can hide behind either)", line)
        return json.loads(text)


@dataclass
class DeviceRecords:
    """One device store as the audit read it: `key` is its file name's stem (NNNNNN)."""

    path: Path
    key: str
    account: dict | None = None
    pseudonym: str | None = None
    rows: list[tuple[int, str]] = field(default_factory=list)  # (seq, JSON text)
    personal_rounds: list[int] = field(default_factory=list)
    error: str | None = None


@dataclass
class RunRecords:
    run_dir: Path
    config: dict
    privacy: privacy.PrivacyConfig
    federation: dict
    config_toml: dict  # config.toml as written
    plan: dict | None
    ledger_file: bool  # privacy/ledger.jsonl exists
    ledger: list[dict]  # the ledger's entries, identical repeats dropped, each with "line"
    ledger_all: list[dict]  # every entry, repeats too
    rounds: list[dict]
    metrics: dict | None  # metrics.json: None while the run has not finished
    metrics_lines: list[dict]
    devices: list[DeviceRecords]

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    @property
    def summary(self) -> dict:
        """metrics.json's privacy summary ({}: none, or not an object)."""
        value = (self.metrics or {}).get("privacy")
        return value if isinstance(value, dict) else {}


def read_run(run_dir: Path, findings: list) -> RunRecords:
    """Every record of the run in `run_dir`. Raises `RunDirError` without a config.toml and
    `ConfigError` for one that is no fedrec config (nothing can be checked without it). An
    identical repeat of a ledger line is a note (a device's crash artifact), or a failure in
    a user-level ledger (the server writes each line once)."""
    from fedrec.audit import device

    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").exists():
        raise RunDirError(f"{run_dir}: not a run directory (no config.toml)")
    cfg = read_config(run_dir / "config.toml")
    ledger_path, every = run_dir / LEDGER, []
    repeat_severity = "failure" if cfg["privacy"].mode == "user" else "note"
    metrics = read_json(run_dir / "metrics.json", findings)
    devices = [read_device(path) for path in device.store_paths(run_dir)]
    texts = ledger_path.read_text().splitlines() if ledger_path.exists() else []
    if (not ledger_path.exists() and metrics is None and cfg["privacy"].mode == "record"
            and any(d.rows for d in devices)):
        # a simulation collects its devices' ledgers when it finishes: until then, theirs
        fail(findings, "the run has not finished: its ledger is not collected yet, so the "
                       "devices' own ledgers are audited", severity="note")
        texts = [text for d in devices for _, text in d.rows]
    ledger = parse_ledger(enumerate(texts, start=1), findings, repeat_severity, every)
    plan = read_json(run_dir / "plan.json", findings)
    if plan is not None and not all(isinstance(plan.get(k), dict) for k in ("config", "privacy")):
        fail(findings, "plan.json is no run plan (its config and privacy are not objects)")
        plan = None
    rounds = read_rounds(read_jsonl(run_dir / "rounds.jsonl", findings, torn_ok=metrics is None),
                         findings)
    return RunRecords(
        run_dir, cfg, cfg["privacy"], cfg["federation"],
        tomllib.loads((run_dir / "config.toml").read_text()), plan, ledger_path.exists(),
        ledger, every, rounds, metrics,
        read_jsonl(run_dir / "metrics.jsonl", findings, torn_ok=metrics is None), devices)


COUNTS = ("sampled", "completed", "failed", "rejected", "declined", "clients_exhausted")


def read_rounds(rows: list[dict], findings: list) -> list[dict]:
    """rounds.jsonl's lines with a round number (others are failures), each count an integer
    ≥ 0 or None (another value is a failure)."""
    out = []
    for r in rows:
        n = r.get("round")
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            fail(findings, f"rounds.jsonl line {r['_line']}: round {n!r} is no round number")
            continue
        for key in COUNTS:
            value = r.get(key)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                          and value >= 0):
                fail(findings, f"rounds.jsonl round {n}: {key} = {value!r} is no count")
                r[key] = None
        out.append(r)
    return out


def read_config(path: Path) -> dict:
    """The run's effective config.toml as a dict, its privacy section as a `PrivacyConfig`
    (read directly: `fedrec.common.config` would import the model, and with it torch)."""
    try:
        data = tomllib.loads(path.read_text())
        data["privacy"] = privacy.PrivacyConfig(**data.get("privacy", {})).validate()
        data.setdefault("federation", {})
        for key in ("rounds", "clients_per_round", "local_epochs"):
            value = data["federation"].get(key, 1)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"federation.{key} = {value!r}; expected a whole number ≥ 1")
    except (tomllib.TOMLDecodeError, TypeError, AttributeError, ConfigError) as exc:
        raise ConfigError(f"{path}: not a fedrec run config ({exc})") from None
    return data


def read_json(path: Path, findings: list) -> dict | None:
    """A JSON file's object (None: no such file). A file that is no JSON object is a failure."""
    if not path.exists():
        return None
    try:
        value = loads(path.read_text(), findings, path.name)
    except json.JSONDecodeError as exc:
        fail(findings, f"{path.name} is not JSON ({exc})")
        return None
    if not isinstance(value, dict):
        fail(findings, f"{path.name} is not a JSON object")
        return None
    return value


def read_jsonl(path: Path, findings: list, torn_ok: bool) -> list[dict]:
    """A JSON-lines file's objects, each with its line number under "_line" where it has no
    "line" of its own. A torn last line is a note while `torn_ok` (a killed run leaves one)."""
    if not path.exists():
        return []
    texts = [(n, t) for n, t in enumerate(path.read_text().splitlines(), start=1) if t.strip()]
    out = []
    for i, (number, text) in enumerate(texts):
        try:
            value = loads(text, findings, f"{path.name} line {number}", None)
        except json.JSONDecodeError:
            last = i == len(texts) - 1
            fail(findings, f"{path.name} line {number} is not JSON"
                 + (" (torn: the run was killed while writing it)" if last and torn_ok else ""),
                 severity="note" if last and torn_ok else "failure")
            continue
        if not isinstance(value, dict):
            fail(findings, f"{path.name} line {number} is not a JSON object")
            continue
        out.append({**value, "_line": number})
    return out


def parse_ledger(numbered_texts, findings: list, repeat_severity: str = "note",
                 every: list | None = None) -> list[dict]:
    """Ledger entries of `numbered_texts` [(number, JSON text), ...], each with its number as
    "line"; identical repeats dropped (a device that crashed between writing a line and
    marking it written repeats it: one release — a finding of `repeat_severity`). A file's
    lines or a device store's rows. `every`: a list that receives every entry, repeats too."""
    seen, out = set(), []
    for number, text in numbered_texts:
        if not text.strip():
            continue
        try:
            line = loads(text, findings, "ledger line", number)
        except json.JSONDecodeError:
            fail(findings, "not a JSON line", number)
            continue
        if not isinstance(line, dict) or not REQUIRED <= set(line):
            keys = set(line) if isinstance(line, dict) else set()
            fail(findings, f"not a ledger entry (missing {sorted(REQUIRED - keys)})", number)
            continue
        if every is not None:
            every.append({**line, "line": number})
        key = json.dumps(line, sort_keys=True)
        if key in seen:
            fail(findings, "identical repeat of an earlier line" + (
                " (a crash artifact: counted once)" if repeat_severity == "note" else
                ": the server writes each release once"), number, severity=repeat_severity)
            continue
        seen.add(key)
        out.append({**line, "line": number})
    return out


def read_device(path: Path) -> DeviceRecords:
    """One device store, read-only (`fedrec.audit.device.DeviceStoreReader`); a store that
    cannot be read keeps the reason in `error`."""
    from fedrec.audit import device

    record = DeviceRecords(Path(path), Path(path).stem)
    try:
        with device.DeviceStoreReader(path) as store:
            record.account, record.pseudonym = store.account(), store.pseudonym()
            record.rows = [(seq, str(text)) for seq, text in store.ledger_rows()]
            record.personal_rounds = store.personal_rounds()
    except device.DeviceStoreError as exc:
        record.error = str(exc)
    return record


def canonical(line: dict) -> str:
    """A ledger entry as comparable text (key order and the audit's "line" number ignored)."""
    return json.dumps({k: v for k, v in line.items() if k != "line"}, sort_keys=True)
