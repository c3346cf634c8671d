"""Benchmark: what `fedrec audit` catches when a run's records are edited.

    python benchmarks/tampering.py                       # runs made in a temporary directory
    python benchmarks/tampering.py --work /tmp/tamper    # runs kept there, reused next time
    python benchmarks/tampering.py --out results.md      # the table as Markdown, also printed

It makes two small real runs — record-level and user-level DP, 3 rounds of 6 of 30 synthetic
clients (`tests/audit/tampering.py`, the tampering suite's own runs) — then applies every edit
of the suite to a fresh copy of its run and audits the copy: each edit is *caught* (the audit
fails, or refuses the run), *missed*, or *undetectable by design* (the edit rewrites every
record consistently; the reason is given). The first failing finding is shown.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "audit"))

from tampering import failures  # noqa: E402  (the catalogue the tests use)


def outcome(run: Path, edit) -> tuple[str, str]:
    """(caught | missed | undetectable by design, the first failure or the reason)."""
    found = failures(run)
    if found:
        return "caught", found[0]
    return ("missed", "—") if edit.detectable else ("undetectable by design", edit.why_not)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the runs and edited copies here")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fedrec-tampering-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["FEDREC_HOME"] = str(work / "home")

    import tampering

    tampering.make_dataset(work / "home")
    started = time.perf_counter()
    runs, made = {}, []
    for kind in tampering.KINDS:
        runs[kind] = work / kind
        if not (runs[kind] / "metrics.json").exists():
            tampering.make_run(kind, runs[kind])
            made.append(kind)
    seconds = time.perf_counter() - started
    rows, counts = [], {}
    shutil.rmtree(work / "edited", ignore_errors=True)  # the copies of an earlier invocation
    for i, edit in enumerate(tampering.EDITS):
        copy = tampering.copy_run(runs[edit.run], work / "edited" / f"{i:03d}-{edit.name}")
        edit.apply(copy)
        result, finding = outcome(copy, edit)
        counts[result] = counts.get(result, 0) + 1
        rows.append(f"| {edit.name} | {edit.what} | {result} | {_cell(finding)} |")
    honest = {kind: not failures(run) for kind, run in runs.items()}
    lines = [f"Tampering suite: {len(tampering.EDITS)} edits of two real runs (record-level and "
             "user-level DP, 3 rounds of 6 of 30 synthetic clients; "
             + (f"made in {seconds:.0f} s)." if made else f"reused from {work})."), "",
             "| edit | what changed | result | first failing finding |", "|---|---|---|---|",
             *rows, "",
             ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + "; the unedited runs: "
             + ", ".join(f"{k} {'passes' if ok else 'FAILS'}" for k, ok in honest.items())
             + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 1 if counts.get("missed") or not all(honest.values()) else 0


def _cell(text: str) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 160 else text[:157] + "…"


if __name__ == "__main__":
    raise SystemExit(main())
