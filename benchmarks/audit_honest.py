"""Benchmark: does `fedrec audit` pass every honest run? The settings the README shows, each run
on small synthetic data with the `fedrec` command a user types, then audited with
`fedrec audit RUN` (exit code 0: pass).

    python benchmarks/audit_honest.py --work /tmp/honest             # all settings
    python benchmarks/audit_honest.py --work /tmp/honest --only user-dp-secagg-dropout
    python benchmarks/audit_honest.py --work /tmp/honest --out honest.md

The data set is `fedrec data synth --users 200 --items 300 --seed 1 --name small` (in
`--work`/home, the FEDREC_HOME of every command). Every run has 6 rounds of 20 clients.
The rotation setting runs record-level DP with a checkpoint every 2 rounds, kills the run
(SIGKILL, with every process it started) once 3 rounds are recorded, rotates the pseudonym
of every device that has a store by then (`fedrec client pseudonym --rotate`), and resumes
it (`fedrec simulate --resume`). A run already finished in `--work` is audited again, not
re-run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "simulation"))

COMMON = ["--dataset", "small", "--rounds", "6", "--clients-per-round", "20"]
SETTINGS = {
    "record-dp": ["--dp", "record", "--epsilon", "8"],
    "user-dp": ["--dp", "user", "--epsilon", "8"],
    "user-dp-secagg-dropout": ["--dp", "user", "--epsilon", "8", "--secagg",
                               "--secagg-dropout", "0.3", "--fail-rate", "0.2"],
    "record-dp-rotate-resume": ["--dp", "record", "--epsilon", "8", "--eval-every", "2"],
    "plain": [],
    "fail-rate": ["--fail-rate", "0.3"],
}
KILL_AFTER_ROUNDS = 3


def fedrec(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedrec.cli", *args], text=True,
                          capture_output=True, **kwargs)


def run_setting(name: str, run: Path) -> None:
    """Run setting `name` into `run` (nothing if it finished before)."""
    if (run / "metrics.json").exists():
        return
    args = ["simulate", *COMMON, *SETTINGS[name], "--out", str(run)]
    if name != "record-dp-rotate-resume":
        done = fedrec(*args)
        if done.returncode:
            raise RuntimeError(f"{name}: fedrec simulate failed:\n{done.stderr[-2000:]}")
        return
    if not (run / "config.toml").exists():
        kill_after(args, run, KILL_AFTER_ROUNDS)
        for store in sorted((run / "clients").glob("*.sqlite")):
            rotated = fedrec("client", "pseudonym", "--rotate", "--store", str(store))
            if rotated.returncode:
                raise RuntimeError(f"rotating {store}: {rotated.stderr}")
    done = fedrec("simulate", "--resume", str(run))
    if done.returncode:
        raise RuntimeError(f"{name}: fedrec simulate --resume failed:\n{done.stderr[-2000:]}")


def kill_after(args: list[str], run: Path, rounds: int) -> None:
    """Start `fedrec ARGS` and SIGKILL it, and every process it started, once rounds.jsonl
    holds `rounds` lines."""
    from kill_points import kill_tree

    proc = subprocess.Popen([sys.executable, "-m", "fedrec.cli", *args],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = run / "rounds.jsonl"
    while not (log.exists() and len(log.read_text().splitlines()) >= rounds):
        if proc.poll() is not None:
            raise RuntimeError("the run ended before it could be killed")
        time.sleep(0.05)
    kill_tree(proc)


def audit(run: Path) -> dict:
    """`fedrec audit RUN` as a user runs it, and the findings of its JSON report."""
    report = run / "honest-audit.json"
    done = fedrec("audit", str(run), "--format", "json", "--out", str(report))
    findings = json.loads(report.read_text())["findings"] if report.exists() else []
    by = {s: [f["what"] for f in findings if f["severity"] == s]
          for s in ("failure", "warning", "note")}
    return {"exit": done.returncode, **by}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--only", action="append", choices=sorted(SETTINGS))
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    os.environ["FEDREC_HOME"] = str(work / "home")
    if not (work / "home" / "datasets" / "small").exists():
        fedrec("data", "synth", "--users", "200", "--items", "300", "--seed", "1", "--name",
               "small", check=True)
    rows, passed = [], 0
    names = args.only or list(SETTINGS)
    for name in names:
        started = time.perf_counter()
        run_setting(name, work / name)
        result = audit(work / name)
        ok = result["exit"] == 0
        passed += ok
        rotations = [n for n in result["note"] if "rotated before round" in n]
        shown = (result["failure"][:2] or result["warning"][:2]
                 or [n for n in result["note"] if "rotated" not in n][:2])
        if rotations:  # a device's ledger lines changing pseudonym
            shown = [*shown, f"{len(rotations)} rotations visible in the ledger, e.g. "
                             f"{rotations[0]}"]
        rows.append(f"| {name} | `fedrec simulate {' '.join(SETTINGS[name])}` | "
                    f"{'pass' if ok else 'FAIL'} | {len(result['failure'])} / "
                    f"{len(result['warning'])} / {len(result['note'])} | "
                    f"{'; '.join(shown) or '—'} | {time.perf_counter() - started:.0f} |")
        print(rows[-1], flush=True)
    text = "\n".join([
        f"Honest runs audited: {passed} of {len(names)} pass "
        f"({100 * passed / len(names):.0f} %). Small synthetic data (200 users, 300 items), "
        f"{' '.join(COMMON[2:])}.", "",
        "| setting | flags | audit | failures / warnings / notes | findings shown | s |",
        "|---|---|---|---|---|---|", *rows]) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if passed == len(names) else 1


if __name__ == "__main__":
    raise SystemExit(main())
