"""Benchmark: the price of differential privacy.

`overhead`: one client's local training time on ML-100K users — the default (non-private)
path, the DP path's loss form (disjoint windows, sampled candidates) trained without Opacus,
and record-level DP-SGD with Opacus — so the Opacus overhead is measured on the same work.

`sweep`: simulated federations at ε ∈ {1, 3, 8} for record- and user-level DP plus the
non-private run (ε = ∞) on one schedule (default: the default recipe), per seed; writes
benchmarks/results/privacy-<dataset>-<schedule>.json and a privacy-utility PNG. Finished runs
are reused, so an interrupted sweep continues.

`population`: the same sweep on synthetic populations of several sizes with one catalog
(`fedrec data synth`'s generator, seed 0); writes benchmarks/results/privacy-population-
<schedule>.json and a PNG of NDCG@10 as a fraction of the non-private run of the same
population, per ε and DP unit — the curve that says whether DP is affordable for a user base.

    python benchmarks/privacy.py overhead --dataset ml-100k
    python benchmarks/privacy.py sweep --dataset ml-100k --secagg --modes record --eval-every 100
    python benchmarks/privacy.py sweep --dataset ml-100k --rounds 20 --clients-per-round 50 \
        --strategy fedavgm --record-sigmas 0.01                     # the first study
    python benchmarks/privacy.py population --users 1000 10000 100000 --secagg \
        --rounds 200 --eval-every 50
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def overhead(args) -> dict:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fedrec.client import dp
    from fedrec.client.local import build_model, fit_local
    from fedrec.common.config import RunConfig
    from fedrec.common.model import FedRecModel
    from fedrec.common.privacy import PrivacyConfig
    from fedrec.common.train import disjoint_windows, make_optimizer
    from fedrec.simulation.devices import DataSpec, catalog_embeddings, user_partition

    torch.set_num_threads(1)  # as a simulated client runs
    cfg = RunConfig(dataset=args.dataset)
    spec = DataSpec(cfg.dataset, cfg.cold_fraction, cfg.seed, cfg.encoder)
    emb = catalog_embeddings(spec)
    model_cfg = replace(cfg.fedrec, input_dim=int(emb.shape[1]))
    shared = FedRecModel(model_cfg, 1).shared_arrays()
    p = PrivacyConfig(mode="record")
    epochs = cfg.federation.local_epochs

    def same_work_without_opacus(data):
        model = build_model(model_cfg, shared, None)
        windows = torch.from_numpy(disjoint_windows(data.train_items, p.window))
        loader = DataLoader(TensorDataset(windows, torch.zeros(len(windows), dtype=torch.long)),
                            batch_size=cfg.train.batch_size, shuffle=True)
        module = dp.WindowLoss(model, emb, p.negatives, torch.Generator().manual_seed(0))
        optimizer = make_optimizer(model, cfg.train)
        for _ in range(epochs):
            for w, u in loader:
                loss = module(w, u).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    paths = {
        "default_no_dp": lambda d: fit_local(model_cfg, cfg.train, emb, shared, None, d, epochs, 0),
        "dp_form_no_opacus": same_work_without_opacus,
        "dp_opacus": lambda d: dp.fit_private(model_cfg, cfg.train, p, emb, shared, None, d,
                                              epochs, 1.0, secrets.randbits(60)),
    }
    users = [user_partition(spec, u) for u in range(0, args.users * 3, 3)]
    seconds = {}
    for name, fit in paths.items():
        fit(users[0])  # warm-up
        start = time.perf_counter()
        for data in users:
            fit(data)
        seconds[name] = (time.perf_counter() - start) / len(users)
    result = {
        "dataset": args.dataset, "users": len(users), "local_epochs": epochs,
        "negatives": p.negatives, "window": p.window,
        "seconds_per_client": {k: round(v, 4) for k, v in seconds.items()},
        "opacus_overhead": round(seconds["dp_opacus"] / seconds["dp_form_no_opacus"], 2),
        "dp_vs_default": round(seconds["dp_opacus"] / seconds["default_no_dp"], 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"dp-overhead-{args.dataset}.json").write_text(json.dumps(result, indent=2))
    return result


def sweep(args) -> dict:
    from fedrec.common.config import RunConfig
    from fedrec.simulation.run import simulate

    schedule = {k: v for k, v in (("rounds", args.rounds),
                                  ("clients_per_round", args.clients_per_round),
                                  ("strategy", args.strategy)) if v is not None}
    defaults = RunConfig().federation
    tag = _schedule_tag(args)
    shape = tag.split("-")[0]
    rows = []
    for seed in args.seeds:
        runs = [("off", None, None)] + [(m, e, None) for m in args.modes
                                        for e in getattr(args, f"{m}_epsilons") or args.epsilons]
        runs += [("record", None, sigma) for sigma in args.record_sigmas]  # diagnostics
        for mode, eps, sigma in runs:
            label = f"sigma{sigma}" if sigma else (eps or "inf")
            secure = args.secagg and mode != "off"
            sampled = mode == "record" and args.sample_rate < 1
            name = (f"dp-{args.dataset}-{mode}-{label}-{shape}{'-secagg' if secure else ''}"
                    f"{f'-q{args.sample_rate:g}' if sampled else ''}"
                    f"{f'-{args.trained}' if args.trained and mode != 'off' else ''}"
                    f"{f'-seed{seed}' if seed else ''}")
            run_dir = RESULTS / name
            if (run_dir / "metrics.json").exists():
                final = json.loads((run_dir / "metrics.json").read_text())
            elif args.only_existing:
                continue
            else:
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)
                cfg = RunConfig(dataset=args.dataset, seed=seed)
                cfg.federation = replace(cfg.federation, **schedule, secagg=secure,
                                         eval_every=args.eval_every or
                                         schedule.get("rounds", defaults.rounds),
                                         eval_clients=args.eval_clients,
                                         eval_users=args.eval_users,
                                         full_eval=args.full_eval)
                if sigma:  # no budget: what the DP training form reaches with this σ
                    cfg.privacy = replace(cfg.privacy, mode=mode, epsilon=1e12,
                                          noise_multiplier=sigma)
                elif mode != "off":
                    cfg.privacy = replace(cfg.privacy, mode=mode, epsilon=float(eps))
                if mode == "record":
                    cfg.privacy = replace(cfg.privacy, sample_rate=args.sample_rate)
                if args.trained:
                    cfg.privacy = replace(cfg.privacy, trained=args.trained)
                start = time.perf_counter()
                final = simulate(cfg, run_dir, progress=args.progress)
                final["wall_seconds"] = round(time.perf_counter() - start, 1)
                (run_dir / "metrics.json").write_text(json.dumps(final, indent=2))
            rows.append({"seed": seed, "mode": mode, "epsilon": eps, "sigma": sigma,
                         "secagg": secure, "ndcg@10": final["ndcg@10"], "hr@10": final["hr@10"],
                         "privacy": final.get("privacy"), "engine": final.get("engine"),
                         "wall_seconds": final.get("wall_seconds"),
                         "eval_sample": final.get("eval_sample")})  # None: every user
            print(json.dumps(rows[-1]), flush=True)
    result = {"config": vars(args), "runs": rows}
    (RESULTS / f"privacy-{args.dataset}-{tag}.json").write_text(json.dumps(result, indent=2))
    plot(result, RESULTS / f"privacy-{args.dataset}-{tag}.png")
    return result


def population(args) -> dict:
    """`sweep` on synthetic populations of `args.users` users over one catalog of `args.items`
    items; each DP run's NDCG@10 as a fraction of its population's non-private run."""
    import numpy as np

    from fedrec.common.data import files, synthetic
    from fedrec.common.paths import datasets_dir

    rows = []
    for users in args.users:
        name = f"pop-{users}-{args.items}"
        if not (datasets_dir() / name / files.META_JSON).exists():  # written last
            files.save_dir(synthetic.generate(num_users=users, num_items=args.items, seed=0,
                                              name=name), datasets_dir() / name)
        runs = sweep(argparse.Namespace(**{**vars(args), "dataset": name}))["runs"]
        for seed in args.seeds:
            bases = [r["ndcg@10"] for r in runs if r["seed"] == seed and r["mode"] == "off"]
            if not bases:  # --only-existing without the non-private run
                continue
            base = bases[0]
            rows += [{**r, "users": users, "no_dp_ndcg@10": base,
                      "fraction": r["ndcg@10"] / base if base > 0 else float("nan")}
                     for r in runs if r["seed"] == seed and r["mode"] != "off"]
    result = {"config": vars(args), "runs": rows}
    tag = _schedule_tag(args)
    (RESULTS / f"privacy-population-{tag}.json").write_text(json.dumps(result, indent=2))
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for mode, style in (("record", "-o"), ("user", "--s")):
        for eps in args.epsilons:
            fractions: dict[int, list[float]] = {}  # users -> one per seed
            for r in rows:
                if r["mode"] == mode and r["epsilon"] == eps:
                    fractions.setdefault(r["users"], []).append(r["fraction"])
            if fractions:
                ns = sorted(fractions)
                ax.plot(ns, [np.mean(fractions[n]) for n in ns], style,
                        label=f"{mode}-level, ε = {eps:g}")
    ax.axhline(1.0, color="gray", ls="--", label="no DP")
    ax.axhline(0.8, color="gray", ls=":", label="80 % of no DP")
    ax.set_xscale("log")
    ax.set_xlabel(f"users (one catalog of {args.items} items)")
    ax.set_ylabel("NDCG@10 / non-private NDCG@10")
    ax.set_title(f"privacy-utility vs population ({tag})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, RESULTS / f"privacy-population-{tag}.png", dpi=120)
    return result


def _schedule_tag(args) -> str:
    """<rounds>x<clients per round>[-secagg][-q<record sample rate>]: the schedule a
    sweep's file names carry."""
    from fedrec.common.config import RunConfig

    defaults = RunConfig().federation
    return (f"{args.rounds or defaults.rounds}x"
            f"{args.clients_per_round or defaults.clients_per_round}"
            f"{'-secagg' if args.secagg else ''}"
            f"{f'-q{args.sample_rate:g}' if args.sample_rate < 1 else ''}")


def plot(result: dict, path: Path) -> None:
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()

    import numpy as np

    runs = result["runs"]
    base = float(np.mean([r["ndcg@10"] for r in runs if r["mode"] == "off"]))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for mode, marker in (("record", "o"), ("user", "s")):
        by_eps: dict[float, list[float]] = {}
        for r in runs:
            if r["mode"] == mode and r["epsilon"]:
                by_eps.setdefault(r["epsilon"], []).append(r["ndcg@10"])
        if by_eps:
            eps = sorted(by_eps)
            ax.errorbar(eps, [np.mean(by_eps[e]) for e in eps],
                        yerr=[np.std(by_eps[e]) for e in eps], marker=marker, capsize=3,
                        label=f"{mode}-level DP" + (" (distributed, SecAgg+)"
                                                    if mode == "record" and
                                                    result["config"].get("secagg") else ""))
    ax.axhline(base, color="gray", ls="--", label="federated, no DP (ε = ∞)")
    ax.axhline(0.8 * base, color="gray", ls=":", label="80% of no-DP")
    if result["config"].get("central_ndcg"):
        ax.axhline(result["config"]["central_ndcg"], color="black", ls="-.", label="central")
    ax.set_xscale("log")
    epsilons = sorted({r["epsilon"] for r in runs if r["epsilon"]})
    ax.set_xticks(epsilons, [f"{e:g}" for e in epsilons])
    ax.minorticks_off()
    ax.set_xlabel("ε (δ = 1e-5; record: per client, user: federation)")
    ax.set_ylabel("NDCG@10 (test, full ranking)")
    ax.set_title(f"privacy-utility, {result['config']['dataset']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--dataset", default="ml-100k")
    o.add_argument("--users", type=int, default=40)
    s = sub.add_parser("sweep")
    s.add_argument("--dataset", default="ml-100k")
    p = sub.add_parser("population")
    p.add_argument("--users", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--items", type=int, default=1000)
    for parser in (s, p):
        parser.add_argument("--rounds", type=int, default=None,
                            help="default: the default recipe's")
        parser.add_argument("--clients-per-round", type=int, default=None)
        parser.add_argument("--strategy", default=None)
        parser.add_argument("--secagg", action="store_true",
                            help="DP runs under SecAgg+ (record level: distributed noise shares)")
        parser.add_argument("--modes", nargs="+", default=["record", "user"])
        parser.add_argument("--seeds", type=int, nargs="+", default=[0])
        parser.add_argument("--eval-every", type=int, default=0, help="0: only at the end")
        parser.add_argument("--progress", action="store_true")
        parser.add_argument("--eval-clients", type=int, default=100)
        parser.add_argument("--eval-users", type=int, default=5000,
                            help="per-round central evaluation sample (0: every user)")
        parser.add_argument("--trained", choices=["lowrank", "encoder", "all"], default=None,
                            help="what DP trains and releases (privacy.trained; default: the "
                            "config's); run names carry it when given")
        parser.add_argument("--only-existing", action="store_true",
                            help="report the finished runs in benchmarks/results; run nothing")
        parser.add_argument("--no-full-eval", dest="full_eval", action="store_false",
                            help="report the served round on the --eval-users sample (with its "
                            "confidence interval) instead of evaluating it on every user")
        parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
        for mode in ("record", "user"):
            parser.add_argument(f"--{mode}-epsilons", type=float, nargs="+", default=None,
                                help=f"{mode} level: these instead of --epsilons")
        parser.add_argument("--record-sigmas", type=float, nargs="*", default=[],
                            help="also record-level runs at this fixed σ without a budget "
                            "(diagnostic)")
        parser.add_argument("--central-ndcg", type=float, default=0.0851)
        parser.add_argument("--sample-rate", type=float, default=1.0,
                            help="record level: each device's secret Poisson rate per record")
    args = ap.parse_args()
    result = {"overhead": overhead, "sweep": sweep, "population": population}[args.command](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
