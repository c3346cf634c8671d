"""Does each ledger line describe the mechanism this run's code would have run?

ε alone can be recomputed after an edit; the mechanism's structure cannot be faked so easily:

- record level: a device's σ is fixed at its first release; q = 1/k for a whole number k of
  batches, and steps = local_epochs · k (`fedrec.client.dp.plan`); σ is the run's fixed
  `noise_multiplier`, or the one that spends exactly the budget over the planned
  participations (`fedrec.common.privacy.resolve`, `noise_for_epsilon`);
- user level: one step per aggregate at q = m / N for a cohort of m of N clients, and
  σ_round = σ·√(m′/m) for the m′ ≤ m clients that reported (the fixed-denominator mean), with σ
  the fixed one or the one that spends the budget over the planned rounds. σ is the run
  plan's (`plan.json`), and m′ the round's own count (`rounds.jsonl`'s `noise_shortfall` =
  1 − m′/m): the logged σ of a round with dropouts is already reduced, so neither the
  largest logged σ nor any other logged one need be σ itself.

The budget checks use the independent accountant (`fedrec.common.crosscheck`); the shared
tolerances and number checks of the audit live here too.
"""

from __future__ import annotations

import math

from fedrec.common import crosscheck, privacy

PLANNED_WINDOW = (0.97, 1.003)  # σ is found to 0.1 % in ε, the accountants agree to 0.2 %
TOLERANCE = 0.01  # relative disagreement allowed between the ledger and dp-accounting
PRV_ABSOLUTE = 0.005  # Opacus' PRV accountant is exact to ±0.002 in ε: small ε need slack
ACCOUNTANTS_AGREE = 0.003  # Opacus and dp-accounting RDP differ by up to 0.2 %
SIGMA_MIN = 0.05  # below: ε > 280 per release, and dp-accounting's PLD cannot discretize it
MAX_STEPS = 10**7  # more steps than any device takes: refused before any accountant runs


def check(rows: list[dict], p, fed: dict, clients_total: int | None, findings: list,
          plan: dict | None = None, rounds: list[dict] | None = None) -> float | None:
    """Findings for ledger rows (`fedrec.audit.run.crosscheck`'s) whose mechanism this run
    does not run. `plan`: the run plan (plan.json), `rounds`: rounds.jsonl, where present.
    Returns the user-level base σ the rows were checked against (None: record level)."""
    resolved = (plan or {}).get("privacy") or {}
    if p.mode == "record" and rows:
        planned = resolved.get("planned_rounds")
        planned = planned if integer(planned) and planned >= 1 else None
        if distributed(p, fed):
            _distributed(rows, p, fed, clients_total, findings, resolved, planned)
        else:
            _record(rows, p, fed, clients_total, findings, planned)
    elif p.mode == "user":
        shortfalls = {r["round"]: r["noise_shortfall"] for r in rounds or []
                      if number(r.get("noise_shortfall"))}
        return _user([r for r in rows if r["client"] == "server"], p, fed, clients_total,
                     findings, resolved.get("noise_multiplier"), shortfalls)
    return None


def fail(findings: list, what: str, line: int | None = None, severity: str = "failure"):
    """Add a finding: severity 'failure' (fails the audit), 'warning' or 'note'."""
    findings.append({"severity": severity, "what": what, "line": line})


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def valid_sigma(v) -> bool:
    """Whether `v` is a σ the audit can recompute: a number in [SIGMA_MIN, σ_max]."""
    return number(v) and SIGMA_MIN <= v <= privacy.NOISE_MULTIPLIER_MAX


def integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def epsilon_of(history, p) -> float:
    """ε of `history` [(σ, q, steps), ...] at the run's δ by the independent accountant that
    matches the run's own (RDP for `rdp`, PLD for `prv`)."""
    epsilon = (crosscheck.rdp_epsilon if p.accountant == "rdp" else crosscheck.pld_epsilon)
    return epsilon(history, p.delta)


def reproduces(epsilon: float, reference: float, p) -> bool:
    """Whether a logged ε is the independent `reference` within the audit's tolerance."""
    slack = max(TOLERANCE * reference, PRV_ABSOLUTE if p.accountant == "prv" else 0.0)
    return abs(epsilon - reference) <= slack


def reference_epsilon(rdp: float, pld: float | None, p) -> float:
    """The independent ε a logged one is compared with: dp-accounting under the run's
    accountant (RDP for `rdp`, PLD for `prv`)."""
    return rdp if p.accountant == "rdp" else pld


def crosscheck_line(line: dict, rdp: float, pld: float | None, p, findings: list,
                    who: str, history: str = "") -> dict:
    """The recomputation row of ledger `line` (its ε against `reference_epsilon`), adding a
    failure when it is not reproducible. `who`: how the finding names the release ("in round
    3", "of client c-… in round 3"); `history`: what the ε was recomputed from."""
    reference = reference_epsilon(rdp, pld, p)
    diff = abs(line["epsilon"] - reference) / max(reference, 1e-12)
    if not reproduces(line["epsilon"], reference, p):
        fail(findings, f"ε {line['epsilon']:.4g} {who} is not reproducible{history}: "
                       f"dp-accounting ({'RDP' if p.accountant == 'rdp' else 'PLD'}) gives "
                       f"{reference:.4g} ({diff:.1%} apart)", line["line"])
    return {"client": line["client"], "round": line["round"], "line": line["line"],
            "epsilon": line["epsilon"], "rdp": rdp, "pld": pld, "difference": diff,
            "noise_multiplier": line["noise_multiplier"], "sample_rate": line["sample_rate"],
            "steps": line["steps"]}


def _spends_budget(sigma: float, q: float, steps: int, p) -> bool:
    planned = epsilon_of([(sigma, q, steps)], p)
    low, high = PLANNED_WINDOW
    slack = 0.02 if p.accountant == "prv" else 0.0  # PLD vs PRV: a little looser
    return (low - slack) * p.epsilon <= planned <= (high + slack) * p.epsilon


def distributed(p, fed: dict) -> bool:
    """Whether the run's config asks for distributed record-level noise (each device a share,
    summed by SecAgg+): `noise = "distributed"`, or "auto" with SecAgg+ and one local SGD step
    (`fedrec.common.config.RunConfig.record_noise`, re-derived here from config.toml)."""
    if p.noise != "auto":
        return p.noise == "distributed"
    return (bool(fed.get("secagg")) and fed.get("local_optimizer", "sgd") == "sgd"
            and int(fed.get("local_steps", 1)) == 1)


def _distributed(rows, p, fed, clients_total, findings, resolved: dict,
                 planned: int | None) -> None:
    """Distributed record-level noise: every release is one step at the records' Poisson
    rate, with the one σ of the run; that σ spends the budget over the planned
    participations; SecAgg+ is on, and the shares are sized for the honest clients it
    guarantees (so the sum carries at least σC)."""
    cohort = min(int(fed.get("clients_per_round", 1)), clients_total or 10**9)
    if not fed.get("secagg"):
        fail(findings, "distributed noise shares without SecAgg+: the server saw each device's "
                       "update with only its share of the noise")
    honest = privacy.honest_shares(cohort, float(fed.get("secagg_dropout", 0.2)),
                                   float(fed.get("secagg_corruption", 0.05)))[1]
    shares = resolved.get("shares", p.shares)
    if not integer(shares) or not 1 <= shares <= honest:
        fail(findings, f"noise shares sized for {shares} honest clients, but SecAgg+ over "
                       f"{cohort} clients guarantees only {honest}: the sum can carry less "
                       "noise than was charged")
    if not planned and clients_total:
        planned = privacy.planned_participations(int(fed.get("rounds", 1)), cohort,
                                                 clients_total)
    sigmas = {r["noise_multiplier"] for r in rows}
    for r in rows:
        if r["steps"] != 1 or not math.isclose(r["sample_rate"], p.sample_rate, rel_tol=1e-9):
            fail(findings, f"client {r['client']} round {r['round']}: q = {r['sample_rate']:g} "
                            f"and {r['steps']} steps; a participation is one step at the "
                            f"records' rate q = {p.sample_rate:g}", r["line"])
    if len(sigmas) > 1:
        fail(findings, f"devices used different σ {sorted(sigmas)}: their shares add up to "
                       "σC only when all use the run's one σ")
    sigma = max(sigmas)
    if p.noise_multiplier:
        if not math.isclose(sigma, p.noise_multiplier, rel_tol=1e-9):
            fail(findings, f"σ {sigma:g}, but the run fixed σ = {p.noise_multiplier:g}")
    elif planned and not _spends_budget(sigma, p.sample_rate, planned, p):
        fail(findings, f"σ {sigma:g} at q = {p.sample_rate:g} does not spend the budget ε = "
                        f"{p.epsilon:g} over the {planned} planned participations: not the σ "
                        "this run derives")


def _record(rows, p, fed, clients_total, findings, planned: int | None = None) -> None:
    epochs = int(fed.get("local_epochs", 2))
    planned = planned or p.planned_rounds
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
        head = first.setdefault(r.get("identity", r["client"]), r)
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


def _user(rows, p, fed, clients_total, findings, planned_sigma=None,
          shortfalls: dict | None = None) -> float | None:
    if not rows:
        return None
    cohort = int(fed.get("clients_per_round", 1))
    m = min(cohort, clients_total) if clients_total else cohort
    shortfalls = shortfalls or {}
    for r in rows:
        if r["steps"] != 1:
            fail(findings, f"round {r['round']}: {r['steps']} steps; an aggregate is one",
                  r["line"])
    qs = {r["sample_rate"] for r in rows}
    if len(qs) > 1 or (clients_total and not math.isclose(qs.pop(), m / clients_total,
                                                          rel_tol=1e-9)):
        fail(findings, f"sampling rates {sorted({r['sample_rate'] for r in rows})}: expected "
                        f"one, m/N = {m}/{clients_total}")
    planned = planned_sigma if number(planned_sigma) and planned_sigma > 0 else None
    reference = p.noise_multiplier or planned
    if reference is None:  # no plan: σ from a round whose reporting clients are recorded
        known = [r for r in rows if r["round"] in shortfalls]
        reference = (known[0]["noise_multiplier"] / math.sqrt(1 - shortfalls[known[0]["round"]])
                     if known else max(r["noise_multiplier"] for r in rows))
    if not p.noise_multiplier and not _spends_budget(reference, rows[0]["sample_rate"],
                                                     int(fed.get("rounds", 1)), p):
        fail(findings, f"σ {reference:g} does not spend the budget ε = {p.epsilon:g} over "
                        f"{fed.get('rounds')} rounds: not the σ this run derives")
    # rounds.jsonl records a round's last attempt: an earlier release of a round redone
    # after a crash is checked like a round without a record
    last_of = {r["round"]: i for i, r in enumerate(rows)}
    for i, r in enumerate(rows):
        if r["round"] in shortfalls and last_of[r["round"]] == i:
            reported = round(m * (1 - shortfalls[r["round"]]))
            expected = reference * math.sqrt(max(reported, 0) / m)
            if not math.isclose(r["noise_multiplier"], expected, rel_tol=1e-9):
                fail(findings, f"round {r['round']}: σ {r['noise_multiplier']:g}, but σ·√(m′/m) "
                                f"= {expected:g} for σ = {reference:g} and the {reported} of "
                                f"{m} clients rounds.jsonl says reported", r["line"])
            continue
        reported = (r["noise_multiplier"] / reference) ** 2 * m
        if not (0.5 <= reported <= m + 1e-6 and abs(reported - round(reported)) < 1e-6):
            fail(findings, f"round {r['round']}: σ {r['noise_multiplier']:g} is no σ·√(m′/m) "
                            f"of σ = {reference:g} for a cohort of {m}", r["line"])
    return reference
