"""`fedrec audit RUN_DIR`: what privacy a run promised, what it spent, and whether the numbers
check out — from the run directory alone (config, ledger, rounds, egress log; never user data).

Every ledger ε is recomputed from its line's mechanism parameters and the same client's
earlier lines with an independent accountant (`fedrec.common.crosscheck`, Google's
dp-accounting): by RDP over the same orders, and by privacy-loss distributions. Failures —
each makes `fedrec audit` exit with code 1:

- an ε that differs from the independent value of the run's own accountant by more than 1 %
  (RDP for an `rdp` ledger, PLD for a `prv` one; a deleted or edited line shows up here);
- impossible parameters: σ ≤ 0, q outside (0, 1], steps < 1, δ outside (0, 1), a unit,
  δ or accountant other than the run's, an ε that decreases;
- a release after the budget was spent (an ε above the run's budget);
- a user-level round that was aggregated but has no ledger line;
- an egress-log line outside the run's wire schema.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from fedrec.audit import device, mechanisms
from fedrec.audit.mechanisms import fail as _fail
from fedrec.common import crosscheck as independent
from fedrec.common import privacy, wire
from fedrec.common.errors import ConfigError, RunDirError
from fedrec.common.jsonl import read_jsonl as _read_jsonl

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TOLERANCE = 0.01  # relative disagreement allowed between the ledger and dp-accounting
PRV_ABSOLUTE = 0.005  # Opacus' PRV accountant is exact to ±0.002 in ε: small ε need slack
ACCOUNTANTS_AGREE = 0.003  # Opacus and dp-accounting RDP differ by up to 0.2 %
MAX_STEPS = 10**7  # more steps than any device takes: refused before any accountant runs
REQUIRED = set(privacy.LEDGER_KEYS)


def audit(run_dir: Path, egress_log: Path | None = None) -> dict:
    """The audit of one run directory as plain data (see `fedrec.audit.report`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").exists():
        raise RunDirError(f"{run_dir}: not a run directory (no config.toml)")
    cfg = _run_config(run_dir / "config.toml")
    p, fed = cfg["privacy"], cfg["federation"]
    findings: list[dict] = []
    lines = _read_ledger(run_dir / "privacy" / "ledger.jsonl", findings)
    rounds = _read_jsonl(run_dir / "rounds.jsonl")
    result = {
        "run": str(run_dir),
        "promise": {
            "unit": p.mode, "epsilon": p.epsilon if p.enabled else None,
            "delta": p.delta if p.enabled else None,
            "accountant": p.accountant if p.enabled else None,
            "noise_multiplier": p.noise_multiplier or ("derived" if p.enabled else None),
            "max_grad_norm": p.max_grad_norm if p.enabled else None,
            "record_window": p.window if p.mode == "record" else None,
            "rounds": fed.get("rounds"), "clients_per_round": fed.get("clients_per_round"),
            "secure_aggregation": fed.get("secagg", False), "dataset": cfg.get("dataset"),
        },
        "rounds_run": len(rounds),
        "clients_total": _clients_total(run_dir),
        "utility": _utility(run_dir),
    }
    checked = crosscheck(lines, p, findings) if p.enabled else []
    result["crosscheck"] = _crosscheck_summary(checked, p)
    result["spent"] = _spent(checked, p, result["clients_total"])
    if p.enabled:
        released = any(r.get("aggregated") and r.get("completed", 1) for r in rounds)
        if released and not checked:
            _fail(findings, "a DP run with aggregated rounds has no valid ledger line")
        mechanisms.check(checked, p, fed, result["clients_total"], findings)
        _check_devices(run_dir, checked, findings)
    if p.mode == "user":
        _check_user_rounds(checked, rounds, findings)
    result["egress"] = _egress(run_dir, egress_log, findings)
    facts = run_dir / "anonymization.json"
    result["anonymization"] = json.loads(facts.read_text()) if facts.exists() else None
    result["findings"] = findings
    result["verdict"] = "fail" if any(f["severity"] == "failure" for f in findings) else "pass"
    return result


def _run_config(path: Path) -> dict:
    """The run's effective config.toml as a dict, its privacy section as a `PrivacyConfig`
    (read directly: `fedrec.common.config` would import the model, and with it torch)."""
    try:
        data = tomllib.loads(path.read_text())
        data["privacy"] = privacy.PrivacyConfig(**data.get("privacy", {}))
    except (tomllib.TOMLDecodeError, TypeError) as exc:
        raise ConfigError(f"{path}: not a fedrec run config ({exc})") from None
    data.setdefault("federation", {})
    return data


def _read_ledger(path: Path, findings: list) -> list[dict]:
    """The ledger file's lines (see `parse_ledger`), numbered from 1."""
    if not path.exists():
        return []
    return parse_ledger(enumerate(path.read_text().splitlines(), start=1), findings)


def parse_ledger(numbered_texts, findings: list) -> list[dict]:
    """Ledger entries of `numbered_texts` [(number, JSON text), ...], each with its number as
    "line"; identical repeats dropped (a device that crashed between writing a line and
    marking it written repeats it: one release). A file's lines or a device store's rows."""
    seen, out = set(), []
    for number, text in numbered_texts:
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            _fail(findings, "not a JSON line", number)
            continue
        if not isinstance(line, dict) or not REQUIRED <= set(line):
            keys = set(line) if isinstance(line, dict) else set()
            _fail(findings, f"not a ledger entry (missing {sorted(REQUIRED - keys)})", number)
            continue
        key = json.dumps(line, sort_keys=True)
        if key in seen:
            _fail(findings, "identical repeat of an earlier line (a crash artifact: counted "
                            "once)", number, severity="note")
            continue
        seen.add(key)
        out.append({**line, "line": number})
    return out


def _valid(line: dict, p, findings: list, whose: str = "the run's") -> bool:
    """False (and a finding) for a line whose parameters no mechanism can have, or whose unit,
    δ or accountant is not `whose` (`p`)."""
    n = line["line"]
    checks = [
        (_number(line["noise_multiplier"]) and line["noise_multiplier"] > 0, "σ must be > 0"),
        (_number(line["sample_rate"]) and 0 < line["sample_rate"] <= 1, "q must be in (0, 1]"),
        (_integer(line["steps"]) and 1 <= line["steps"] <= MAX_STEPS,
         f"steps must be an integer in [1, {MAX_STEPS:g}]"),
        (_integer(line["round"]) and line["round"] >= 0, "round must be an integer ≥ 0"),
        (isinstance(line["client"], str) and line["client"], "client must be a name"),
        (_number(line["delta"]) and 0 < line["delta"] < 1, "δ must be in (0, 1)"),
        (_number(line["epsilon"]) and line["epsilon"] >= 0, "ε must be a number ≥ 0"),
    ]
    bad = [why for ok, why in checks if not ok]
    for why in bad:
        _fail(findings, f"impossible parameters: {why} (client {line['client']}, round "
                        f"{line['round']})", n)
    for key, expected in (("unit", p.mode), ("delta", p.delta), ("accountant", p.accountant)):
        if line[key] != expected:
            _fail(findings, f"{key} {line[key]!r} differs from {whose} {expected!r}", n)
    return not bad


def crosscheck(lines: list[dict], p, findings: list) -> list[dict]:
    """Each valid line with its independent ε (RDP and PLD) and relative differences; adds a
    finding per disagreement over TOLERANCE, decreasing ε, backward round and over-budget
    release."""
    by_client: dict[str, list[dict]] = {}
    for line in lines:
        if p.mode == "user" and line["client"] != "server":
            _fail(findings, f"a user-level ledger line from {line['client']!r}: only the server "
                            "releases aggregates", line["line"])
            continue
        by_client.setdefault(str(line["client"]), []).append(line)
    out = []
    for client, client_lines in by_client.items():
        history: list[tuple] = []
        last_eps, last_round = -math.inf, -math.inf
        for i, line in enumerate(client_lines):
            if not _valid(line, p, findings):
                continue
            history.append((float(line["noise_multiplier"]), float(line["sample_rate"]),
                            int(line["steps"])))
            rdp = independent.rdp_epsilon(history, line["delta"])
            # PLD is slow: every line of a `prv` ledger, else each client's last line
            last = i == len(client_lines) - 1
            pld = (independent.pld_epsilon(history, line["delta"], fine=p.accountant == "prv")
                   if p.accountant == "prv" or last else None)
            reference = rdp if p.accountant == "rdp" else pld
            diff = abs(line["epsilon"] - reference) / max(reference, 1e-12)
            slack = max(TOLERANCE * reference, PRV_ABSOLUTE if p.accountant == "prv" else 0.0)
            row = {"client": client, "round": line["round"], "line": line["line"],
                   "epsilon": line["epsilon"], "rdp": rdp, "pld": pld, "difference": diff,
                   "noise_multiplier": line["noise_multiplier"],
                   "sample_rate": line["sample_rate"], "steps": line["steps"]}
            out.append(row)
            if abs(line["epsilon"] - reference) > slack:
                _fail(findings, f"ε {line['epsilon']:.4g} of client {client} in round "
                                f"{line['round']} is not reproducible: dp-accounting "
                                f"({'RDP' if p.accountant == 'rdp' else 'PLD'}) gives "
                                f"{reference:.4g} ({diff:.1%} apart)", line["line"])
            if line["epsilon"] < last_eps - 1e-12:
                _fail(findings, f"ε of client {client} decreases in round {line['round']}",
                      line["line"])
            if line["round"] <= last_round:  # a resumed run redoes rounds: charged again
                _fail(findings, f"client {client}: round {line['round']} again after round "
                                f"{last_round} (a resumed run redoing rounds; charged again)",
                      line["line"], severity="note")
            spent = max(line["epsilon"], reference / (1 + ACCOUNTANTS_AGREE))
            if spent > p.epsilon * (1 + 1e-9):
                _fail(findings, f"client {client} released in round {line['round']} at ε "
                                f"{spent:.4g} (ledger {line['epsilon']:.4g}, dp-accounting "
                                f"{reference:.4g}), over its budget {p.epsilon:g}", line["line"])
            last_eps, last_round = line["epsilon"], line["round"]
    return out


def _crosscheck_summary(rows: list[dict], p) -> dict:
    if not rows:
        return {"lines": 0}
    rdp = np.array([abs(r["epsilon"] - r["rdp"]) / max(r["rdp"], 1e-12) for r in rows])
    pld = np.array([abs(r["epsilon"] - r["pld"]) / max(r["pld"], 1e-12) for r in rows
                    if r["pld"] is not None])
    worst = sorted(rows, key=lambda r: -r["difference"])[:10]
    return {"lines": len(rows), "reference": "RDP" if p.accountant == "rdp" else "PLD",
            "pld_lines": len(pld),
            "max_difference_rdp": float(rdp.max()),
            "max_difference_pld": float(pld.max()) if len(pld) else None,
            "tolerance": TOLERANCE, "largest_differences": worst}


def _spent(rows: list[dict], p, clients_total: int | None) -> dict:
    if not p.enabled:
        return {"unit": "off"}
    if p.mode == "user":
        by_round = [[r["round"], r["epsilon"], r["noise_multiplier"]] for r in rows
                    if r["client"] == "server"]
        return {"unit": "user", "epsilon": by_round[-1][1] if by_round else 0.0,
                "budget": p.epsilon, "epsilon_by_round": by_round}
    final: dict[str, float] = {}
    by_round: dict[int, dict[str, float]] = {}
    for r in rows:
        final[r["client"]] = r["epsilon"]
        by_round.setdefault(r["round"], {})[r["client"]] = r["epsilon"]
    values = np.array(list(final.values())) if final else np.zeros(0)
    at_cap = [c for c, rows_ in _histories(rows).items() if _would_exceed(rows_, p)]
    running: dict[str, float] = {}
    curve = []
    for round_ in sorted(by_round):
        running.update(by_round[round_])
        spent = np.array(list(running.values()))
        curve.append([round_, float(np.median(spent)), float(spent.max())])
    return {
        "unit": "record", "budget": p.epsilon, "clients_released": len(final),
        "never_took_part": None if clients_total is None else clients_total - len(final),
        "epsilon_min": float(values.min()) if len(values) else 0.0,
        "epsilon_median": float(np.median(values)) if len(values) else 0.0,
        "epsilon_max": float(values.max()) if len(values) else 0.0,
        "clients_at_cap": len(at_cap), "epsilon_by_client": final,
        "epsilon_by_round": curve,  # [round, median, max] over clients released so far
    }


def _histories(rows):
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r["client"], []).append((r["noise_multiplier"], r["sample_rate"],
                                                r["steps"]))
    return out


def _would_exceed(history, p) -> bool:
    """A client is at its cap when one more release like its last would exceed the budget."""
    epsilon = (independent.rdp_epsilon if p.accountant == "rdp" else independent.pld_epsilon)
    return epsilon([*history, history[-1]], p.delta) > p.epsilon


def _check_devices(run_dir: Path, rows: list[dict], findings: list) -> None:
    """Where the run directory holds the simulated devices' stores (`clients/NNNNNN.sqlite`,
    read with `fedrec.audit.device`), every release a device's own privacy account charged
    must have its ledger line under the device's pseudonym — only the last may be missing, if
    the device crashed before writing it. Stores without an account (devices that charged
    nothing) are not counted."""
    lines: dict[str, int] = {}
    for r in rows:
        lines[r["client"]] = lines.get(r["client"], 0) + 1
    accounts, known, short = 0, set(), []
    for path in device.store_paths(run_dir):
        try:
            with device.DeviceStoreReader(path) as store:
                state = store.account()
                if state is None:
                    continue
                accounts += 1
                name = store.pseudonym()
            if name is None:
                raise device.DeviceStoreError(f"{path}: no pseudonym")
            history = state.get("history", [])
            last = state.get("last") or {}
            expected = len(history) - (0 if last.get("logged", True) else 1)
        except (device.DeviceStoreError, AttributeError, TypeError):
            _fail(findings, f"{path.stem}: unreadable device account or identity")
            continue
        known.add(name)
        if lines.get(name, 0) < expected:
            short.append((name, len(history), lines.get(name, 0)))
    if not accounts:
        return
    unknown = sorted(set(lines) - known)
    for name in unknown:
        _fail(findings, f"ledger client {name} is no device of this run (a rotated pseudonym, "
                        "or a forged line)", severity="warning")
    # a rotated device's earlier lines carry its old name: a shortfall they can cover is a
    # warning, one they cannot is a failure
    covered = sum(lines[n] for n in unknown)
    missing = sum(charged - found for _, charged, found in short)
    for name, charged, found in short:
        _fail(findings, f"device {name} charged {charged} releases; the ledger has {found}",
              severity="failure" if missing > covered else "warning")


def _check_user_rounds(rows: list[dict], rounds: list[dict], findings: list) -> None:
    charged = {r["round"] for r in rows if r["client"] == "server"}
    for r in rounds:
        if r.get("aggregated") and r["round"] not in charged:
            _fail(findings, f"round {r['round']} was aggregated but has no ledger line")


def _egress(run_dir: Path, egress_log: Path | None, findings: list) -> dict | None:
    path = egress_log or (run_dir / "egress.jsonl")
    schema_path = run_dir / "wire-schema.json"
    if not Path(path).exists():
        if egress_log is not None:
            raise ConfigError(f"--egress-log {egress_log}: no such file")
        return None
    if not schema_path.exists():
        _fail(findings, "the run has an egress log but no wire-schema.json to check it against")
        return None
    schema = wire.WireSchema.from_json(schema_path.read_text())
    entries = _read_jsonl(Path(path))  # a torn last line (a killed client) is skipped
    summary = wire.check_log(entries, schema)
    for number, code, _detail in summary["violations"][:50]:
        _fail(findings, f"egress log line {number}: {code} (outside the wire schema)")
    summary["path"] = str(path)
    summary["violations"] = len(summary["violations"])
    return summary


def _clients_total(run_dir: Path) -> int | None:
    for line in reversed(_read_jsonl(run_dir / "metrics.jsonl")):
        if "users" in line:
            return int(line["users"])
    return None


def _utility(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    if not path.exists():
        return None
    final = json.loads(path.read_text())
    return {k: final[k] for k in ("ndcg@10", "hr@10", "recall@20", "mrr@10") if k in final}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_sweep(path: Path) -> bool:
    """A directory of run directories (e.g. a benchmark's privacy sweep)."""
    path = Path(path)
    return not (path / "config.toml").exists() and any(
        (d / "config.toml").exists() for d in path.iterdir() if d.is_dir())


def audit_sweep(path: Path) -> dict:
    """Each run of a sweep audited, plus utility against ε spent."""
    runs = [audit(d) for d in sorted(Path(path).iterdir()) if (d / "config.toml").exists()]
    points = []
    for r in runs:
        spent = r["spent"]
        eps = spent.get("epsilon", spent.get("epsilon_max"))
        if r["utility"] and "ndcg@10" in r["utility"]:
            points.append({"run": Path(r["run"]).name, "unit": spent["unit"],
                           "epsilon": eps, "ndcg@10": r["utility"]["ndcg@10"]})
    verdict = "fail" if any(r["verdict"] == "fail" for r in runs) else "pass"
    return {"sweep": str(path), "runs": runs, "utility_vs_epsilon": points, "verdict": verdict}

