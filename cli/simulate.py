"""`fedrec simulate`: a simulated Flower federation, one virtual client per user."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedrec.cli.options import Dataset, Encoder, Seed
from fedrec.common.errors import RunDirError


def simulate(
    dataset: Dataset = "synthetic",
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/sim-<dataset>-<seed>).")] = None,
    resume: Annotated[Path | None, typer.Option(help="Resume the run in this directory.")] = None,
    config: Annotated[Path | None, typer.Option(help="A config.toml to start from.")] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds.")] = None,
    clients_per_round: Annotated[int | None, typer.Option(help="Clients sampled per round.")] = None,
    recipe: Annotated[str | None, typer.Option(
        help="'fedsgd' (the default: reconstruct the personal vector, one local SGD step, "
        "Adam on the server) or 'local-adam' (the first recipe: 2 local Adam epochs, FedAvgM).")] = None,
    local_optimizer: Annotated[str | None, typer.Option(help="sgd or adam (see --recipe).")] = None,
    local_steps: Annotated[int | None, typer.Option(help="sgd: local steps per visit.")] = None,
    local_epochs: Annotated[int | None, typer.Option(help="adam: local epochs per visit.")] = None,
    reconstruct_steps: Annotated[int | None, typer.Option(
        help="Personal-vector reconstruction steps (head frozen) per visit and evaluation.")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="fedavg, fedavgm, fedadam, fedyogi or fedprox.")] = None,
    server_lr: Annotated[float | None, typer.Option(help="Server learning rate.")] = None,
    server_lr_schedule: Annotated[str | None, typer.Option(
        help="'constant' or 'cosine' (the server learning rate annealed to 0 over the rounds).")] = None,
    engine: Annotated[str | None, typer.Option(
        help="auto, batched (a round's training as one computation; plain runs), ray "
        "(Flower's engine, one message per client; every feature) or in-process (the same "
        "messages one after another in this process, without Ray).")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Evaluate every N rounds.")] = None,
    eval_users: Annotated[int | None, typer.Option(
        help="Central evaluation per evaluation round on a fixed sample of at most N users "
        "(0: all); the served round is evaluated on every user at the end (see --full-eval).")] = None,
    full_eval: Annotated[bool | None, typer.Option(
        "--full-eval/--no-full-eval",
        help="Evaluate the served round on every user at the end (default), or keep its "
        "--eval-users sample's metrics and confidence interval.")] = None,
    eval_clients: Annotated[int | None, typer.Option(
        help="Federated-evaluation sample per evaluation round (0: all); the last asks every "
        "client, up to --eval-users.")] = None,
    fail_rate: Annotated[float | None, typer.Option(help="Seeded share of clients that fail while training.")] = None,
    secagg: Annotated[bool, typer.Option(
        "--secagg", help="Aggregate with SecAgg+: the server sees only the sum of updates.")] = False,
    secagg_dropout: Annotated[float | None, typer.Option(
        help="SecAgg+: share of a round's clients that may drop out (sets the key sharing).")] = None,
    dp: Annotated[str | None, typer.Option(
        "--dp", help="Differential privacy: 'record' (per-record DP-SGD, per-device budget; with "
        "--secagg each device adds a share of the noise) or 'user' (clipped updates + "
        "distributed noise, server accountant).")] = None,
    epsilon: Annotated[float | None, typer.Option(
        help="DP ε: each client's budget (record) or the federation's target (user).")] = None,
    delta: Annotated[float | None, typer.Option(help="DP δ (per unit).")] = None,
    accountant: Annotated[str | None, typer.Option(help="DP accountant: rdp or prv.")] = None,
    noise_multiplier: Annotated[float | None, typer.Option(
        help="DP σ; default: derived from --epsilon.")] = None,
    max_grad_norm: Annotated[float | None, typer.Option(
        help="DP clip: per sample (record) or per client update (user).")] = None,
    sample_rate: Annotated[float | None, typer.Option(
        help="Record-level DP under --secagg: each device samples each of its records with "
        "this secret probability per participation (default 1: all).")] = None,
    secure_rng: Annotated[bool, typer.Option(
        "--secure-rng", help="DP noise from a cryptographic stream (docs/privacy.md).")] = False,
    seed: Seed = 0,
    encoder: Encoder = "all-MiniLM-L6-v2",
    compare: Annotated[bool, typer.Option(
        help="Also train most-popular, BPR-MF and central fedrec on the same split; print them beside.")] = False,
    egress_log: Annotated[Path | None, typer.Option(help="Log every message clients send (JSON lines).")] = None,
    verbose: Annotated[bool, typer.Option(help="Show Flower's and Ray's logs.")] = False,
) -> None:
    """Train the shared head federatedly; personal vectors stay on each simulated device."""
    from dataclasses import replace

    from fedrec.common import config as cfgmod

    # Everything a run can be refused for is checked first: before torch and Flower load
    # (seconds) and before the run directory exists.
    if recipe is not None and recipe not in RECIPES:
        raise typer.BadParameter(f"'{recipe}'; expected one of {sorted(RECIPES)}",
                                 param_hint="--recipe")
    if resume is not None:
        _check_resumable(resume)
        final = _run(None, resume, verbose, egress_log)
        out = resume
    else:
        cfg = cfgmod.load(config) if config else cfgmod.RunConfig()
        cfg = replace(cfg, dataset=dataset, seed=seed, encoder=encoder, model="fedrec")
        overrides = {"rounds": rounds, "clients_per_round": clients_per_round,
                     "local_optimizer": local_optimizer, "local_steps": local_steps,
                     "local_epochs": local_epochs, "reconstruct_steps": reconstruct_steps,
                     "engine": engine, "strategy": strategy, "server_lr": server_lr,
                     "server_lr_schedule": server_lr_schedule,
                     "eval_every": eval_every, "eval_users": eval_users, "full_eval": full_eval,
                     "eval_clients": eval_clients,
                     "fail_rate": fail_rate, "secagg_dropout": secagg_dropout,
                     "secagg": secagg or None}
        cfg.federation = replace(cfg.federation, **{
            **RECIPES.get(recipe or "", {}), **{k: v for k, v in overrides.items() if v is not None}})
        dp_overrides = {"mode": dp, "epsilon": epsilon, "delta": delta, "accountant": accountant,
                        "noise_multiplier": noise_multiplier, "max_grad_norm": max_grad_norm,
                        "sample_rate": sample_rate, "secure_rng": secure_rng or None}
        cfg.privacy = replace(cfg.privacy,
                              **{k: v for k, v in dp_overrides.items() if v is not None})
        cfg.validate()
        cohort_option = (f"--clients-per-round {clients_per_round}"
                         if clients_per_round is not None else f"federation.clients_per_round = "
                              f"{cfg.federation.clients_per_round} ({config or 'the default'})")
        _check_start(cfg, cohort_option)
        out = out or _fresh_run_dir(Path("runs") / f"sim-{Path(dataset).name}-{seed}")
        if out.exists() and any(out.iterdir()):
            raise RunDirError(f"{out} already holds a run; resume it with --resume, or choose "
                              "another --out")
        final = _run(cfg, out, verbose, egress_log)
    rows = [{"model": "fedrec (federated)", **final}]
    if compare:
        rows += _central_baselines(out)
    for line in summary(final, rows, out):
        typer.echo(line)


def _check_resumable(run_dir: Path) -> None:
    from fedrec.common import config as cfgmod

    if not (run_dir / "config.toml").exists():
        raise RunDirError(f"{run_dir}: nothing to resume (no config.toml)")
    cfgmod.load(run_dir / "config.toml").validate()


def _check_start(cfg, cohort_option: str) -> None:
    """Refuse a run that cannot start or cannot train: a data set that is not there, more
    clients per round than it has users, a privacy budget that leaves no client a release.
    Loads the data set (pandas); torch only for a DP run (Opacus' accountant)."""
    from fedrec.common.data.registry import load_dataset
    from fedrec.common.plan import resolve_privacy
    from fedrec.common.text import printable

    users = load_dataset(cfg.dataset).num_users
    cfg.federation.check_population(
        users, cohort_option, f"users of data set '{printable(cfg.dataset)}' (one client each)")
    resolve_privacy(cfg, cfg.federation.clients_per_round, users)


def _run(cfg, run_dir: Path, verbose: bool, egress_log: Path | None) -> dict:
    """Run (cfg given) or resume (cfg None) the simulation in `run_dir`. A new run that fails
    before its first round (a failed start, Ctrl-C) leaves no run directory behind."""
    import shutil

    from fedrec.simulation.run import simulate as run

    existed = run_dir.exists()
    try:
        return run(cfg, run_dir, resume=cfg is None, verbose=verbose, egress_log=egress_log)
    except BaseException:
        started = any((run_dir / name).exists() for name in ("rounds.jsonl", "clients"))
        if cfg is not None and not existed and run_dir.is_dir() and not started:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def summary(final: dict, rows: list[dict], out: Path) -> list[str]:
    """The lines printed after a run: the results table (`rows`), what privacy spent, the
    profiles' generalization, which round the table shows."""
    from fedrec.cli.output import format_table
    from fedrec.common.experiment import HEADLINE

    lines = [format_table(rows, HEADLINE + ["federated_ndcg@10", "failed_client_updates"])]
    if "privacy" in final:
        lines.append(_privacy_line(final["privacy"]))
        exhausted = final["privacy"].get("budget_exhausted_after_round")
        if exhausted is not None:
            lines.append(f"the privacy budget ran out after round {exhausted}: later rounds "
                         "were not aggregated")
    if "generalization" in final.get("anonymization", {}):
        a = final["anonymization"]
        lines.append(f"profiles on devices: {a['generalization']} (k = {a['k']}, target "
                     f"{a['k_target']})")
    lines.append(f"{final['rounds']} rounds; the table shows round {final['selected_round']} "
                 f"(best validation NDCG@10; the last round's metrics are under 'last' in "
                 f"metrics.json); run written to {out}")
    return lines


# named sets of [federation] settings; single flags override them
RECIPES = {
    "fedsgd": {"local_optimizer": "sgd", "local_steps": 1, "local_lr": 1.0,
               "reconstruct_steps": 5, "reconstruct_lr": 0.05, "reconstruct_from": "zero",
               "strategy": "fedadam",
               "server_lr": 3e-3, "server_lr_schedule": "cosine"},
    "local-adam": {"local_optimizer": "adam", "local_epochs": 2, "reconstruct_steps": 0,
                   "reconstruct_from": "stored",
                   "strategy": "fedavgm", "server_lr": 1.0, "server_momentum": 0.9,
                   "server_lr_schedule": "constant"},
}


def _privacy_line(p: dict) -> str:
    if p["unit"] == "user":
        return (f"user-level DP: ε = {p['epsilon']:.3g} of {p['epsilon_budget']:g} at "
                f"δ = {p['delta']:g} ({p['accountant']}), {p['releases']} aggregates")
    return (f"record-level DP: per-client ε min/median/max = {p['epsilon_min']:.3g}/"
            f"{p['epsilon_median']:.3g}/{p['epsilon_max']:.3g} of {p['epsilon_budget']:g} at "
            f"δ = {p['delta']:g} ({p['accountant']}); {p['clients_exhausted']} clients out of "
            f"budget; {p['releases']} releases")


def _central_baselines(run_dir: Path) -> list[dict]:
    """Most-popular, BPR-MF and central fedrec on the run's own data set, split and seed,
    written under RUN/central/<model>/."""
    from dataclasses import replace

    from fedrec.cli.output import epoch_reporter, progress_bar
    from fedrec.common import config as cfgmod
    from fedrec.common.experiment import prepare, run_central

    cfg = cfgmod.load(run_dir / "config.toml")
    prepared = prepare(cfg, progress=False)
    rows = []
    for kind in ("popular", "bpr", "fedrec"):
        run_cfg = replace(cfg, model=kind)
        total = {"popular": 1, "bpr": cfg.bpr.epochs, "fedrec": cfg.train.epochs}[kind]
        with progress_bar(total, f"central {kind}") as bar:
            _, metrics = run_central(run_cfg, run_dir / "central" / kind, epoch_reporter(bar),
                                     prepared)
        rows.append({"model": f"{kind} (central)", **metrics})
    return rows


def _fresh_run_dir(base: Path) -> Path:
    """`base`, or `base-2`, `base-3`, … : the first that holds no run yet."""
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
