"""The server's run directory: what a run writes while it runs, and how it starts, resumes and
finishes. A simulation and a deployment write the same files.

- `config.toml` (the run's config, to reproduce it), `plan.json` (everything derived from it
  for this population), `wire-schema.json` (what clients may send, to check an egress log
  against), `run-id` (the run's random name, which devices key their charges by);
- `rounds.jsonl`: one line per round (clients sampled/completed/failed/rejected, loss, time);
- `metrics.jsonl`: one line per evaluated round (`round` + the central protocol's metric keys,
  in a simulation, + `federated_*` estimates from the clients' own evaluations);
- `checkpoints/` (the global head and the server optimizer, safetensors) and `privacy/`;
- `metrics.json` at the end: the served round's metrics and the run's totals.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import numpy as np

from fedrec.common import atomic, config, privacy
from fedrec.common.errors import RunDirError
from fedrec.common.jsonl import dumps, number, read_jsonl, truncate_jsonl
from fedrec.common.plan import RunPlan

CHECKPOINTS_DIR, WIRE_SCHEMA, ANONYMIZATION = "checkpoints", "wire-schema.json", "anonymization.json"
PLAN = "plan.json"  # the run plan, as the apps received it
LEDGER = Path("privacy") / "ledger.jsonl"
RUN_ID = "run-id"  # a random name of this run, kept across resumes (devices key charges by it)


def run_id(run_dir: Path) -> str:
    """The run's name for its devices: a resumed run is the same run (its redone rounds are
    replayed, not charged again), a new run in another directory is another. Run directories
    of an older fedrec get one on their first resume."""
    path = Path(run_dir) / RUN_ID
    if not path.exists():
        atomic.write_text(path, secrets.token_hex(8) + "\n")
    return path.read_text().strip()


def open_run(run_dir: Path, plan: RunPlan, reevaluate: bool = True) -> tuple[int, Path | None]:
    """Start a new run in `run_dir`, or resume the one there (its plan must be this one: same
    config *and* population, so σ, q and the cohort are those its ledger was charged with):
    returns (the round to start after, the checkpoint to start from or None). `reevaluate`:
    the checkpoint's round is evaluated again (central evaluation), so its metrics line goes."""
    from fedrec.server import checkpoint

    run_dir = Path(run_dir)
    if (run_dir / "config.toml").exists():
        stored = (run_dir / PLAN).read_text() if (run_dir / PLAN).exists() else None
        if stored is not None and stored != plan.to_json():
            raise RunDirError(f"{run_dir}: holds a run with another plan (config or number of "
                              "clients); resume it with its own, or choose another run directory")
        start, latest = checkpoint.resume_point(run_dir / CHECKPOINTS_DIR)
        truncate_jsonl(run_dir / "rounds.jsonl", start + 1)
        truncate_jsonl(run_dir / "metrics.jsonl",
                       (start if reevaluate else start + 1) if latest else 0)
        return start, latest
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id(run_dir)
    config.save(plan.config, run_dir / "config.toml")
    atomic.write_text(run_dir / PLAN, plan.to_json())
    atomic.write_text(run_dir / WIRE_SCHEMA, plan.schema.to_json())
    return 0, None


class Recorder:
    """Receives the strategy's records ('fit', 'central_eval', 'federated_eval') and appends
    them to `rounds.jsonl` and `metrics.jsonl` (a progress bar follows those files)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.started = time.perf_counter()
        self.pending: dict[int, dict] = {}

    def __call__(self, kind: str, round_: int, values: dict) -> None:
        row = self.pending.setdefault(round_, {"round": round_})
        if kind == "fit":
            self._append("rounds.jsonl", {"round": round_, **values})
            row.update(train_loss=values["train_loss"], failed=values["failed"])
        elif kind == "central_eval":
            row.update(values)
        elif kind == "initial_eval":  # before the first round of a session: nothing else follows
            row.update(values)
            self._flush(round_)
        elif kind == "federated_eval":
            row.update({f"federated_{k}": v for k, v in values.items()})
            self._flush(round_)

    def _flush(self, round_: int) -> None:
        row = self.pending.pop(round_)
        row["elapsed_seconds"] = round(time.perf_counter() - self.started, 2)  # this session
        # rounds without evaluation never flush: drop their partial rows
        self.pending = {r: v for r, v in self.pending.items() if r > round_}
        self._append("metrics.jsonl", row)

    def _append(self, name: str, record: dict) -> None:
        with open(self.run_dir / name, "a") as fh:
            fh.write(dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())  # on disk before the round's checkpoint is


def finish(run_dir: Path, seconds: float, engine_name: str = "", full_eval=None) -> dict:
    """Write `metrics.json`: the served round's metrics plus run totals. The metrics are the
    central protocol's where the run had them (a simulation), else the clients' own
    evaluations (`federated_*`: a deployment). If the served round was evaluated on a sample
    of users (`eval_sample`), `full_eval(round)` evaluates it on every user: those metrics
    are the served ones, and the sample's stay under `sampled`."""
    from fedrec.common.experiment import peak_rss_mb

    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    evaluated = [r for r in rows if "ndcg@10" in r] or [r for r in rows
                                                         if "federated_ndcg@10" in r]
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    if not evaluated:
        raise RunDirError(f"{run_dir}: the run ended without any evaluated round")
    chosen = select_round(evaluated)
    final = {k: v for k, v in chosen.items()
             if k not in ("train_loss", "failed", "round", "elapsed_seconds", "eval_seconds")}
    if full_eval is not None and "eval_sample" in chosen:
        sampled = {k: final.pop(k) for k in list(final) if not k.startswith("federated_")}
        final = {**full_eval(chosen["round"]), **final, "sampled": sampled}
    final.update(
        selected_round=chosen["round"],
        last={k: v for k, v in evaluated[-1].items() if k not in ("train_loss", "failed")},
    )
    final.update(
        rounds=max((r["round"] for r in rounds), default=0),
        failed_client_updates=sum(r["failed"] for r in rounds),
        rejected_client_updates=sum(r["rejected"] for r in rounds),
        rounds_not_aggregated=sum(not r["aggregated"] for r in rounds),
        wall_seconds_this_session=round(seconds, 1),
        engine=engine_name,
        peak_rss_mb=round(peak_rss_mb(), 1),
    )
    spent = privacy_summary(run_dir)
    if spent:
        final["privacy"] = spent
    if (run_dir / ANONYMIZATION).exists():
        facts = json.loads((run_dir / ANONYMIZATION).read_text())
        final["anonymization"] = {k: facts[k] for k in ("generalization", "k", "k_target")
                                  if k in facts}
    atomic.write_text(run_dir / "metrics.json", dumps(final, indent=2))
    return final


def select_round(evaluated: list[dict]) -> dict:
    """The evaluated round whose global head a run serves: the best validation NDCG@10 (as
    central training's early stopping chooses its epoch; never the test metric), the latest on
    ties; the initial model only if nothing else was evaluated. Its checkpoint is
    `checkpoints/round-NNNNNN.safetensors` (every evaluated round is checkpointed)."""
    trained = [r for r in evaluated if r["round"] > 0] or evaluated
    score = [(v if v == v else -1.0, r["round"])  # none (no validation users) ranks last
             for r in trained for v in [number(r.get("valid_ndcg@10"))]]
    return trained[max(range(len(trained)), key=lambda i: score[i])]


def privacy_summary(run_dir: Path) -> dict:
    """What the ledger says was spent: the federation's user-level ε, or the distribution of
    the clients' record-level ε. {} for a run without DP."""
    cfg = config.load(run_dir / "config.toml").privacy
    if not cfg.enabled:
        return {}
    # a device that crashed between a ledger line and its "logged" mark repeats the line
    ledger = list({json.dumps(line, sort_keys=True): line
                   for line in privacy.read_ledger(run_dir / LEDGER)}.values())
    latest: dict[str, float] = {}
    for line in ledger:
        latest[line["client"]] = max(latest.get(line["client"], 0.0), line["epsilon"])
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    summary = {"unit": cfg.mode, "delta": cfg.delta, "accountant": cfg.accountant,
               "epsilon_budget": cfg.epsilon, "releases": len(ledger)}
    if cfg.mode == "record" and not (run_dir / LEDGER).exists():
        # a deployment: each device keeps its own ledger (`fedrec client privacy --store`)
        summary.update(releases=None, ledger="on the devices",
                       declined_rounds=sum(r.get("declined", 0) for r in rounds))
    elif cfg.mode == "user":
        summary["epsilon"] = latest.get("server", 0.0)
        blocked = [r["round"] for r in rounds if r.get("budget_exhausted")]
        if blocked:
            # a round whose reporting clients' aggregate would overspend is blocked; with
            # dropouts a later, fuller round may still fit. The budget ran out once every
            # round after the last aggregated one was blocked.
            summary["rounds_blocked_by_budget"] = len(blocked)
            if rounds[-1].get("budget_exhausted"):
                summary["budget_exhausted_after_round"] = max(
                    (r["round"] for r in rounds if r["aggregated"]), default=0)
        sigmas = [line["noise_multiplier"] for line in ledger]
        summary["noise_multiplier_range"] = [min(sigmas), max(sigmas)] if sigmas else None
    else:
        values = np.array(sorted(latest.values())) if latest else np.zeros(1)
        summary.update(clients_released=len(latest), epsilon_min=float(values.min()),
                       epsilon_median=float(np.median(values)), epsilon_max=float(values.max()),
                       clients_exhausted=max((r.get("clients_exhausted", 0) for r in rounds),
                                             default=0),
                       declined_rounds=sum(r.get("declined", 0) for r in rounds))
        resolved = (RunPlan.from_json((run_dir / PLAN).read_text()).privacy
                    if (run_dir / PLAN).exists() else None)
        if resolved is not None and resolved.noise == "distributed":
            # a device out of budget still sends its noise share, so the server cannot count
            # it; every release is one step at the run's σ, so a device is at its cap after
            # exactly the planned number of releases (the devices' ledgers, collected)
            releases: dict[str, int] = {}
            for line in ledger:
                releases[line["client"]] = releases.get(line["client"], 0) + 1
            summary.update(declined_rounds=None, clients_exhausted=sum(
                n >= resolved.planned_rounds for n in releases.values()))
    return summary
