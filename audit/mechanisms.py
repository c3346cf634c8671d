"""Does each ledger line describe the mechanism this run's code would have run?

ε alone can be recomputed after an edit; the mechanism's structure cannot be faked so easily:

- record level: a device's σ is fixed at its first release; q = 1/k for a whole number k of
  batches, and steps = local_epochs · k (`fedrec.client.dp.plan`); σ is the run's fixed
  `noise_multiplier`, or the one that spends exactly the budget over the planned
  participations (`fedrec.common.privacy.resolve`, `noise_for_epsilon`);
- user level: one step per aggregate at q = m / N for a cohort of m of N clients, and
  σ_round = σ·√(m′/m) for the m′ ≤ m clients that reported (the fixed-denominator mean), with σ
  the fixed one or the one that spends the budget over the planned rounds.

The budget checks use the independent accountant (`fedrec.common.crosscheck`).
"""

from __future__ import annotations

import math

from fedrec.common import crosscheck, privacy

PLANNED_WINDOW = (0.97, 1.003)  # σ is found to 0.1 % in ε, the accountants agree to 0.2 %


def check(rows: list[dict], p, fed: dict, clients_total: int | None, findings: list) -> None:
    if not rows:
        return
    if p.mode == "record":
        _record(rows, p, fed, clients_total, findings)
    elif p.mode == "user":
        _user([r for r in rows if r["client"] == "server"], p, fed, clients_total, findings)


def fail(findings: list, what: str, line: int | None = None, severity: str = "failure"):
    """Add a finding: severity 'failure' (fails the audit), 'warning' or 'note'."""
    findings.append({"severity": severity, "what": what, "line": line})


def _spends_budget(sigma: float, q: float, steps: int, p) -> bool:
    epsilon = (crosscheck.rdp_epsilon if p.accountant == "rdp" else crosscheck.pld_epsilon)
    planned = epsilon([(sigma, q, steps)], p.delta)
    low, high = PLANNED_WINDOW
    slack = 0.02 if p.accountant == "prv" else 0.0  # PLD vs PRV: a little looser
    return (low - slack) * p.epsilon <= planned <= (high + slack) * p.epsilon


def _record(rows, p, fed, clients_total, findings) -> None:
    epochs = int(fed.get("local_epochs", 2))
    planned = p.planned_rounds
    if not planned and clients_total:
        cohort = min(int(fed.get("clients_per_round", 1)), clients_total)
        planned = privacy.planned_participations(int(fed.get("rounds", 1)), cohort, clients_total)
    first: dict[str, dict] = {}
    checked_sigma: dict[tuple, bool] = {}
    for r in rows:
        k = round(1 / r["sample_rate"])
        if abs(1 / r["sample_rate"] - k) > 1e-6 * k or r["steps"] != epochs * k:
            fail(findings, f"client {r['client']} round {r['round']}: q = {r['sample_rate']:g} "
                            f"and {r['steps']} steps are no DP-SGD plan (q = 1/k batches, "
                            f"steps = {epochs}·k)", r["line"])
        head = first.setdefault(r["client"], r)
        if p.noise_multiplier and not math.isclose(r["noise_multiplier"], p.noise_multiplier,
                                                   rel_tol=1e-9):
            fail(findings, f"client {r['client']} round {r['round']}: σ "
                            f"{r['noise_multiplier']:g}, but the run fixed σ = "
                            f"{p.noise_multiplier:g}", r["line"])
        if r["noise_multiplier"] != head["noise_multiplier"]:
            fail(findings, f"client {r['client']}: σ changed from {head['noise_multiplier']:g} "
                            f"to {r['noise_multiplier']:g} in round {r['round']} (a device "
                            "keeps its σ)", r["line"])
    for client, head in first.items():
        sigma = head["noise_multiplier"]
        if p.noise_multiplier or not planned:  # fixed σ: checked per line above
            continue  # the planned participations need the number of clients
        key = (sigma, head["sample_rate"], head["steps"])
        if key not in checked_sigma:
            checked_sigma[key] = _spends_budget(sigma, head["sample_rate"],
                                                planned * head["steps"], p)
        if not checked_sigma[key]:
            fail(findings, f"client {client}: σ {sigma:g} at q = {head['sample_rate']:g} does "
                            f"not spend the budget ε = {p.epsilon:g} over the {planned} planned "
                            "participations: not the σ this run derives", head["line"])


def _user(rows, p, fed, clients_total, findings) -> None:
    if not rows:
        return
    cohort = int(fed.get("clients_per_round", 1))
    m = min(cohort, clients_total) if clients_total else cohort
    for r in rows:
        if r["steps"] != 1:
            fail(findings, f"round {r['round']}: {r['steps']} steps; an aggregate is one",
                  r["line"])
    qs = {r["sample_rate"] for r in rows}
    if len(qs) > 1 or (clients_total and not math.isclose(qs.pop(), m / clients_total,
                                                          rel_tol=1e-9)):
        fail(findings, f"sampling rates {sorted({r['sample_rate'] for r in rows})}: expected "
                        f"one, m/N = {m}/{clients_total}")
    reference = p.noise_multiplier or max(r["noise_multiplier"] for r in rows)
    if not p.noise_multiplier and not _spends_budget(reference, rows[0]["sample_rate"],
                                                     int(fed.get("rounds", 1)), p):
        fail(findings, f"σ {reference:g} does not spend the budget ε = {p.epsilon:g} over "
                        f"{fed.get('rounds')} rounds: not the σ this run derives")
    for r in rows:
        reported = (r["noise_multiplier"] / reference) ** 2 * m
        if not (0.5 <= reported <= m + 1e-6 and abs(reported - round(reported)) < 1e-6):
            fail(findings, f"round {r['round']}: σ {r['noise_multiplier']:g} is no σ·√(m′/m) "
                            f"of σ = {reference:g} for a cohort of {m}", r["line"])
