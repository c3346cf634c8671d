"""Do a run's own records agree with each other?

Each file of a run directory is written by a different step — `config.toml` and `plan.json`
when the run starts, `rounds.jsonl` as each round closes, the ledger as each release is
charged, `metrics.json` when the run finishes — so one edited file contradicts the others.
Every contradiction is a failure:

- config.toml against plan.json: the plan is derived from the config (σ, planned
  participations, cohort), so an edited mode, ε, δ, clip norm or number of rounds shows;
- `mode = "off"` in a run that left DP evidence (ledger lines, a privacy summary, per-round ε,
  device accounts);
- rounds.jsonl against itself (one line per round, 1, 2, … up to the configured rounds; failed
  = sampled − completed) and against metrics.json's totals;
- the ledger against rounds.jsonl: a release in a round the run never had, a user-level
  release in a round that was not aggregated or whose ε rounds.jsonl gives otherwise, an
  aggregated record-level round without a release, more releases in a round than clients
  sampled, a release with another clip norm than the configured one, and two different
  releases of one client for one round (its budget spent twice);
- the ledger against metrics.json's privacy summary (releases, ε, clients, declines);
- the budget: where rounds were blocked as over budget, the audit says after which round the
  budget ran out, and checks that one more aggregate really would have exceeded it.
"""

from __future__ import annotations

import json
import math

import numpy as np

from fedrec.audit import mechanisms
from fedrec.audit.mechanisms import fail
from fedrec.common import privacy

REL = 1e-9  # numbers one record copies from another agree to rounding


def check_config(rec, findings: list) -> None:
    """config.toml against plan.json, and a `mode = "off"` that the run's evidence denies."""
    p = rec.privacy
    if rec.plan is not None:
        _compare(rec.plan.get("config", {}), rec.config_toml, "", findings)
        _check_resolved(rec, findings)
    if p.enabled:
        return
    evidence = []
    if rec.ledger:
        evidence.append(f"the ledger holds {len(rec.ledger)} releases")
    if rec.metrics and rec.metrics.get("privacy"):  # any value: the server writes none
        evidence.append("metrics.json has a privacy summary")
    if any(k in r for r in rec.rounds for k in ("epsilon", "declined", "budget_exhausted")):
        evidence.append("rounds.jsonl records DP per round")
    if any(d.account for d in rec.devices):
        evidence.append("devices keep privacy accounts")
    if evidence:
        fail(findings, "config.toml says privacy mode = 'off', but the run released under DP: "
                       + "; ".join(evidence))


def _compare(planned, written, prefix: str, findings: list) -> None:
    if isinstance(planned, dict) and isinstance(written, dict):
        for key in sorted(set(planned) | set(written)):
            _compare(planned.get(key), written.get(key), f"{prefix}{key}.", findings)
    elif planned != written:
        fail(findings, f"config.toml's {prefix[:-1]} = {written!r}, but the run's plan "
                       f"(plan.json) was made from {planned!r}")


def _check_resolved(rec, findings: list) -> None:
    """The plan's resolved privacy and cohort are what its config gives for its population."""
    plan, p, fed = rec.plan, rec.privacy, rec.federation
    resolved, clients = plan.get("privacy") or {}, plan.get("num_clients")
    for key in ("mode", "epsilon", "delta", "accountant", "max_grad_norm", "window",
                "negatives"):
        if resolved.get(key) != getattr(p, key):
            fail(findings, f"plan.json's privacy.{key} = {resolved.get(key)!r}; config.toml "
                           f"has {getattr(p, key)!r}")
    if not isinstance(clients, int) or clients < 1:
        fail(findings, f"plan.json's num_clients = {clients!r} is no number of clients")
        return
    cohort = min(int(fed.get("clients_per_round", 1)), clients)
    if plan.get("cohort") != cohort:
        fail(findings, f"plan.json's cohort = {plan.get('cohort')!r}; config.toml's "
                       f"clients_per_round over {clients} clients gives {cohort}")
    sigma = resolved.get("noise_multiplier")
    if p.mode == "user" and not (mechanisms.number(sigma) and sigma > 0):
        fail(findings, f"plan.json's σ = {sigma!r} is no noise multiplier")
    if p.noise_multiplier and sigma != p.noise_multiplier:
        fail(findings, f"plan.json's σ = {resolved.get('noise_multiplier')!r}; config.toml "
                       f"fixes σ = {p.noise_multiplier:g}")
    planned = p.planned_rounds or (privacy.planned_participations(
        int(fed.get("rounds", 1)), cohort, clients) if p.mode == "record" else 0)
    if resolved.get("planned_rounds") != planned:
        fail(findings, f"plan.json plans {resolved.get('planned_rounds')!r} participations per "
                       f"client; config.toml gives {planned}")


def check_rounds(rec, findings: list) -> None:
    """rounds.jsonl is one line per round, 1, 2, …, each self-consistent, no more than the
    configured rounds, and — once the run finished — all of them, as metrics.json counts."""
    planned = int(rec.federation.get("rounds", 0))
    seen: dict[int, int] = {}
    for r in rec.rounds:
        n, line = r["round"], r["_line"]
        if n in seen:
            fail(findings, f"rounds.jsonl records round {n} twice (lines {seen[n]} and {line})")
        seen[n] = line
        if n > planned:
            fail(findings, f"rounds.jsonl records round {n}; config.toml plans {planned} rounds")
        counts = [r.get(k) for k in ("sampled", "completed", "failed")]
        if all(isinstance(c, int) for c in counts) and counts[2] != counts[0] - counts[1]:
            fail(findings, f"rounds.jsonl round {n}: {counts[2]} failed, but {counts[0]} "
                           f"sampled and {counts[1]} completed")
    last = max(seen, default=0)
    for n in range(1, last):
        if n not in seen:
            fail(findings, f"rounds.jsonl has no line for round {n} (it records rounds up to "
                           f"{last})")
    if rec.metrics is None:
        return
    if last != planned:
        fail(findings, f"the run finished (metrics.json) after round {last} of rounds.jsonl; "
                       f"config.toml plans {planned} rounds")
    rows = rec.rounds
    totals = {"rounds": last, "rounds_not_aggregated": sum(not r.get("aggregated") for r in rows),
              "failed_client_updates": sum(r.get("failed") or 0 for r in rows),
              "rejected_client_updates": sum(r.get("rejected") or 0 for r in rows)}
    for key, value in totals.items():
        if key in rec.metrics and rec.metrics[key] != value:
            fail(findings, f"metrics.json's {key} = {rec.metrics[key]!r}; rounds.jsonl gives "
                           f"{value}")


def check_releases(rec, lines: list[dict], identity: dict, findings: list) -> None:
    """The ledger's releases against rounds.jsonl and the configured clip norm; a client (a
    device, under all its pseudonyms) released at most once per round."""
    p, rounds = rec.privacy, {r["round"]: r for r in rec.rounds}
    last = max(rounds, default=0)
    by_round: dict[int, set] = {}
    first: dict[tuple, int] = {}
    for line in lines:
        n, who = line["round"], identity.get(line["client"], line["client"])
        if not isinstance(n, int):
            continue  # reported as impossible parameters
        if line["max_grad_norm"] != p.max_grad_norm:
            fail(findings, f"{line['client']} round {n}: clip norm {line['max_grad_norm']!r}, "
                           f"but the run clips at max_grad_norm = {p.max_grad_norm:g}",
                 line["line"])
        if n not in rounds:
            in_flight = n == last + 1 and not rec.finished
            fail(findings, f"a release in round {n}, " + (
                "the round in flight when the run stopped" if in_flight else
                f"a round the run never had (rounds.jsonl records rounds 1–{last})"),
                line["line"], severity="warning" if in_flight else "failure")
        by_round.setdefault(n, set()).add(who)
        if (who, n) in first and line["unit"] == "user":
            # the server crashed after charging round n's aggregate, before its checkpoint: the
            # resumed run redid the round (new clients, new noise), a second release, charged
            # again; each line's ε is checked to compose both
            fail(findings, f"round {n} released twice (ledger lines {first[who, n]} and "
                           f"{line['line']}): redone after a crash, both aggregates charged",
                 line["line"], severity="note")
        elif (who, n) in first:
            fail(findings, f"{_who(line['client'], who)} released twice for round {n} (ledger "
                           f"lines {first[who, n]} and {line['line']}): its budget spent twice "
                           "for one round", line["line"])
        first.setdefault((who, n), line["line"])
    if p.mode == "record":
        for n, r in rounds.items():
            released = len(by_round.get(n, ()))
            sampled = r.get("sampled")
            if isinstance(sampled, int) and released > sampled:
                fail(findings, f"round {n}: {released} clients released updates, but rounds.jsonl "
                               f"says {sampled} were sampled")
            if r.get("aggregated") is True and not released and lines:
                fail(findings, f"round {n} was aggregated (rounds.jsonl), but no client released "
                               "an update in it")
    elif p.mode == "user":
        _check_user_rounds(lines, rounds, findings)


def _who(name: str, who: str) -> str:
    """A client by its name in the ledger, and the first name its device used if another."""
    return f"client {name}" if who == name else f"client {who} (as {name})"


def _check_user_rounds(lines: list[dict], rounds: dict, findings: list) -> None:
    """Each aggregated round has its release, each release an aggregated round, and the ε
    rounds.jsonl records after a round is the ledger's."""
    released = {line["round"]: line for line in lines if line["client"] == "server"}
    epsilon = 0.0
    for n in sorted(rounds):
        r, line = rounds[n], released.get(n)
        if r.get("aggregated") and line is None:
            fail(findings, f"round {n} was aggregated but has no ledger line")
        if line is not None and r.get("aggregated") is not True:
            fail(findings, f"round {n} was not aggregated (rounds.jsonl), yet the ledger has its "
                           "release", line["line"])
        if line is not None and mechanisms.number(line["epsilon"]):
            epsilon = line["epsilon"]
        logged = r.get("epsilon")
        if logged is not None and not (mechanisms.number(logged)
                                       and math.isclose(logged, epsilon, rel_tol=REL)):
            fail(findings, f"rounds.jsonl gives ε {logged!r} after round {n}; the ledger "
                           f"{epsilon:.6g}")


def budget_ran_out(rec, findings: list) -> int | None:
    """User level: the round after which the budget ran out — the last aggregated round, when
    rounds after it were blocked as over budget (None: none was). A blocked round followed by
    an aggregated one (fewer clients reported, whose aggregate would have cost more) is noted
    too. metrics.json, where it says when the budget ran out, must agree."""
    if rec.privacy.mode != "user":
        return None
    rows = rec.rounds
    blocked = [r["round"] for r in rows if r.get("budget_exhausted") is True]
    last = max((r["round"] for r in rows if r.get("aggregated") is True), default=0)
    final = [n for n in blocked if n > last]
    after = last if final else None
    if final:
        fail(findings, f"the federation's budget ε = {rec.privacy.epsilon:g} ran out after round "
                       f"{after}: the {len(final)} round(s) after it were not aggregated (one "
                       "more aggregate would have exceeded it)", severity="note")
    if len(final) < len(blocked):
        fail(findings, "round(s) " + ", ".join(str(n) for n in blocked if n < last)
             + " were not aggregated: the aggregate of the clients that reported would have "
               "exceeded the budget (later rounds, with more clients, fitted)", severity="note")
    for r in rows:
        if r.get("budget_exhausted") is True and r.get("aggregated") is True:
            fail(findings, f"rounds.jsonl round {r['round']} is both blocked by the budget and "
                           "aggregated")
    summary = rec.summary
    key = "budget_exhausted_after_round"
    if key in summary:
        # the server may count from the first blocked round: the last aggregated one before it
        first = (max((r["round"] for r in rows if r.get("aggregated") is True
                      and r["round"] < blocked[0]), default=0) if blocked else None)
        if summary[key] not in (after, first):
            fail(findings, f"metrics.json says the budget ran out after round {summary[key]!r}; "
                           + (f"rounds.jsonl, after round {after}" if after is not None else
                              "rounds.jsonl blocks no round"))
    return after


def check_blocked(rec, history: list[tuple], sigma: float | None, findings: list) -> None:
    """A round blocked as over budget is one whose aggregate would have exceeded ε: checked
    with the independent accountant for the clients rounds.jsonl says reported."""
    p, plan = rec.privacy, rec.plan or {}
    cohort, clients = plan.get("cohort"), plan.get("num_clients")
    if p.mode != "user" or not sigma or not (mechanisms.integer(cohort) and cohort >= 1
                                             and mechanisms.integer(clients) and clients >= 1):
        return
    q = min(1.0, cohort / clients)
    for r in rec.rounds:
        shortfall = r.get("noise_shortfall")
        if r.get("budget_exhausted") is not True or not mechanisms.number(shortfall):
            continue
        reported = round(cohort * (1 - shortfall))
        before = [h for h, n in history if n < r["round"]]
        if reported < 1:
            continue
        after = mechanisms.epsilon_of(
            [*before, (sigma * math.sqrt(reported / cohort), q, 1)], p)
        if after < p.epsilon * (1 - mechanisms.ACCOUNTANTS_AGREE):
            fail(findings, f"round {r['round']} was blocked as over budget, but its aggregate "
                           f"of {reported} clients would have spent only ε = {after:.4g} of "
                           f"{p.epsilon:g}")


def check_summary(rec, lines: list[dict], findings: list) -> None:
    """metrics.json's privacy summary is what the ledger and rounds.jsonl say (computed the
    way the server computes it: per pseudonym, identical repeats once)."""
    p, metrics = rec.privacy, rec.metrics
    if metrics is None or not p.enabled:
        return
    summary = metrics.get("privacy")
    if not isinstance(summary, dict) or not summary:
        fail(findings, "metrics.json has no privacy summary, but the run is a DP run")
        return
    expected: dict = {"unit": p.mode, "delta": p.delta, "accountant": p.accountant,
                      "epsilon_budget": p.epsilon}
    latest: dict[str, float] = {}
    for line in lines:
        if mechanisms.number(line["epsilon"]):
            name = json.dumps(line["client"])  # any JSON value a line may hold
            latest[name] = max(latest.get(name, 0.0), line["epsilon"])
    if summary.get("releases") is None and summary.get("ledger") == "on the devices":
        if rec.ledger_file or rec.devices:
            fail(findings, "metrics.json says the ledger is kept on the devices, but the run "
                           "directory holds " + ("a ledger" if rec.ledger_file else
                                                 "the devices' stores"))
    else:
        expected["releases"] = len(lines)
    if p.mode == "user":
        sigmas = [x["noise_multiplier"] for x in lines if mechanisms.number(x["noise_multiplier"])]
        expected.update(epsilon=latest.get('"server"', 0.0),
                        noise_multiplier_range=[min(sigmas), max(sigmas)] if sigmas else None)
    elif "releases" in expected:
        values = np.array(sorted(latest.values())) if latest else np.zeros(1)
        expected.update(clients_released=len(latest), epsilon_min=float(values.min()),
                        epsilon_median=float(np.median(values)),
                        epsilon_max=float(values.max()),
                        clients_exhausted=max((r.get("clients_exhausted") or 0
                                               for r in rec.rounds), default=0),
                        declined_rounds=sum(r.get("declined") or 0 for r in rec.rounds))
        planned = ((rec.plan or {}).get("privacy") or {}).get("planned_rounds")
        if mechanisms.distributed(p, rec.federation) and mechanisms.integer(planned):
            # devices out of budget send only their share: counted from their ledgers
            releases: dict[str, int] = {}
            for line in lines:
                name = json.dumps(line["client"])
                releases[name] = releases.get(name, 0) + 1
            expected.update(declined_rounds=None, clients_exhausted=sum(
                n >= planned for n in releases.values()))
    for key, value in expected.items():
        if key in summary and not _same(summary[key], value):
            fail(findings, f"metrics.json's privacy.{key} = {summary[key]!r}; the run's "
                           f"records give {value!r}")
    for key in ("releases", "epsilon", "epsilon_max"):
        if key in expected and key not in summary:
            fail(findings, f"metrics.json's privacy summary lacks {key} (the records give "
                           f"{expected[key]!r})")


def _same(a, b) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if mechanisms.number(a) and mechanisms.number(b):
        return math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)
    return a == b
