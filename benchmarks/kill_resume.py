"""Kill-and-resume: a record-level DP simulation SIGKILLed at every point of a round
(tests/simulation/kill_points.py) in each of its rounds, resumed, and compared with the
uninterrupted run. Counts double charges (a device charged twice for one round), lost or extra
charges (a device charged in other rounds than uninterrupted), repeated (device, round) ledger
lines and audit verdicts.

    python benchmarks/kill_resume.py [--rounds 1 2 3] [--out benchmarks/results/kill_resume.md]
    python benchmarks/kill_resume.py --from-log LOG   # the table from a run's printed rows

("between-rounds" of the last round does not exist: the run finishes instead.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "simulation"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/kill_resume.md")
    parser.add_argument("--from-log", type=Path, help="rows printed by an earlier run")
    args = parser.parse_args()
    if args.from_log:
        rows = [json.loads(line) for line in args.from_log.read_text().splitlines()
                if line.startswith("{")]
        return write_table(rows, args.out)

    import os

    from kill_points import POINTS, kill_at
    from test_resume import charged_rounds, declined, dp_run

    from fedrec.audit.run import audit
    from fedrec.common import privacy
    from fedrec.common.data import files, synthetic
    from fedrec.simulation.run import simulate

    work = Path(tempfile.mkdtemp(prefix="fedrec-kills-"))
    os.environ["FEDREC_HOME"] = str(work / "home")
    files.save_dir(synthetic.generate(name="kills", num_users=24, num_items=40,
                                      interactions_per_user=16), work / "home/datasets/kills")
    simulate(dp_run(), work / "straight", progress=False)
    expected, expected_declines = charged_rounds(work / "straight"), declined(work / "straight")

    rows = []
    for round_ in args.rounds:
        for point in POINTS:
            if point == "between-rounds" and round_ == dp_run().federation.rounds:
                continue
            run = work / f"{point}-{round_}"
            kill_at(point, round_, dp_run(), run)
            simulate(None, run, resume=True, progress=False)
            charged = charged_rounds(run)
            double = sum(n - len(set(r)) for r in charged.values() for n in [len(r)])
            lines = privacy.read_ledger(run / "privacy" / "ledger.jsonl")
            repeated = sum(c - 1 for c in Counter((x["client"], x["round"]) for x in lines).values())
            rows.append({"point": point, "round": round_, "double_charges": double,
                         "charges_differing": sum(charged.get(k) != v for k, v in expected.items()),
                         "repeated_ledger_lines": repeated,
                         "declines_differing": declined(run) != expected_declines,
                         "audit": audit(run)["verdict"]})
            print(json.dumps(rows[-1]), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    write_table(rows, args.out)


def write_table(rows: list[dict], out: Path) -> None:
    from kill_points import POINTS

    table = ["| kill point | round | double charges | devices charged differently | "
             "repeated (device, round) lines | declines differ | audit |", "|---|---|---|---|---|---|---|"]
    table += [f"| {r['point']} | {r['round']} | {r['double_charges']} | {r['charges_differing']} | "
              f"{r['repeated_ledger_lines']} | {'yes' if r['declines_differing'] else 'no'} | "
              f"{r['audit']} |" for r in rows]
    total = sum(r["double_charges"] for r in rows)
    table += ["", f"{len(rows)} kills at {len(POINTS)} distinct points; double charges found: {total}."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
