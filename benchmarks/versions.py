"""The same simulation on two fedrec versions, side by side: do they reach the same metrics for
the same seed, and is the newer one's round time any slower?

    pip install --no-deps --target /tmp/fedrec-old <checkout of the older commit>
    python benchmarks/versions.py --old /tmp/fedrec-old --dataset synthetic --rounds 100

Each repeat runs `fedrec simulate` once per version, alternating (old, new, old, new, ...) so
that the shared machine's load hits both alike. The older version is imported from `--old`
(put first on PYTHONPATH); the newer one is this checkout's install. Writes
benchmarks/results/versions-<dataset>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
COMPARED = ("hr@10", "ndcg@10", "recall@20", "mrr@10", "valid_ndcg@10", "federated_ndcg@10")


def run(version: str, old: Path, args, out: Path) -> dict:
    env = {**os.environ}
    if version == "old":
        env["PYTHONPATH"] = f"{old}{os.pathsep}{env.get('PYTHONPATH', '')}"
    command = [sys.executable, "-m", "fedrec.cli", "simulate", "--dataset", args.dataset,
               "--rounds", str(args.rounds), "--eval-every", str(args.eval_every),
               "--seed", str(args.seed), "--out", str(out)]
    if args.engine:
        command += ["--engine", args.engine]
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=out.parent,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    final = json.loads((out / "metrics.json").read_text())
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    fits = [r["fit_seconds"] for r in rounds[1:]]  # the first round pays the engine's start-up
    return {"version": version, "wall_seconds": round(wall, 2),
            "round_seconds_median": statistics.median(fits),
            "metrics": {k: final.get(k) for k in COMPARED}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="site dir of the older fedrec")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", default="", help="batched | ray (default: auto)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for version in ("old", "new"):
                runs.append(run(version, args.old, args, Path(tmp) / f"{version}-{i}"))
                print(json.dumps(runs[-1]), flush=True)
    summary = summarize(runs, args)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"versions-{Path(args.dataset).name}{'-' + args.engine if args.engine else ''}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    plot(summary, stem.with_suffix(".png"))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


def summarize(runs: list[dict], args) -> dict:
    """Metric agreement and round-time ratios of alternating (old, new) runs."""
    by = {v: [r for r in runs if r["version"] == v] for v in ("old", "new")}
    difference = max(abs((a["metrics"][k] or 0) - (b["metrics"][k] or 0))
                     for a, b in zip(by["old"], by["new"]) for k in COMPARED)
    ratios = [b["round_seconds_median"] / a["round_seconds_median"]
              for a, b in zip(by["old"], by["new"])]
    return {"dataset": args.dataset, "rounds": args.rounds, "seed": args.seed,
            "engine": args.engine or "auto", "runs": runs,
            "max_metric_difference": difference,
            "round_time_ratio_new_over_old": ratios,
            "round_time_ratio_median": statistics.median(ratios)}


def plot(summary: dict, path: Path) -> None:
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for version, color in (("old", "tab:gray"), ("new", "tab:blue")):
        values = [r["round_seconds_median"] for r in summary["runs"] if r["version"] == version]
        ax.plot(range(1, len(values) + 1), values, "o-", color=color, label=version)
    ax.set_xlabel("repeat (old and new run alternately)")
    ax.set_ylabel("median seconds per round")
    ax.set_title(f"{summary['dataset']}: new/old round time "
                 f"{summary['round_time_ratio_median']:.2f}×, metrics differ by at most "
                 f"{summary['max_metric_difference']:.1e}", fontsize=9)
    ax.legend()
    save_png(fig, path)


if __name__ == "__main__":
    main()
