"""Run directories made by hand the way `fedrec simulate` leaves them — config.toml,
plan.json, the ledger written by the real accountants, rounds.jsonl, metrics.json with the
server's own privacy summary and, on request, the devices' stores — for the audit's tests.
Import it with this directory on sys.path (tests are not a package)."""

import json
from dataclasses import replace

from fedrec.client.budget import PrivacyAccount
from fedrec.client.store import DeviceStore
from fedrec.common import config, privacy
from fedrec.common.plan import RunPlan
from fedrec.server import records
from fedrec.server.accountant import UserLevelAccountant

BUDGET = 3.0
RELEASE = (2.5, 0.5, 4)  # σ, q, steps of every release: ε 2.10, 2.93, 3.59 after 1, 2, 3
USER_RELEASE = (2.5, 1.0, 1)  # one aggregate of all 10 clients (q = m/N = 1): ε 1.69, 2.48


def make_run(tmp_path, mode="record", clients=3, releases=2, devices=False, accountant="rdp",
             sigma=None, rotate_after=None, budget=BUDGET):
    """A run directory as `fedrec simulate` leaves it, with a ledger written by the real
    accountant: `clients` devices with `releases` releases each (record), or one server
    line per round (user); config.toml, plan.json and metrics.json as the server writes them
    for a federation of 10 clients and `releases` rounds. `rotate_after`: device 0 rotates
    its pseudonym after its release of that round (`devices` only); the run's ledger is the
    devices' ledgers collected device by device, as a simulation collects them."""
    run = tmp_path / "run"
    (run / "privacy").mkdir(parents=True)
    release = RELEASE if mode == "record" else USER_RELEASE
    if sigma is not None:
        release = (sigma, *release[1:])
    cfg = config.RunConfig(dataset="synthetic")  # 2 local epochs: q = 1/2 means 4 steps
    cfg.privacy = privacy.PrivacyConfig(mode=mode, epsilon=budget, delta=1e-5,
                                        noise_multiplier=release[0], accountant=accountant)
    cfg.federation = replace(cfg.federation, rounds=releases,
                             clients_per_round=clients if mode == "record" else 10)
    config.save(cfg, run / "config.toml")
    (run / "plan.json").write_text(RunPlan.build(cfg, 10, 8, {"head": (2,)}).to_json())
    names = [f"c-{i:016x}" for i in range(clients)] if mode == "record" else ["server"]
    rounds = []
    for i, name in enumerate(names):
        store = account = None
        if devices and mode == "record":  # the simulated device's store: account, ledger, name
            store = DeviceStore(run / "clients" / f"{i:06d}.sqlite", fsync=False)
            account = PrivacyAccount(store, 1e-5, accountant, budget=budget)
            name = store.pseudonym()
        for r in range(1, releases + 1):
            eps = privacy.epsilon([release] * r, 1e-5, accountant)
            if account is not None:  # charged, then logged, as the ClientApp does
                eps = account.charge(r, f"inputs of round {r}", *release).epsilon
                name = store.pseudonym()
            line = privacy.Release(mode, name, r, *release, 1.0, 1e-5, accountant, eps)
            privacy.append_release(run / "privacy" / "ledger.jsonl", line)
            if store is not None:
                store.append_release(line)
                account.mark_logged()
                if i == 0 and r == rotate_after:
                    store.rotate_pseudonym()
        if store is not None:
            store.close()
    for r in range(1, releases + 1):
        rounds.append({"round": r, "aggregated": True})
    (run / "rounds.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rounds))
    (run / "metrics.jsonl").write_text(json.dumps({"round": releases, "users": 10,
                                                   "ndcg@10": 0.05}) + "\n")
    finish(run)
    return run


def finish(run) -> None:
    """metrics.json as the server writes it when the run finishes (its privacy summary from
    the ledger as it is now)."""
    rounds = [json.loads(t) for t in (run / "rounds.jsonl").read_text().splitlines()]
    (run / "metrics.json").write_text(json.dumps({
        "ndcg@10": 0.05, "rounds": max(r["round"] for r in rounds),
        "rounds_not_aggregated": sum(not r["aggregated"] for r in rounds),
        "privacy": records.privacy_summary(run)}))


def ledger(run):
    return [json.loads(t) for t in (run / "privacy" / "ledger.jsonl").read_text().splitlines()]


def write(run, lines):
    (run / "privacy" / "ledger.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def failures(report):
    return [f["what"] for f in report["findings"] if f["severity"] == "failure"]


def notes(report):
    return [f["what"] for f in report["findings"] if f["severity"] == "note"]


def make_user_run(tmp_path, reported: list[int], epsilon: float = 3.0, cohort: int = 10,
                  clients: int = 40):
    """A user-level run with σ derived for its budget (plan.json) and rounds in which
    `reported[r - 1]` of the `cohort` sampled clients reported: each round charged by the
    server's own accountant for those clients, or blocked when it would exceed the budget,
    and recorded in rounds.jsonl as the strategy records it."""
    run = tmp_path / "run"
    (run / "privacy").mkdir(parents=True)
    cfg = config.RunConfig(dataset="synthetic")
    cfg.privacy = privacy.PrivacyConfig(mode="user", epsilon=epsilon, delta=1e-5)
    cfg.federation = replace(cfg.federation, rounds=len(reported), clients_per_round=cohort)
    config.save(cfg, run / "config.toml")
    plan = RunPlan.build(cfg, clients, 8, {"head": (2,)})
    (run / "plan.json").write_text(plan.to_json())
    accountant = UserLevelAccountant(plan.privacy, plan.cohort, plan.num_clients,
                                     run / "privacy" / "ledger.jsonl")
    rounds = []
    for r, m in enumerate(reported, start=1):
        blocked = accountant.would_exceed(m)
        if not blocked:
            accountant.charge(r, m)
        rounds.append({"round": r, "sampled": cohort, "completed": m, "failed": cohort - m,
                       "rejected": 0, "aggregated": not blocked, "epsilon": accountant.epsilon,
                       "budget_exhausted": blocked, "noise_shortfall": 1.0 - m / cohort})
    (run / "rounds.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rounds))
    (run / "metrics.jsonl").write_text(json.dumps({"round": len(reported), "users": clients,
                                                   "ndcg@10": 0.05}) + "\n")
    finish(run)
    return run
