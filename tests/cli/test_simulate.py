"""`fedrec simulate` as a new user meets it: a run that cannot start is refused at once, before
torch and Flower load, with no run directory left; the summary says what the run did."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedrec.cli.simulate import summary

USERS = 30  # fewer than the default 45 clients per round

# runs `fedrec ARGV...` and reports, after the command, whether torch or Flower was imported
PROBE = """
import sys
from fedrec.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    print(exc.code, sorted(m for m in ("torch", "flwr", "ray") if m in sys.modules))
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory, synthetic_home):
    with synthetic_home(tmp_path_factory.mktemp("home"), "tiny", num_users=USERS, num_items=40,
                        interactions_per_user=10) as root:
        yield root


def probe(cwd: Path, home: Path, *argv) -> tuple[str, str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "FEDREC_HOME": str(home)})
    return result.stdout.strip(), result.stderr.strip()


@pytest.mark.parametrize("args, message", [
    (["--dataset", "tinny"], "no data set 'tinny'"),
    (["--dataset", "tiny", "--clients-per-round", "100000"],
     f"--clients-per-round 100000: more clients per round than the {USERS} users of data set "
     f"'tiny' (one client each); expected at most {USERS}"),
    (["--dataset", "tiny", "--dp", "record", "--epsilon", "inf"],
     "privacy.epsilon = inf; expected a finite number > 0"),
    (["--dataset", "tiny", "--dp", "user", "--epsilon", "nan"], "privacy.epsilon = nan"),
    (["--dataset", "tiny", "--noise-multiplier", "nan"], "privacy.noise_multiplier = nan"),
])
def test_a_run_that_cannot_start_is_refused_before_torch_loads_and_leaves_no_run_directory(
        home, tmp_path, args, message):
    out, err = probe(tmp_path, home, "simulate", *args)  # the default run directory: ./runs/…
    assert out == "2 []"  # exit code 2, neither torch nor Flower imported
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err
    assert not (tmp_path / "runs").exists()


def test_a_default_population_smaller_than_the_cohort_names_the_config_key(home, tmp_path):
    out, err = probe(tmp_path, home, "simulate", "--dataset", "tiny", "--out", str(tmp_path / "r"))
    assert out == "2 []"
    assert (f"federation.clients_per_round = 45 (the default): more clients per round than the "
            f"{USERS} users") in err
    assert not (tmp_path / "r").exists()


def test_an_out_that_holds_a_run_is_refused_before_torch_loads(home, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.toml").write_text("")
    out, err = probe(tmp_path, home, "simulate", "--dataset", "tiny", "--clients-per-round", "5",
                     "--out", str(tmp_path / "r"))
    assert out == "2 []" and "already holds a run" in err


@pytest.mark.parametrize("mode", ["record", "user"])
def test_a_budget_no_client_can_spend_is_an_error_before_round_1(home, tmp_path, fedrec_cli,
                                                                  mode):
    code, _, err = fedrec_cli("simulate", "--dataset", "tiny", "--clients-per-round", "5",
                              "--rounds", "3", "--dp", mode, "--epsilon", "1e-9",
                              "--out", str(tmp_path / "r"))
    assert code == 2
    assert f"privacy.epsilon = 1e-09 ({mode} level, δ = 1e-05) is out of reach" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("progress_files, kept", [([], False), (["rounds.jsonl"], True),
                                                  (["clients"], True)])
def test_a_run_that_fails_before_its_first_round_leaves_no_directory(
        home, tmp_path, fedrec_cli, monkeypatch, progress_files, kept):
    import fedrec.simulation.run

    def fails_after_starting(cfg, run_dir, **_):
        run_dir.mkdir(parents=True)
        (run_dir / "anonymization.json").write_text("{}")
        for name in progress_files:  # what the first round writes
            (run_dir / name).mkdir()
        raise RuntimeError("the engine did not start")

    monkeypatch.setattr(fedrec.simulation.run, "simulate", fails_after_starting)
    with pytest.raises(RuntimeError, match="did not start"):
        fedrec_cli("simulate", "--dataset", "tiny", "--clients-per-round", "5",
                   "--out", str(tmp_path / "r"))
    assert (tmp_path / "r").exists() == kept


def final_metrics(**privacy) -> dict:
    return {"hr@10": 0.1, "ndcg@10": 0.05, "rounds": 5, "selected_round": 1,
            "privacy": {"unit": "user", "epsilon": 0.9, "epsilon_budget": 1.0, "delta": 1e-5,
                        "accountant": "rdp", "releases": 1, **privacy}}


def test_the_summary_says_when_the_privacy_budget_ran_out(tmp_path):
    final = final_metrics(budget_exhausted_after_round=1)
    lines = summary(final, [{"model": "fedrec (federated)", **final}], tmp_path)
    assert ("the privacy budget ran out after round 1: later rounds were not aggregated"
            in lines)
    assert lines.index(next(x for x in lines if x.startswith("user-level DP"))) + 1 == \
        lines.index("the privacy budget ran out after round 1: later rounds were not aggregated")
    final = final_metrics()
    assert not any("ran out" in line for line in summary(final, [final], tmp_path))
