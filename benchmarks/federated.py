"""Benchmark: a simulated federation (one client per user) against the central model.

Runs `fedrec.simulation.simulate` into benchmarks/results/<name>/, samples the memory of the
whole process tree (driver + Ray workers), estimates where round time goes (clients' local
training measured in-process on a sample of users vs. the engine's overhead), and writes
benchmarks/results/<name>.json plus a PNG of NDCG@10 per round.

    python benchmarks/federated.py --dataset ml-100k --rounds 50 --clients-per-round 100 \
        --strategy fedavgm --central-ndcg 0.0851
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent


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


def client_compute_seconds(cfg, sample: int = 30) -> float:
    """Mean wall time of one client's local training (fit_local), measured in-process with
    one thread, as a simulated client runs it."""
    import torch

    from fedrec.client.data import DataSpec, catalog_embeddings, user_partition
    from fedrec.client.local import fit_local
    from fedrec.common.model import FedRecModel

    torch.set_num_threads(1)
    spec = DataSpec(cfg.dataset, cfg.cold_fraction, cfg.seed, cfg.encoder)
    emb = catalog_embeddings(spec)
    model_cfg = replace(cfg.fedrec, input_dim=int(emb.shape[1]))
    shared = FedRecModel(model_cfg, 1).shared_arrays()
    times = []
    for user in range(sample + 2):
        start = time.perf_counter()
        fit_local(model_cfg, cfg.train, emb, shared, None, user_partition(spec, user),
                  cfg.federation.local_epochs, seed=user)
        times.append(time.perf_counter() - start)
    torch.set_num_threads(2)
    return float(np.mean(times[2:]))  # the first calls warm up


def main() -> None:
    from fedrec.common.config import RunConfig
    from fedrec.simulation.recorder import read_jsonl
    from fedrec.simulation.run import simulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--clients-per-round", type=int, default=100)
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--strategy", default="fedavg")
    ap.add_argument("--server-lr", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--eval-clients", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--central-ndcg", type=float, default=None,
                    help="NDCG@10 of the same model trained centrally (for the ratio)")
    ap.add_argument("--name", default=None)
    args = ap.parse_args()

    cfg = RunConfig(dataset=args.dataset, seed=args.seed)
    cfg.federation = replace(cfg.federation, rounds=args.rounds,
                             clients_per_round=args.clients_per_round,
                             local_epochs=args.local_epochs, strategy=args.strategy,
                             server_lr=args.server_lr, eval_every=args.eval_every,
                             eval_clients=args.eval_clients)
    name = args.name or f"fed-{args.dataset}-{args.strategy}-{args.rounds}x{args.clients_per_round}"
    run_dir = HERE / "results" / name
    shutil.rmtree(run_dir, ignore_errors=True)

    memory = TreeMemory()
    memory.start()
    start = time.perf_counter()
    final = simulate(cfg, run_dir)
    wall = time.perf_counter() - start
    memory.stop.set()
    memory.join()

    rounds = read_jsonl(run_dir / "rounds.jsonl")
    history = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "ndcg@10" in r]
    fit_wall = sum(r["fit_seconds"] for r in rounds)
    per_client = client_compute_seconds(cfg)
    compute = per_client * sum(r["completed"] for r in rounds) / 2  # 2 client actors
    result = {
        "config": {k: v for k, v in vars(args).items()},
        "final": final,
        "wall_seconds": round(wall, 1),
        "client_updates_per_second": round(sum(r["completed"] for r in rounds) / wall, 2),
        "peak_memory_tree_mb": round(memory.peak_mb),
        "time_split_seconds": {
            "fit_rounds_total": round(fit_wall, 1),
            "local_training_estimate": round(compute, 1),
            "engine_overhead_estimate": round(fit_wall - compute, 1),
            "evaluation_and_startup": round(wall - fit_wall, 1),
            "local_training_per_client": round(per_client, 4),
        },
        "ndcg_by_round": [(r["round"], r["ndcg@10"]) for r in history],
    }
    if args.central_ndcg:
        result["ratio_to_central"] = round(final["ndcg@10"] / args.central_ndcg, 3)
    (HERE / "results" / f"{name}.json").write_text(json.dumps(result, indent=2))
    plot(result, args.central_ndcg, HERE / "results" / f"{name}.png")
    print(json.dumps({k: v for k, v in result.items() if k != "ndcg_by_round"}, indent=2))


def plot(result: dict, central: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = zip(*result["ndcg_by_round"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(x, y, marker="o", label="federated (central protocol, all users)")
    if central:
        ax.axhline(central, color="gray", ls="--", label="same model, central training")
        ax.axhline(0.9 * central, color="gray", ls=":", label="90% of central")
    ax.set_xlabel("round")
    ax.set_ylabel("NDCG@10 (test, full ranking)")
    ax.set_title(result["config"]["dataset"])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
