"""Kill a simulation with SIGKILL at a named point of a round, for the kill-and-resume tests
(tests/simulation/test_resume.py) and benchmarks/kill_resume.py; `kill_tree` for any run
started as a process group.

    python kill_points.py POINT ROUND CONFIG RUN

runs `simulate(CONFIG, RUN)` on the in-process engine (clients and server in one process, so
every point below is reachable) with POINT patched: when the run reaches it in round ROUND, it
writes `RUN.reached` and waits; `kill_at` then SIGKILLs it there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# where a run can die, in the order a round passes them
POINTS = {
    "after-charge": "a device charged its account (and wrote its ledger line), nothing trained",
    "after-training": "a device trained its update, which has not left it yet",
    "mid-aggregation": "every reply arrived, the server has not aggregated them",
    "before-checkpoint": "the round's line is in rounds.jsonl, its checkpoint is not written",
    "between-rounds": "the round is checkpointed, the next one not started",
}


def _reached(run: Path) -> None:
    Path(f"{run}.reached").write_text("")
    while True:  # the test kills this process here
        time.sleep(1)


def _patch(point: str, round_: int, run: Path) -> None:
    from fedrec.client import budget, dp
    from fedrec.server import checkpoint
    from fedrec.server.strategy import FedRecStrategy

    if point == "after-charge":
        charge, seen = budget.PrivacyAccount.charge, []

        def charged(self, r, *args, **kwargs):
            result = charge(self, r, *args, **kwargs)
            seen.append(r)
            if seen.count(round_) == 2:  # mid-round: one device charged before, others after
                _reached(run)
            return result

        budget.PrivacyAccount.charge = charged
    elif point == "after-training":
        fit, seen = dp.fit_private, []

        def trained(*args, **kwargs):
            result = fit(*args, **kwargs)
            seen.append(1)
            if len(seen) > 2 and _current_round[0] == round_:
                _reached(run)
            return result

        dp.fit_private = trained
    elif point == "mid-aggregation":
        aggregate = FedRecStrategy.aggregate_fit

        def aggregating(self, server_round, *args, **kwargs):
            if self._round(server_round) == round_:
                _reached(run)
            return aggregate(self, server_round, *args, **kwargs)

        FedRecStrategy.aggregate_fit = aggregating
    elif point == "before-checkpoint":
        save = checkpoint.save

        def saving(directory, r, *args, **kwargs):
            if r == round_:
                _reached(run)
            return save(directory, r, *args, **kwargs)

        checkpoint.save = saving
    elif point != "between-rounds":
        raise SystemExit(f"unknown point {point!r}; expected one of {list(POINTS)}")
    configure = FedRecStrategy.configure_fit

    def configuring(self, server_round, *args, **kwargs):
        _current_round[0] = self._round(server_round)
        if point == "between-rounds" and _current_round[0] == round_ + 1:
            _reached(run)
        return configure(self, server_round, *args, **kwargs)

    FedRecStrategy.configure_fit = configuring


_current_round = [0]


def kill_tree(proc) -> None:
    """SIGKILL a run started with `start_new_session=True` and every process it started (Ray's
    workers leave its process group, and an orphaned worker would go on writing client state
    during the resume)."""
    import psutil

    tree = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for child in tree:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=30)
    proc.wait()


def kill_at(point: str, round_: int, cfg, run: Path, timeout: float = 600.0) -> None:
    """Run `cfg` into `run` in a child process and SIGKILL it at `point` of round `round_`."""
    from fedrec.common import config

    run = Path(run)
    config.save(cfg, run.parent / f"{run.name}.toml")
    marker = Path(f"{run}.reached")
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, point, str(round_),
                             str(run.parent / f"{run.name}.toml"), str(run)],
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {point} of round {round_}: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, f"{point} of round {round_} not reached"
        time.sleep(0.05)
    kill_tree(proc)


def main() -> None:
    point, round_, config_path, run = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    from fedrec.common import config
    from fedrec.simulation.run import simulate

    _patch(point, round_, run)
    simulate(config.load(config_path), run, progress=False)


if __name__ == "__main__":
    main()
