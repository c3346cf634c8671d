"""Is `fedrec.simulation.engine.patch_message_sweep` still worth keeping? The Ray engine's round
time with and without it, on a federation with many registered nodes, side by side.

    python benchmarks/sweep_patch.py --dataset ml-100k --rounds 6 --repeats 2

flwr 1.41's engine polls every registered node every 0.1 s; the patch visits only nodes with
pending messages. Each repeat runs `fedrec simulate --engine ray` once unpatched and once
patched (alternating). Writes benchmarks/results/sweep-patch-<dataset>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
RUNNER = """
import sys
import fedrec.simulation.engine as engine
if sys.argv[1] == "off":
    engine.patch_message_sweep = lambda: False
from fedrec.cli.main import main
main(sys.argv[2:])
"""


def run(patch: str, args, out: Path) -> dict:
    command = [sys.executable, "-c", RUNNER, patch, "simulate", "--dataset", args.dataset,
               "--engine", "ray", "--rounds", str(args.rounds), "--eval-every",
               str(args.rounds), "--eval-clients", "1", "--out", str(out)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    fits = [r["fit_seconds"] for r in rounds[1:]]  # round 1 pays Ray's start-up
    return {"patch": patch, "wall_seconds": round(wall, 1),
            "round_seconds_median": statistics.median(fits), "round_seconds": fits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for patch in ("off", "on"):
                runs.append(run(patch, args, Path(tmp) / f"{patch}-{i}"))
                print(json.dumps(runs[-1]), flush=True)
    ratios = [on["round_seconds_median"] / off["round_seconds_median"]
              for off, on in zip(runs[::2], runs[1::2])]
    summary = {"dataset": args.dataset, "rounds": args.rounds, "runs": runs,
               "round_time_ratio_patched_over_unpatched": ratios,
               "ratio_median": statistics.median(ratios)}
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"sweep-patch-{Path(args.dataset).name}"
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    plot(summary, stem.with_suffix(".png"))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


def plot(summary: dict, path: Path) -> None:
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for patch, color in (("off", "tab:gray"), ("on", "tab:blue")):
        values = [r["round_seconds_median"] for r in summary["runs"] if r["patch"] == patch]
        ax.plot(range(1, len(values) + 1), values, "o-", color=color, label=f"patch {patch}")
    ax.set_xlabel("repeat")
    ax.set_ylabel("median seconds per round (Ray engine)")
    ax.set_title(f"{summary['dataset']}: patched/unpatched {summary['ratio_median']:.2f}×",
                 fontsize=9)
    ax.legend()
    save_png(fig, path)


if __name__ == "__main__":
    main()
