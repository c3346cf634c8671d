"""Benchmark: SecAgg+ against plain aggregation on the same clients.

For each cohort size (clients per round) runs the same federation twice — plain and with
`federation.secagg` — for a few rounds of FedAvg (η = 1) from the same initial model, so
round 1 aggregates the very same client updates. Reports:
- aggregate error: max |θ_secagg − θ_plain| after round 1, absolute and relative to max |θ|
  (this includes any difference between the two runs' client training), and the protocol's
  own error on identical updates (Flower's quantization arithmetic, offline);
- overhead: mean wall time of rounds 2..R (round 1 includes the engine's start-up), and where
  a SecAgg+ round's time goes (setup, share keys, collect masked vectors, unmask + aggregate).
Writes benchmarks/results/secagg-<dataset>.json and a PNG.

    python benchmarks/secagg.py --dataset ml-100k --cohorts 10 50 100 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def run(args, cohort: int, secagg: bool) -> Path:
    from fedrec.common.config import RunConfig
    from fedrec.simulation.run import simulate

    run_dir = RESULTS / f"secagg-{args.dataset}-{cohort}-{'secure' if secagg else 'plain'}"
    if (run_dir / "metrics.json").exists():
        return run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = RunConfig(dataset=args.dataset, seed=args.seed)
    cfg.federation = replace(cfg.federation, rounds=args.rounds, clients_per_round=cohort,
                             strategy="fedavg", server_lr=1.0,
                             server_lr_schedule="constant", eval_every=args.rounds, eval_clients=10,
                             checkpoint_every=1, secagg=secagg,
                             secagg_dropout=args.dropout)
    simulate(cfg.validate(), run_dir, progress=False)
    return run_dir


def quantization_only(args, cohort: int) -> float:
    """The protocol's own error, without the simulation: real client updates (the first
    `cohort` ML-100K users, one local round from the initial model), weighted, quantized,
    summed and dequantized with Flower's own SecAgg+ arithmetic, against the exact FedAvg
    mean. Max absolute error per coordinate."""
    import torch
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    from fedrec.client.local import fit_local
    from fedrec.common import secagg as sa
    from fedrec.common.config import RunConfig
    from fedrec.common.model import FedRecModel
    from fedrec.simulation.devices import DataSpec, catalog_embeddings, user_partition

    cfg = RunConfig(dataset=args.dataset, seed=args.seed)
    spec = DataSpec(cfg.dataset, cfg.cold_fraction, cfg.seed, cfg.encoder)
    emb = catalog_embeddings(spec)
    model_cfg = replace(cfg.fedrec, input_dim=int(emb.shape[1]))
    torch.manual_seed(0)
    init = FedRecModel(model_cfg, 1).shared_arrays()
    updates = [fit_local(model_cfg, cfg.train, emb, init, None, user_partition(spec, u), 2, u)
               for u in range(cohort)]
    weights = np.array([min(n, cfg.federation.secagg_max_weight) for _, _, n, _ in updates])
    flat = [np.concatenate([a.ravel() for a in arrays]).astype(np.float64)  # as clients send
            for arrays, _, _, _ in updates]
    exact = sum(f * w for f, w in zip(flat, weights)) / weights.sum()
    r = sa.clipping_range(init, cfg.federation.max_update_norm)
    q = sa.quantization_range(cohort)
    ratios = [round(w / cfg.federation.secagg_max_weight * q) for w in weights]
    total = sum(quantize([f * (k / q)], r, q)[0] for f, k in zip(flat, ratios))
    secure = (dequantize([total], r, q)[0] - (cohort - 1) * r) * q / sum(ratios)
    return float(np.abs(secure - exact).max())


def main() -> None:
    from fedrec.common import secagg as sa
    from fedrec.common.jsonl import read_jsonl
    from fedrec.server import checkpoint

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--cohorts", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rows = []
    for cohort in args.cohorts:
        plain, secure = run(args, cohort, False), run(args, cohort, True)
        first = "round-000001.safetensors"
        _, a, _ = checkpoint.load(plain / "checkpoints" / first)
        _, b, _ = checkpoint.load(secure / "checkpoints" / first)
        error = max(float(np.abs(a[k] - b[k]).max()) for k in a)
        scale = max(float(np.abs(v).max()) for v in a.values())
        plain_rounds = read_jsonl(plain / "rounds.jsonl")[1:]
        secure_rounds = read_jsonl(secure / "rounds.jsonl")[1:]
        plain_s = float(np.mean([r["fit_seconds"] for r in plain_rounds]))
        secure_s = float(np.mean([r["fit_seconds"] for r in secure_rounds]))
        stages = {k: round(float(np.mean([r["secagg_seconds"][k] for r in secure_rounds])), 2)
                  for k in secure_rounds[0]["secagg_seconds"]}
        stages["unmask_and_aggregate"] = round(secure_s - sum(stages.values()), 2)
        shares, threshold = sa.neighbourhood(cohort, args.dropout, 0.05, 1e-4)
        init = list(checkpoint.load(plain / "checkpoints" / first)[1].values())
        bound = sa.clipping_range(init, 100.0)
        rows.append({
            "clients_per_round": cohort, "num_shares": shares, "threshold": threshold,
            "quantization_range": sa.quantization_range(cohort),
            "quantization_step_bound": sa.quantization_error(bound,
                                                             sa.quantization_range(cohort)),
            "max_abs_error": error, "relative_error": error / scale,
            "protocol_only_max_abs_error": quantization_only(args, cohort),
            "plain_round_seconds": round(plain_s, 2), "secagg_round_seconds": round(secure_s, 2),
            "overhead": round(secure_s / plain_s, 2), "secagg_stage_seconds": stages,
        })
        print(json.dumps(rows[-1]), flush=True)
    result = {"config": vars(args), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"secagg-{args.dataset}.json").write_text(json.dumps(result, indent=2))
    plot(rows, RESULTS / f"secagg-{args.dataset}.png", args.dataset)


def plot(rows: list[dict], path: Path, dataset: str) -> None:
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.bar(x - 0.2, [r["plain_round_seconds"] for r in rows], 0.4, label="plain")
    bottom = np.zeros(len(rows))
    for stage in rows[0]["secagg_stage_seconds"]:
        values = np.array([r["secagg_stage_seconds"][stage] for r in rows])
        ax.bar(x + 0.2, values, 0.4, bottom=bottom, label=f"SecAgg+: {stage}")
        bottom += values
    ax.set_xticks(x, [f"{r['clients_per_round']} clients\n(k={r['num_shares']})" for r in rows])
    ax.set_ylabel("seconds per round")
    ax.set_title(f"SecAgg+ vs plain aggregation, {dataset}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path, dpi=120)


if __name__ == "__main__":
    main()
