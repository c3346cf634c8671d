"""Benchmark: the federation against central training of the same model, side by side.

For every seed, on one data set and one split (the protocol of docs/evaluation.md):
1. central: the fedrec model trained centrally (the path of `fedrec train`), clocked to its
   best epoch (the validation checks are on the clock, as they are part of its training; the
   test NDCG@10 measured at every check for the curve is off the clock);
2. baselines: most-popular and BPR-MF;
3. federated: `fedrec simulate` with the default recipe (batched engine), evaluated every
   `--eval-every` rounds; the whole session on the clock (start-up and evaluations included);
4. with `--ray-seeds`: the same federation on Flower's Ray engine (one message per client).

Reported: NDCG@10 / HR@10 of all of them, rounds and wall seconds until the federation first
reaches 0.9 × central's test NDCG@10 and that wall time over central's time to its best
epoch, the round cost split (local compute, engine, evaluation), per client update the ms of
compute (one client alone, one thread, as a device or a Ray actor runs it; and batched) and of
engine, and the peak memory of the process tree. Writes
benchmarks/results/federated-<dataset>.json and .png (NDCG@10 per round, and per wall second
with central's curve).

    python benchmarks/federated.py --dataset ml-100k --seeds 0 1 2 --ray-seeds 0
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
TARGET = 0.9


class TreeMemory(threading.Thread):
    """Peak of the summed RSS of this process and all its children, sampled every 0.5 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_mb, self.stop = 0.0, threading.Event()

    def run(self):
        me = psutil.Process()
        while not self.stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self.stop.wait(0.5)


def central(cfg, prepared) -> dict:
    """Central fedrec training with its validation checks timed; test NDCG@10 at each check
    measured off the clock."""
    from fedrec.common.evaluate import evaluate, evaluate_all
    from fedrec.common.experiment import build

    model, checks, off_clock = build(cfg), [], [0.0]
    started = time.perf_counter()

    def progress(epoch, values):
        paused = time.perf_counter()
        test = evaluate(model, prepared.split, "test")["ndcg@10"]
        checks.append({"epoch": epoch + 1, "seconds": round(paused - started - off_clock[0], 2),
                       "valid_ndcg@10": values["valid_ndcg@10"], "ndcg@10": test})
        off_clock[0] += time.perf_counter() - paused

    model.fit(prepared.split, prepared.item_embeddings, progress=progress)
    seconds = time.perf_counter() - started - off_clock[0]
    best = max(checks, key=lambda c: c["valid_ndcg@10"])  # the epoch early stopping keeps
    metrics = evaluate_all(model, prepared.split, prepared.item_embeddings)
    return {"metrics": metrics, "checks": checks, "train_seconds": round(seconds, 1),
            "best_epoch": best["epoch"], "seconds_to_best_epoch": best["seconds"]}


def baseline(cfg, prepared, kind: str) -> dict:
    from fedrec.common.experiment import run_central

    _, metrics = run_central(replace(cfg, model=kind), None, None, prepared)
    return metrics


def federated(cfg, run_dir: Path) -> dict:
    from fedrec.common.jsonl import read_jsonl
    from fedrec.simulation.run import simulate

    shutil.rmtree(run_dir, ignore_errors=True)
    memory = TreeMemory()
    memory.start()
    started = time.perf_counter()
    final = simulate(cfg, run_dir)
    wall = time.perf_counter() - started
    memory.stop.set()
    memory.join()
    rounds = read_jsonl(run_dir / "rounds.jsonl")
    curve = [{k: r[k] for k in ("round", "elapsed_seconds", "ndcg@10", "valid_ndcg@10",
                                "eval_seconds") if k in r}
             for r in read_jsonl(run_dir / "metrics.jsonl") if "ndcg@10" in r]
    fit = [r["fit_seconds"] for r in rounds]
    return {"final": final, "curve": curve, "wall_seconds": round(wall, 1),
            "fit_seconds_per_round": round(float(np.mean(fit)), 4),
            "fit_seconds_total": round(float(np.sum(fit)), 1),
            "central_eval_seconds_total": round(sum(c.get("eval_seconds", 0) for c in curve), 1),
            "peak_memory_tree_mb": round(memory.peak_mb)}


def reaching(curve: list[dict], target: float) -> dict | None:
    """The first evaluated round at or above `target` test NDCG@10 (None: never)."""
    return next(({"round": c["round"], "seconds": c["elapsed_seconds"]} for c in curve
                 if c["ndcg@10"] >= target), None)


def compute_costs(cfg, cohorts: int = 8, singles: int = 30) -> dict:
    """Milliseconds of local compute per client update: one client alone on one thread (as a
    device, or a Ray actor, runs it), and within a batched round of `clients_per_round`."""
    import torch

    from fedrec.client.local import sgd_update
    from fedrec.common.model import FedRecModel
    from fedrec.simulation.devices import DataSpec, catalog_embeddings, num_users, user_partition

    spec = DataSpec(cfg.dataset, cfg.cold_fraction, cfg.seed, cfg.encoder)
    emb = catalog_embeddings(spec)
    model_cfg = replace(cfg.fedrec, input_dim=int(emb.shape[1]))
    shared = FedRecModel(model_cfg, 1).shared_arrays()
    rng = np.random.default_rng(0)
    users = rng.permutation(num_users(spec))
    fed, m = cfg.federation, cfg.federation.clients_per_round

    def run(batch):
        data = [user_partition(spec, int(u)) for u in batch]
        sgd_update(model_cfg, fed, emb, shared, [None] * len(batch), data, [1.0] * len(batch),
                   [int(u) for u in batch], 0)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run(users[:1])  # warm-up
    started = time.perf_counter()
    for u in users[:singles]:
        run([u])
    single = (time.perf_counter() - started) / singles
    torch.set_num_threads(threads)
    run(users[:m])
    started = time.perf_counter()
    for k in range(cohorts):
        run(users[k * m % len(users):][:m])
    batched = (time.perf_counter() - started) / cohorts
    return {"one_client_ms": round(1000 * single, 1), "batched_round_ms": round(1000 * batched, 1),
            "batched_per_client_ms": round(1000 * batched / m, 2)}


def main() -> None:
    import torch

    from fedrec.common import atomic
    from fedrec.common.config import RunConfig
    from fedrec.common.experiment import prepare

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=None, help="default: the config's")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-clients", type=int, default=100)
    ap.add_argument("--ray-seeds", type=int, nargs="*", default=[])
    args = ap.parse_args()
    torch.set_num_threads(2)

    out = {"dataset": args.dataset, "seeds": {}, "ray": {}}
    stem = HERE / "results" / f"federated-{args.dataset}"
    for seed in args.seeds:
        cfg = RunConfig(dataset=args.dataset, seed=seed)
        cfg.federation = replace(cfg.federation, eval_every=args.eval_every,
                                 eval_clients=args.eval_clients,
                                 rounds=args.rounds or cfg.federation.rounds)
        prepared = prepare(cfg, progress=False)
        result = {"central": central(replace(cfg, model="fedrec"), prepared)}
        log(f"seed {seed}: central {result['central']['metrics']['ndcg@10']:.4f} "
            f"(best epoch {result['central']['best_epoch']} at "
            f"{result['central']['seconds_to_best_epoch']} s)")
        for kind in ("popular", "bpr"):
            result[kind] = baseline(cfg, prepared, kind)
        result["federated"] = federated(cfg, HERE / "results" / f"fed-{args.dataset}-{seed}")
        summarize(result)
        log(f"seed {seed}: federated {result['federated']['final']['ndcg@10']:.4f}, "
            f"reached {result['reached']}")
        out["seeds"][str(seed)] = result
        atomic.write_text(stem.with_suffix(".json"), json.dumps(out, indent=2))  # so far
        if seed in args.ray_seeds:
            ray_cfg = replace(cfg, federation=replace(cfg.federation, engine="ray"))
            out["ray"][str(seed)] = federated(ray_cfg,
                                              HERE / "results" / f"fed-{args.dataset}-{seed}-ray")
            out["ray"][str(seed)]["reached"] = reaching(
                out["ray"][str(seed)]["curve"], TARGET * result["central"]["metrics"]["ndcg@10"])
    cfg = RunConfig(dataset=args.dataset, seed=args.seeds[0])
    out["compute"] = compute_costs(cfg)
    atomic.write_text(stem.with_suffix(".json"), json.dumps(out, indent=2))
    plot(out, stem.with_suffix(".png"))
    print(markdown(out))


def summarize(result: dict) -> None:
    c, f = result["central"], result["federated"]
    target = TARGET * c["metrics"]["ndcg@10"]
    result["reached"] = reaching(f["curve"], target)
    result["ratio_to_central"] = round(f["final"]["ndcg@10"] / c["metrics"]["ndcg@10"], 3)
    if result["reached"]:
        result["wall_ratio_to_central_best_epoch"] = round(
            result["reached"]["seconds"] / c["seconds_to_best_epoch"], 2)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def mean_std(values) -> str:
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if len(values) == 0:
        return "–"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def markdown(out: dict) -> str:
    seeds = list(out["seeds"].values())
    rows = [("fedrec, federated (round chosen by validation)",
             [s["federated"]["final"] for s in seeds]),
            ("fedrec, central (epoch chosen by validation)", [s["central"]["metrics"] for s in seeds]),
            ("BPR-MF", [s["bpr"] for s in seeds]), ("most-popular", [s["popular"] for s in seeds])]
    lines = ["| model | NDCG@10 | HR@10 | Recall@20 |", "|---|---|---|---|"]
    for name, ms in rows:
        lines.append(f"| {name} | {mean_std([m['ndcg@10'] for m in ms])} | "
                     f"{mean_std([m['hr@10'] for m in ms])} | {mean_std([m['recall@20'] for m in ms])} |")
    lines += ["", "| seed | central NDCG@10 | central s to best epoch (epoch) | federated NDCG@10 "
              "(ratio) | rounds to 0.9× | s to 0.9× | FL s / central s |", "|---|---|---|---|---|---|---|"]
    for seed, s in out["seeds"].items():
        r = s["reached"] or {}
        lines.append(
            f"| {seed} | {s['central']['metrics']['ndcg@10']:.4f} | "
            f"{s['central']['seconds_to_best_epoch']:.0f} ({s['central']['best_epoch']}) | "
            f"{s['federated']['final']['ndcg@10']:.4f} ({s['ratio_to_central']:.2f}) | "
            f"{r.get('round', '–')} | {r.get('seconds', '–')} | "
            f"{s.get('wall_ratio_to_central_best_epoch', '–')} |")
    for seed, r in out["ray"].items():
        lines.append(f"\nRay engine, seed {seed}: NDCG@10 {r['final']['ndcg@10']:.4f}, reached "
                     f"0.9× at {r['reached']}, {r['fit_seconds_per_round']} s per round, "
                     f"wall {r['wall_seconds']} s, peak {r['peak_memory_tree_mb']} MB")
    lines.append(f"\ncompute: {out['compute']}")
    return "\n".join(lines)


def plot(out: dict, path: Path) -> None:
    from fedrec.common.plots import pyplot, save_png

    fig, (by_round, by_time) = pyplot().subplots(1, 2, figsize=(12, 4.2))
    first = next(iter(out["seeds"].values()))
    for k, s in enumerate(out["seeds"].values()):
        curve = s["federated"]["curve"]
        alpha = 1.0 if k == 0 else 0.35
        by_round.plot([c["round"] for c in curve], [c["ndcg@10"] for c in curve], marker="o",
                      ms=3, color="C0", alpha=alpha, label="federated (batched)" if k == 0 else None)
        by_time.plot([c["elapsed_seconds"] for c in curve], [c["ndcg@10"] for c in curve],
                     marker="o", ms=3, color="C0", alpha=alpha,
                     label="federated (batched)" if k == 0 else None)
        checks = s["central"]["checks"]
        by_time.plot([c["seconds"] for c in checks], [c["ndcg@10"] for c in checks], marker="s",
                     ms=3, color="C3", alpha=alpha, label="central" if k == 0 else None)
    for seed, r in out["ray"].items():
        curve = r["curve"]
        by_round.plot([c["round"] for c in curve], [c["ndcg@10"] for c in curve], marker="^",
                      ms=3, color="C2", label=f"federated (Ray engine, seed {seed})")
        by_time.plot([c["elapsed_seconds"] for c in curve], [c["ndcg@10"] for c in curve],
                     marker="^", ms=3, color="C2", label="federated (Ray engine)")
    central_ndcg = first["central"]["metrics"]["ndcg@10"]
    for ax in (by_round, by_time):
        ax.axhline(central_ndcg, color="C3", ls="--", lw=1, label="central (seed 0)")
        ax.axhline(TARGET * central_ndcg, color="C3", ls=":", lw=1, label="0.9 × central")
        ax.axhline(first["bpr"]["ndcg@10"], color="C1", ls="--", lw=1, label="BPR-MF")
        ax.axhline(first["popular"]["ndcg@10"], color="gray", ls="--", lw=1, label="most-popular")
        ax.set_ylabel("NDCG@10 (test, full ranking)")
        ax.grid(alpha=0.3)
    by_round.set_xlabel("round")
    by_time.set_xlabel("wall seconds (each run from its start)")
    by_round.set_title(f"{out['dataset']}: federated by round")
    by_time.set_title(f"{out['dataset']}: federated vs central by wall time")
    by_time.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


if __name__ == "__main__":
    main()
