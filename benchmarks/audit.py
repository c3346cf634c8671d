"""Benchmark: `fedrec audit` on a real run directory, and the membership attack on ML-100K.

    python benchmarks/audit.py time RUN_DIR          # seconds for the full audit (md + plots)
    python benchmarks/audit.py attack --dataset ml-100k --trials 200

The run audited in docs/results.md was made with this config (dp-audit-run.toml):

    dataset = "ml-100k"
    [federation]
    rounds = 50
    clients_per_round = 50
    strategy = "fedavgm"
    eval_every = 10
    eval_clients = 50
    checkpoint_every = 10
    [privacy]
    mode = "record"
    epsilon = 8.0

    fedrec simulate --config dp-audit-run.toml --out RUN_DIR --egress-log RUN_DIR/egress.jsonl

`time` runs `fedrec audit RUN_DIR` three times, each in a fresh process (imports included),
and writes benchmarks/results/audit-time.json. `attack` runs the canary attack of
`fedrec.audit.attack` without protection, with record-level DP at ε = 1, 3 and 8 (one
release calibrated to spend exactly ε), and on the SecAgg+ sum of a 10-client cohort, and
writes benchmarks/results/attack-<dataset>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def time_audit(run_dir: Path) -> dict:
    """Wall time of `fedrec audit RUN_DIR` as a user runs it: a fresh process each time."""
    import subprocess
    import sys

    from fedrec.audit.run import audit

    timings = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fedrec.cli", "audit", str(run_dir)], check=False,
                       stdout=subprocess.DEVNULL)
        timings.append(round(time.perf_counter() - started, 2))
    report = audit(run_dir)
    lines = report["crosscheck"].get("lines", 0)
    result = {"run": str(run_dir), "ledger_lines": lines, "seconds": timings,
              "verdict": report["verdict"], "clients": report["spent"].get("clients_released"),
              "rounds": report["rounds_run"], "pld_lines": report["crosscheck"].get("pld_lines"),
              "max_difference_rdp": report["crosscheck"].get("max_difference_rdp"),
              "max_difference_pld": report["crosscheck"].get("max_difference_pld"),
              "egress_messages": (report["egress"] or {}).get("messages")}
    print(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("time")
    t.add_argument("run_dir", type=Path)
    a = sub.add_parser("attack")
    a.add_argument("--dataset", default="ml-100k")
    a.add_argument("--trials", type=int, default=200)
    a.add_argument("--cohort", type=int, default=10)
    a.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.what == "time":
        (RESULTS / "audit-time.json").write_text(json.dumps(time_audit(args.run_dir), indent=1))
        return
    from fedrec.audit import attack
    from fedrec.client.attack_target import DeviceUpdates
    from fedrec.common.config import RunConfig

    started = time.perf_counter()
    report = attack.attack_all(RunConfig(dataset=args.dataset, seed=args.seed).validate(),
                               DeviceUpdates, trials=args.trials, cohort=args.cohort,
                               seed=args.seed)
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = RESULTS / f"attack-{args.dataset}.json"
    out.write_text(json.dumps(report, indent=1))
    attack.plot(report, out.with_suffix(".png"))
    print(attack.table(report))


if __name__ == "__main__":
    main()
