"""`fedrec simulate`: a Flower federation of virtual clients, one per user, on this machine.

A run directory holds `config.toml`, `metrics.jsonl`, `rounds.jsonl`, `checkpoints/`, the
simulated devices' personal state under `clients/`, `wire-schema.json` (what clients may send,
to check an egress log against), `anonymization.json` (how devices generalized the profiles,
and the k reached) and at the end `metrics.json`. A run resumes
from its last checkpoint; clients then continue from the personal state of that round.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fedrec.common import atomic, config, privacy
from fedrec.common.errors import RunDirError
from fedrec.common.evaluate import evaluate_all
from fedrec.common.experiment import peak_rss_mb, prepare
from fedrec.common.model import FedRecModel
from fedrec.common.recommenders import FedRecCentral
from fedrec.simulation import engine
from fedrec.simulation.recorder import Recorder, read_jsonl, truncate_jsonl

CLIENTS_DIR, CHECKPOINTS_DIR = "clients", "checkpoints"
WIRE_SCHEMA, ANONYMIZATION = "wire-schema.json", "anonymization.json"
LEDGER = Path("privacy") / "ledger.jsonl"


def _start(run_dir: Path, cfg: config.RunConfig | None, resume: bool):
    """(config, start round, checkpoint path or None) for a new or resumed run."""
    from fedrec.client.store import PersonalStore
    from fedrec.server import checkpoint

    if resume:
        if not (run_dir / "config.toml").exists():
            raise RunDirError(f"{run_dir}: nothing to resume (no config.toml)")
        cfg = config.load(run_dir / "config.toml").validate()
        latest = checkpoint.latest(run_dir / CHECKPOINTS_DIR)
        start = checkpoint.load(latest)[0] if latest else 0
        truncate_jsonl(run_dir / "rounds.jsonl", start + 1)
        # the checkpoint's own round is evaluated again (if it is an evaluation round)
        truncate_jsonl(run_dir / "metrics.jsonl", start if latest else 0)
        for device in (run_dir / CLIENTS_DIR).glob("*"):
            PersonalStore(device).discard_after(start)  # state from rounds being redone
        return cfg, start, latest
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(f"{run_dir} already holds a run; resume it with --resume, or choose "
                          "another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(cfg, run_dir / "config.toml")
    return cfg, 0, None


def central_evaluator(model_cfg, fed: config.FederationConfig, prepared, store_root: Path):
    """The DESIGN protocol over every user: each reconstructs its personal vector against the
    global head from the state on its own device (`fedrec.client.personal`, what a device does
    before it recommends), then the catalog is ranked for it. A simulation-only view: a real
    server never sees personal state."""
    from fedrec.client.personal import personalized_model, starting_point
    from fedrec.client.store import PersonalStore

    split = prepared.split
    embeddings = torch.as_tensor(prepared.item_embeddings)

    def evaluate(round_: int, arrays: list[np.ndarray]) -> dict:
        states = [starting_point(PersonalStore(store_root / f"{user:06d}"), round_ + 1, fed)
                  for user in range(split.num_users)]
        model = personalized_model(model_cfg, embeddings, arrays, states, split.train_sequences,
                                   fed.reconstruct_steps, fed.reconstruct_lr)
        scorer = FedRecCentral.from_model(model, prepared.item_embeddings)
        return evaluate_all(scorer, split, prepared.item_embeddings)

    return evaluate


def simulate(cfg: config.RunConfig | None, run_dir: Path, resume: bool = False,
             progress: bool = True, verbose: bool = False, egress_log: Path | None = None) -> dict:
    """Run (or resume) a simulated federation into `run_dir`; returns the final metrics.
    `egress_log`: a JSON-lines file summarizing every message the clients send."""
    run_dir = Path(run_dir)
    cfg, start_round, latest = _start(run_dir, cfg, resume)
    cfg.validate()
    engine.configure_environment(str(run_dir / ".flwr"))
    from flwr.common import ndarrays_to_parameters
    from flwr.simulation import run_simulation

    from fedrec.client.app import client_mods, make_client_app
    from fedrec.server.app import make_server_app

    engine.quiet_logs(verbose)
    from tqdm.auto import tqdm

    engine_name = cfg.engine(egress_log=egress_log is not None)
    bar = tqdm(total=cfg.federation.rounds, initial=start_round, desc=f"rounds ({engine_name})",
               unit="round", disable=not progress, dynamic_ncols=True)
    recorder = Recorder(run_dir, bar)
    strategy, settings = assemble(cfg, run_dir, start_round, latest, recorder, progress,
                                  server=True)
    started = time.perf_counter()
    if start_round >= cfg.federation.rounds:  # killed after the last checkpoint: only finish
        if (run_dir / "metrics.json").exists():
            raise RunDirError(f"{run_dir}: already finished ({start_round} rounds)")
        strategy.evaluate(0, ndarrays_to_parameters(strategy.current))
        bar.close()
        return finish(run_dir, recorder, time.perf_counter() - started, engine_name)
    rounds = cfg.federation.rounds - start_round
    mods = client_mods(cfg.federation.secagg, settings.schema, egress_log)
    if engine_name == "batched":
        _run_batched(strategy, settings, rounds, mods)
    else:
        engine.patch_message_sweep()
        run_simulation(
            server_app=make_server_app(strategy, rounds,
                                       engine.map_nodes_in_order(strategy.num_clients)),
            client_app=make_client_app(settings, mods=mods),
            num_supernodes=strategy.num_clients,
            backend_config=engine.backend_config(cfg.federation.client_cpus, verbose),
        )
    bar.close()
    return finish(run_dir, recorder, time.perf_counter() - started, engine_name)


def _run_batched(strategy, settings, rounds: int, mods: list) -> None:
    """The same ServerApp on an in-process grid, with each round's training batched."""
    from fedrec.client.app import make_client_app
    from fedrec.server.app import make_server_app
    from fedrec.simulation.batched import BatchedDevices, BatchedFitWorkflow
    from fedrec.simulation.grid import InProcessGrid

    grid = InProcessGrid(make_client_app(settings, mods=mods, torch_threads=None),
                         strategy.num_clients)
    app = make_server_app(strategy, rounds, lambda g: g.node_map(),
                          BatchedFitWorkflow(strategy, BatchedDevices(settings)))
    grid.serve(app)


def assemble(cfg: config.RunConfig, run_dir: Path, start_round: int, latest: Path | None,
             recorder: Recorder, progress: bool = True, server: bool = False):
    """The strategy (server side) and client settings of a run, fresh or from a checkpoint.
    The `server` process also writes the run's wire schema and anonymization facts."""
    from fedrec.client.app import ClientSettings
    from fedrec.client.data import DataSpec
    from fedrec.common.wire import WireSchema
    from fedrec.server import checkpoint
    from fedrec.server.strategy import FedRecStrategy

    prepared = prepare(cfg, progress=progress)
    fed = cfg.federation
    num_clients = prepared.split.num_users
    model_cfg = replace(cfg.fedrec, input_dim=int(prepared.item_embeddings.shape[1]))
    torch.manual_seed(cfg.seed)
    template = FedRecModel(model_cfg, num_users=1)
    keys = list(template.shared_state())
    initial, opt_state = template.shared_arrays(), None
    if latest is not None:
        _, shared, opt_state = checkpoint.load(latest)
        initial = [shared[k] for k in keys]

    store_root = run_dir / CLIENTS_DIR
    cohort = min(fed.clients_per_round, num_clients)
    if fed.secagg:  # with fewer clients than clients_per_round: check the real cohort up front
        from fedrec.common.secagg import neighbourhood

        neighbourhood(cohort, fed.secagg_dropout, fed.secagg_corruption, fed.secagg_failure)
    dp = privacy.resolve(cfg.privacy, fed.rounds, cohort, num_clients)
    levels = cfg.anonymization.resolve(prepared.dataset.profiles)
    strategy = FedRecStrategy(
        fed, cfg.seed, num_clients, keys, initial, run_dir, recorder, start_round, opt_state,
        central_eval=central_evaluator(model_cfg, fed, prepared, store_root),
        privacy=dp, ledger=run_dir / LEDGER,
    )
    data = DataSpec(cfg.dataset, cfg.cold_fraction, cfg.seed, cfg.encoder, levels,
                    tuple(cfg.anonymization.keep_fields))
    settings = ClientSettings(
        model_cfg, cfg.train, fed, data, str(store_root), privacy=dp, cohort=cohort,
        ledger_path=str(run_dir / LEDGER), update_bound=strategy.update_bound,
        schema=WireSchema.for_run([a.shape for a in initial], strategy.update_bound, fed.secagg,
                                  dp.enabled, fed.secagg_max_weight),
        store_fsync=False,
    )
    if server:
        facts = {"k_target": cfg.anonymization.k, "auto": cfg.anonymization.auto}
        if prepared.dataset.profiles is not None:
            from fedrec.common.anonymity import anonymity

            facts.update(anonymity(prepared.dataset.profiles, levels))
        atomic.write_text(run_dir / ANONYMIZATION, json.dumps(facts, indent=1))
        atomic.write_text(run_dir / WIRE_SCHEMA, settings.schema.to_json())
    return strategy, settings


def finish(run_dir: Path, recorder: Recorder, seconds: float, engine_name: str = "") -> dict:
    """Write `metrics.json`: the last evaluated round's metrics plus run totals."""
    evaluated = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "ndcg@10" in r]
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    if not evaluated:
        raise RunDirError(f"{run_dir}: the run ended without any evaluated round")
    chosen = select_round(evaluated)
    final = {k: v for k, v in chosen.items()
             if k not in ("train_loss", "failed", "round", "elapsed_seconds", "eval_seconds")}
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
    atomic.write_text(run_dir / "metrics.json", json.dumps(final, indent=2))
    return final


def select_round(evaluated: list[dict]) -> dict:
    """The evaluated round whose global head a run serves: the best validation NDCG@10 (as
    central training's early stopping chooses its epoch; never the test metric), the latest on
    ties; the initial model only if nothing else was evaluated. Its checkpoint is
    `checkpoints/round-NNNNNN.safetensors` (every evaluated round is checkpointed)."""
    trained = [r for r in evaluated if r["round"] > 0] or evaluated
    score = [(v if v == v else -1.0, r["round"])  # NaN (no validation users) ranks last
             for r in trained for v in [r.get("valid_ndcg@10", float("nan"))]]
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
    if cfg.mode == "user":
        summary["epsilon"] = latest.get("server", 0.0)
        sigmas = [line["noise_multiplier"] for line in ledger]
        summary["noise_multiplier_range"] = [min(sigmas), max(sigmas)] if sigmas else None
    else:
        values = np.array(sorted(latest.values())) if latest else np.zeros(1)
        summary.update(clients_released=len(latest), epsilon_min=float(values.min()),
                       epsilon_median=float(np.median(values)), epsilon_max=float(values.max()),
                       clients_exhausted=max((r.get("clients_exhausted", 0) for r in rounds),
                                             default=0),
                       declined_rounds=sum(r.get("declined", 0) for r in rounds))
    return summary
