"""`fedrec simulate`: a Flower federation of virtual devices, one per user, on this machine.

It runs the same `ServerApp` and `ClientApp` a deployment runs (`fedrec.server.app`,
`fedrec.client.app`), configured through `context.run_config`: the run plan, the run
directory, the opener of virtual devices (`fedrec.simulation.devices`) and the server hooks
below (central evaluation, the batched engine, collecting the devices' ledgers).

A run directory holds what every server run writes (`fedrec.server.records`), plus the
virtual devices' stores under `clients/` (only where devices keep state: personal vectors
with `reconstruct_from = "stored"`, record-level privacy accounts and ledgers),
`anonymization.json` (how devices generalized the profiles, and the k reached) and, under
record-level DP, `privacy/ledger.jsonl` collected from the devices' own ledgers. A run
resumes from its last checkpoint; devices then continue from the state of that round.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import torch

from fedrec.common import atomic, config
from fedrec.common.errors import RunDirError
from fedrec.common.evaluate import evaluate_all
from fedrec.common.experiment import Prepared, prepare
from fedrec.common.jsonl import dumps, number, read_jsonl
from fedrec.common.plan import (
    DEVICES_KEY,
    EGRESS_LOG_KEY,
    ENGINE_KEY,
    RUN_DIR_KEY,
    SERVER_HOOKS_KEY,
    RunPlan,
)
from fedrec.common.recommenders import FedRecCentral
from fedrec.server.records import ANONYMIZATION, CHECKPOINTS_DIR, LEDGER
from fedrec.simulation import engine
from fedrec.simulation.devices import CLIENTS_DIR, DataSpec, VirtualDevice, store_path


def build_plan(cfg: config.RunConfig, prepared: Prepared, clients: int | None = None) -> RunPlan:
    """The plan of `cfg` over the prepared data set's catalog: a simulation (one client per
    user, profiles generalized to the levels the population allows), or with `clients` a
    deployment of that many devices (which hold no profiles: the default levels)."""
    from fedrec.common.model import FedRecModel

    width = int(prepared.item_embeddings.shape[1])
    template = FedRecModel(replace(cfg.fedrec, input_dim=width), num_users=1)
    shapes = {k: tuple(v.shape) for k, v in template.shared_state().items()}
    if clients is not None:
        return RunPlan.build(cfg, clients, width, shapes)
    levels = cfg.anonymization.resolve(prepared.dataset.profiles)
    return RunPlan.build(cfg, prepared.split.num_users, width, shapes, levels)


def central_evaluator(plan: RunPlan, prepared: Prepared, run_dir: Path):
    """The DESIGN protocol: each user reconstructs its personal vector against the global
    head from the state on its own device (`fedrec.client.personal`, what a device does
    before it recommends), then the catalog is ranked for it. A simulation-only view: a real
    server never sees personal state.

    Returns `evaluate(round_, arrays, every_user=False)`. Per evaluation round it covers a
    fixed sample of `federation.eval_users` users, drawn once from the run's seed (every user
    when the population is no larger), and says so in the metrics (`eval_sample`: the
    sample's size); `every_user=True` covers every user, `CHUNK` users at a time."""
    import numpy as np
    from tqdm.auto import tqdm

    from fedrec.client.personal import CHUNK, personalized_model, starting_point
    from fedrec.common.evaluate import RowScorer

    split, fed, spec = prepared.split, plan.federation, DataSpec.of(plan)
    embeddings = torch.as_tensor(prepared.item_embeddings)
    population = split.num_users
    sample = None
    if 0 < fed.eval_users < population:
        sample = np.sort(np.random.default_rng([plan.config.seed, 4]).choice(
            population, fed.eval_users, replace=False))

    def evaluate(round_: int, arrays: list, every_user: bool = False) -> dict:
        users = np.arange(population) if every_user or sample is None else sample
        states = [starting_point(VirtualDevice(spec, int(u), store_path(run_dir, int(u))),
                                 round_ + 1, fed) for u in users]
        chunks = tqdm(total=len(users), desc=f"evaluating round {round_} on every user",
                      unit="user", leave=False, disable=not every_user or len(users) <= CHUNK)
        model = personalized_model(plan.model, embeddings, arrays, states,
                                   [split.train_sequences[u] for u in users],
                                   fed.reconstruct_steps, fed.reconstruct_lr,
                                   progress=chunks.update)
        chunks.close()
        rows = np.full(population, -1, np.int64)
        rows[users] = np.arange(len(users))
        scorer = RowScorer(FedRecCentral.from_model(model, prepared.item_embeddings), rows)
        metrics = evaluate_all(scorer, split, prepared.item_embeddings, users=users)
        if len(users) < population:
            metrics["eval_sample"] = len(users)
        return metrics

    return evaluate


def full_evaluator(plan: RunPlan, run_dir: Path, evaluate):
    """`full_eval(round_)`: the central protocol over every user for an evaluated round's
    checkpoint (the served round of a run whose per-round evaluations were sampled)."""
    from fedrec.server import checkpoint

    def full_eval(round_: int) -> dict:
        _, shared, _ = checkpoint.load(checkpoint.round_path(run_dir / CHECKPOINTS_DIR, round_))
        return evaluate(round_, [shared[k] for k in plan.keys], every_user=True)

    return full_eval


def server_hooks(plan: RunPlan, run_dir: Path, run_config):
    """What a simulation adds to the ServerApp (run-config key `server-hooks`)."""
    from fedrec.server.app import ServerHooks

    prepared = prepare(plan.config, progress=False)
    fit_workflow = None
    if run_config.get(ENGINE_KEY) == "batched":
        from fedrec.simulation.batched import BatchedDevices, BatchedFitWorkflow

        def fit_workflow(strategy):
            return BatchedFitWorkflow(strategy, BatchedDevices(plan, run_dir))

    evaluate = central_evaluator(plan, prepared, run_dir)
    return ServerHooks(central_eval=evaluate, fit_workflow=fit_workflow,
                       before_finish=lambda: collect_ledgers(plan, run_dir),
                       full_eval=full_evaluator(plan, run_dir, evaluate)
                       if plan.federation.full_eval else None)


def collect_ledgers(plan: RunPlan, run_dir: Path) -> None:
    """Record-level DP: gather the virtual devices' own ledgers into the run's
    `privacy/ledger.jsonl`, device by device, each in the order it wrote them (after a resume
    a device's rounds repeat; its cumulative ε follows its own order)."""
    if plan.privacy.mode != "record":
        return
    from fedrec.client.store import DeviceStore

    lines = []
    for path in sorted((run_dir / CLIENTS_DIR).glob("*.sqlite")):
        with DeviceStore(path, fsync=False) as store:
            lines += store.releases()
    (run_dir / LEDGER).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(run_dir / LEDGER, "".join(dumps(line) + "\n" for line in lines))


def simulate(cfg: config.RunConfig | None, run_dir: Path, resume: bool = False,
             progress: bool = True, verbose: bool = False, egress_log: Path | None = None) -> dict:
    """Run (or resume) a simulated federation into `run_dir`; returns the final metrics
    (`metrics.json`). `egress_log`: a JSON-lines file summarizing every message the clients
    send."""
    run_dir = Path(run_dir).resolve()
    if resume:
        if not (run_dir / "config.toml").exists():
            raise RunDirError(f"{run_dir}: nothing to resume (no config.toml)")
        cfg = config.load(run_dir / "config.toml")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(f"{run_dir} already holds a run; resume it with --resume, or choose "
                          "another --out")
    cfg = (cfg or config.RunConfig()).validate()
    engine.configure_environment(str(run_dir / ".flwr"))
    prepared = prepare(cfg, progress=progress)
    plan = build_plan(cfg, prepared)
    engine_name = cfg.engine(egress_log=egress_log is not None)
    run_config = plan.to_run_config(**{
        RUN_DIR_KEY: str(run_dir), DEVICES_KEY: "fedrec.simulation.devices:open_device",
        SERVER_HOOKS_KEY: "fedrec.simulation.run:server_hooks", ENGINE_KEY: engine_name,
        EGRESS_LOG_KEY: str(Path(egress_log).resolve()) if egress_log else ""})
    if resume:
        _rewind_devices(plan, run_dir)
    else:
        _write_anonymization(cfg, plan, prepared, run_dir)

    from fedrec.client.app import client_app
    from fedrec.server.app import server_app

    engine.quiet_logs(verbose)  # after flwr is imported: it sets its logger up on import
    with _progress(run_dir, cfg.federation.rounds, engine_name, progress):
        if engine_name in ("batched", "in-process"):
            from fedrec.simulation.grid import InProcessGrid

            InProcessGrid(client_app, plan.num_clients, run_config).serve(server_app)
        else:
            engine.patch_message_sweep()
            engine.run_on_ray(server_app, client_app, plan.num_clients, run_config,
                              engine.backend_config(cfg.federation.client_cpus, verbose),
                              run_dir / ".flwr" / "app")
    return json.loads((run_dir / "metrics.json").read_text())


def _rewind_devices(plan: RunPlan, run_dir: Path) -> None:
    """A resumed run redoes the rounds after its last checkpoint: devices drop the personal
    state they saved in those rounds (their privacy accounts keep every charge)."""
    from fedrec.client.store import DeviceStore
    from fedrec.server import checkpoint

    start, _ = checkpoint.resume_point(run_dir / "checkpoints")
    for path in sorted((run_dir / CLIENTS_DIR).glob("*.sqlite")):
        with DeviceStore(path, fsync=False) as store:
            store.personal.discard_after(start)


def _write_anonymization(cfg: config.RunConfig, plan: RunPlan, prepared: Prepared,
                         run_dir: Path) -> None:
    """How devices generalize their profiles in this run, and the k that reaches."""
    facts = {"k_target": cfg.anonymization.k, "auto": cfg.anonymization.auto}
    if prepared.dataset.profiles is not None:
        from fedrec.common.anonymity import anonymity

        facts.update(anonymity(prepared.dataset.profiles, plan.levels))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(run_dir / ANONYMIZATION, json.dumps(facts, indent=1))


class _progress:
    """A progress bar (round, clients, loss, metric) that follows the run's `rounds.jsonl`
    and `metrics.jsonl` as the ServerApp appends to them."""

    def __init__(self, run_dir: Path, rounds: int, engine_name: str, enabled: bool):
        self.run_dir, self.rounds, self.enabled = run_dir, rounds, enabled
        self.engine_name = engine_name
        self.stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            from tqdm.auto import tqdm

            done = len(read_jsonl(self.run_dir / "rounds.jsonl"))
            self.bar = tqdm(total=self.rounds, initial=done, unit="round", dynamic_ncols=True,
                            desc=f"rounds ({self.engine_name})")
            self.thread = threading.Thread(target=self._follow, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.stop.set()
            self.thread.join()
            self._update()
            self.bar.close()

    def _follow(self) -> None:
        while not self.stop.wait(0.25):
            self._update()

    def _update(self) -> None:
        rounds = read_jsonl(self.run_dir / "rounds.jsonl")
        if not rounds or rounds[-1]["round"] == self.bar.n:
            return
        metrics = [m for m in read_jsonl(self.run_dir / "metrics.jsonl") if "ndcg@10" in m]
        self.bar.n = rounds[-1]["round"]
        self.bar.set_postfix(postfix(rounds[-1], metrics[-1] if metrics else None),
                             refresh=True)


def postfix(fit: dict, last_metrics: dict | None) -> dict:
    """The bar's fields for the latest round record and evaluated metrics."""
    post = {"clients": f"{fit['completed']}/{fit['sampled']}"}
    if fit["failed"]:
        post["failed"] = fit["failed"]
    if last_metrics is not None:
        post["ndcg@10"] = f"{number(last_metrics['ndcg@10']):.4f}"
    if (loss := number(fit["train_loss"])) == loss:  # null: no client reported a loss
        post["loss"] = f"{loss:.3f}"
    if "epsilon" in fit:  # user-level DP: the federation's ε so far
        post["ε(user)"] = f"{fit['epsilon']:.2f}"
    if fit.get("clients_exhausted"):  # record-level DP: clients out of budget
        post["out of budget"] = fit["clients_exhausted"]
    if fit.get("halted"):
        post["halted"] = fit["halted"].removesuffix("_stage")
    return post

