"""`fedrec audit RUN_DIR`: what privacy a run promised, what it spent, and whether the numbers
check out — from the run directory alone (config, plan, ledger, rounds, metrics, device
stores, egress log; never user data).

Every ledger ε is recomputed from its line's mechanism parameters and the same client's
earlier lines with an independent accountant (`fedrec.common.crosscheck`, Google's
dp-accounting): by RDP over the same orders, and by privacy-loss distributions. A client is a
device under all its pseudonyms (`fedrec.audit.fleet`). Failures — each makes `fedrec audit`
exit with code 1:

- an ε that differs from the independent value of the run's own accountant by more than 1 %
  (RDP for an `rdp` ledger, PLD for a `prv` one; a deleted or edited line shows up here);
- impossible parameters: σ ≤ 0, q outside (0, 1], steps < 1, δ outside (0, 1), a unit,
  δ or accountant other than the run's, an ε that decreases;
- a release after the budget was spent (an ε above the run's budget);
- a mechanism this run does not run (`fedrec.audit.mechanisms`);
- records that contradict each other (`fedrec.audit.consistency`, `fedrec.audit.fleet`);
- a key given twice in one JSON object (`fedrec.audit.records`);
- an egress-log line outside the run's wire schema.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from fedrec.audit import consistency, fleet, mechanisms, records
from fedrec.audit.mechanisms import fail as _fail
from fedrec.common import crosscheck as independent
from fedrec.common import privacy, wire
from fedrec.common.errors import ConfigError
from fedrec.common.jsonl import read_jsonl as _read_jsonl

# the tolerances, shared with the device audit (`fedrec.audit.mechanisms`)
TOLERANCE, PRV_ABSOLUTE = mechanisms.TOLERANCE, mechanisms.PRV_ABSOLUTE
ACCOUNTANTS_AGREE, MAX_STEPS = mechanisms.ACCOUNTANTS_AGREE, mechanisms.MAX_STEPS
parse_ledger = records.parse_ledger


def audit(run_dir: Path, egress_log: Path | None = None) -> dict:
    """The audit of one run directory as plain data (see `fedrec.audit.report`)."""
    run_dir = Path(run_dir)
    findings: list[dict] = []
    rec = records.read_run(run_dir, findings)
    p, fed, plan = rec.privacy, rec.federation, rec.plan or {}
    clients_total = plan.get("num_clients")
    if not mechanisms.integer(clients_total):
        clients_total = _clients_total(rec.metrics_lines)
    resolved = plan.get("privacy") or {}
    sigma = p.noise_multiplier or (resolved.get("noise_multiplier") if p.mode == "user" else 0)
    result = {
        "run": str(run_dir),
        "promise": {
            "unit": p.mode, "epsilon": p.epsilon if p.enabled else None,
            "delta": p.delta if p.enabled else None,
            "accountant": p.accountant if p.enabled else None,
            "noise_multiplier": sigma or ("derived" if p.enabled else None),
            "max_grad_norm": p.max_grad_norm if p.enabled else None,
            "record_window": p.window if p.mode == "record" else None,
            "rounds": fed.get("rounds"), "clients_per_round": fed.get("clients_per_round"),
            "secure_aggregation": fed.get("secagg", False), "dataset": rec.config.get("dataset"),
        },
        "rounds_run": len(rec.rounds),
        "clients_total": clients_total,
        "utility": _utility(rec.metrics),
    }
    consistency.check_config(rec, findings)
    consistency.check_rounds(rec, findings)
    checked, after = [], None
    if p.enabled:
        checked, after = _check_privacy(rec, clients_total, findings)
    result["crosscheck"] = _crosscheck_summary(checked, p)
    result["spent"] = _spent(checked, p, clients_total, rec, after)
    result["egress"] = _egress(run_dir, egress_log, findings)
    facts = run_dir / "anonymization.json"
    result["anonymization"] = json.loads(facts.read_text()) if facts.exists() else None
    result["findings"] = findings
    result["verdict"] = "fail" if any(f["severity"] == "failure" for f in findings) else "pass"
    return result


def _check_privacy(rec, clients_total: int | None, findings: list) -> tuple[list, int | None]:
    """The ledger recomputed and checked against every other record of a DP run; returns the
    checked rows and the round after which the budget ran out (user level; None: it did not)."""
    p = rec.privacy
    # lines without a name and a round number fail `_valid`; the other checks skip them
    named = [x for x in rec.ledger if isinstance(x["client"], str) and _integer(x["round"])]
    owner = fleet.identities(rec, findings) if p.mode == "record" else {}
    if p.mode == "record" and not any(d.rows for d in rec.devices):
        identity = fleet.infer_rotations(named, p, findings)
    else:
        identity = _first_names(named, owner)
    checked = crosscheck(rec.ledger, p, findings, identity)
    summary = rec.summary
    on_devices = summary.get("ledger") == "on the devices" and not rec.devices
    if any(r.get("aggregated") is True for r in rec.rounds) and not checked and not on_devices:
        _fail(findings, "a DP run with aggregated rounds has no valid ledger line")
    counted = summary.get("releases")
    if not rec.ledger and mechanisms.integer(counted) and counted > 0:
        _fail(findings, f"the ledger is {'empty' if rec.ledger_file else 'missing'}, but "
                        f"metrics.json counts {counted} releases")
    sigma = mechanisms.check(checked, p, rec.federation, clients_total, findings, rec.plan,
                             rec.rounds)
    planned = ((rec.plan or {}).get("privacy") or {}).get("noise_multiplier")
    if sigma is None and p.mode == "user" and _number(planned) and planned > 0:
        sigma = p.noise_multiplier or planned  # no release yet: the plan's σ
    fleet.check_devices(rec, named, owner, findings)
    consistency.check_releases(rec, named, identity, findings)
    consistency.check_summary(rec, rec.ledger, findings)
    after = consistency.budget_ran_out(rec, findings)
    history = [((r["noise_multiplier"], r["sample_rate"], r["steps"]), r["round"])
               for r in checked if r["client"] == "server"]
    consistency.check_blocked(rec, history, sigma, findings)
    return checked, after


def _first_names(lines: list[dict], owner: dict[str, str]) -> dict[str, str]:
    """Pseudonym -> the first pseudonym its device (`owner`) used in the ledger: one name for
    each client, whatever it rotated to."""
    first: dict[str, str] = {}
    out: dict[str, str] = {}
    for line in lines:
        key = owner.get(line["client"])
        if key is not None:
            out[line["client"]] = first.setdefault(key, line["client"])
    return out


def _valid(line: dict, p, findings: list, whose: str = "the run's") -> bool:
    """False (and a finding) for a line whose parameters no mechanism can have, or whose unit,
    δ or accountant is not `whose` (`p`)."""
    n = line["line"]
    checks = [
        (mechanisms.valid_sigma(line["noise_multiplier"]),
         f"σ must be in [{mechanisms.SIGMA_MIN:g}, {privacy.NOISE_MULTIPLIER_MAX:g}] (below, one "
         "release alone spends ε > 280 and the independent accountants cannot resolve it; "
         "above, no budget is reached)"),
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


def crosscheck(lines: list[dict], p, findings: list,
               identity: dict[str, str] | None = None) -> list[dict]:
    """Each valid line with its independent ε (RDP and PLD) and relative differences; adds a
    finding per disagreement over TOLERANCE, decreasing ε, backward round and over-budget
    release. A client's lines are those of its pseudonym and, by `identity` (pseudonym -> the
    client's first pseudonym), of its other pseudonyms: one history, one cumulative ε."""
    identity = identity or {}
    by_client: dict[str, list[dict]] = {}
    for line in lines:
        if p.mode == "user" and line["client"] != "server":
            _fail(findings, f"a user-level ledger line from {line['client']!r}: only the server "
                            "releases aggregates", line["line"])
            continue
        name = str(line["client"])
        by_client.setdefault(identity.get(name, name), []).append(line)
    out = []
    for client, client_lines in by_client.items():
        out += _crosscheck_client(client, client_lines, p, findings)
    return out


def _crosscheck_client(client: str, lines: list[dict], p, findings: list) -> list[dict]:
    history: list[tuple] = []
    out, last_eps, last_round = [], -math.inf, -math.inf
    for i, line in enumerate(lines):
        if not _valid(line, p, findings):
            continue
        history.append((float(line["noise_multiplier"]), float(line["sample_rate"]),
                        int(line["steps"])))
        rdp = independent.rdp_epsilon(history, line["delta"])
        # PLD is slow: every line of a `prv` ledger, else each client's last line
        last = i == len(lines) - 1
        pld = (independent.pld_epsilon(history, line["delta"], fine=p.accountant == "prv")
               if p.accountant == "prv" or last else None)
        name, reference = line["client"], mechanisms.reference_epsilon(rdp, pld, p)
        row = mechanisms.crosscheck_line(line, rdp, pld, p, findings,
                                         f"of client {name} in round {line['round']}")
        out.append({**row, "identity": client})
        if line["epsilon"] < last_eps - 1e-12:
            _fail(findings, f"ε of client {name} decreases in round {line['round']}",
                  line["line"])
        if line["round"] < last_round:  # a resumed run redoes rounds
            _fail(findings, f"client {name}: round {line['round']} after round {last_round} (a "
                            "resumed run redoing rounds)", line["line"], severity="note")
        spent = max(line["epsilon"], reference / (1 + ACCOUNTANTS_AGREE))
        if spent > p.epsilon * (1 + 1e-9):
            _fail(findings, f"client {name} released in round {line['round']} at ε "
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


def _spent(rows: list[dict], p, clients_total: int | None, rec, after: int | None) -> dict:
    if not p.enabled:
        return {"unit": "off"}
    if p.mode == "user":
        by_round = [[r["round"], r["epsilon"], r["noise_multiplier"]] for r in rows
                    if r["client"] == "server"]
        blocked = sum(r.get("budget_exhausted") is True for r in rec.rounds)
        return {"unit": "user", "epsilon": by_round[-1][1] if by_round else 0.0,
                "budget": p.epsilon, "epsilon_by_round": by_round,
                "budget_exhausted_after_round": after, "rounds_blocked_by_budget": blocked}
    final: dict[str, float] = {}
    by_round: dict[int, dict[str, float]] = {}
    for r in rows:
        final[r["identity"]] = r["epsilon"]
        by_round.setdefault(r["round"], {})[r["identity"]] = r["epsilon"]
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
        "pseudonyms_rotated": sum(r["client"] != r["identity"] for r in rows),
    }


def _histories(rows):
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r["identity"], []).append((r["noise_multiplier"], r["sample_rate"],
                                                r["steps"]))
    return out


def _would_exceed(history, p) -> bool:
    """A client is at its cap when one more release like its last would exceed the budget."""
    epsilon = (independent.rdp_epsilon if p.accountant == "rdp" else independent.pld_epsilon)
    return epsilon([*history, history[-1]], p.delta) > p.epsilon


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


def _clients_total(metrics_lines: list[dict]) -> int | None:
    """The population, where the run has no plan: the last evaluation's number of users."""
    for line in reversed(metrics_lines):
        if mechanisms.integer(line.get("users")):
            return int(line["users"])
    return None


def _utility(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    return {k: metrics[k] for k in ("ndcg@10", "hr@10", "recall@20", "mrr@10") if k in metrics}


# shared with the device audit
_number, _integer = mechanisms.number, mechanisms.integer


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

