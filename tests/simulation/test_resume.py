"""A record-level DP run SIGKILLed anywhere in a round resumes without charging any device
twice for one round: every device is charged in exactly the rounds the uninterrupted run
charges it in, each (device, round) is in the ledger once, and `fedrec audit` passes."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fedrec.common import config, privacy
from fedrec.common.model import ModelConfig
from fedrec.common.train import TrainConfig
from fedrec.simulation.run import simulate

sys.path.insert(0, str(Path(__file__).parent))
from kill_points import POINTS, kill_at  # noqa: E402

pytestmark = pytest.mark.slow
KILLED_IN = 2


@pytest.fixture(scope="module")
def home(tmp_path_factory, synthetic_home):
    with synthetic_home(tmp_path_factory.mktemp("home"), "kills", num_users=24, num_items=40,
                        interactions_per_user=16) as root:
        yield root


def dp_run() -> config.RunConfig:
    """Record-level DP, 3 rounds of 8 of 24 devices: devices are sampled in several rounds,
    so one killed round lies between two charges of the same device."""
    cfg = config.RunConfig(
        dataset="kills", fedrec=ModelConfig(dim=8, num_experts=2, max_history=8, num_layers=1,
                                            dropout=0.0),
        train=TrainConfig(lr=1e-2, batch_size=4))
    cfg.federation = replace(cfg.federation, rounds=3, clients_per_round=8, eval_every=3,
                             eval_clients=0, checkpoint_every=3, engine="in-process")
    cfg.privacy = replace(cfg.privacy, mode="record", epsilon=50.0, window=4, negatives=5)
    return cfg.validate()


def declined(run: Path) -> list[int]:
    """Devices that declined to train, per round (out of budget, or a second release)."""
    return [json.loads(x)["declined"] for x in (run / "rounds.jsonl").read_text().splitlines()]


def charged_rounds(run: Path) -> dict[str, list[int]]:
    """Device file -> the rounds its account charged, in order."""
    from fedrec.client.budget import PrivacyAccount
    from fedrec.client.store import DeviceStore

    charged = {}
    for path in sorted((run / "clients").glob("*.sqlite")):
        with DeviceStore(path, fsync=False) as store:
            charged[path.name] = [h[3] for h in PrivacyAccount(store, 1e-5).history]
    return charged


@pytest.fixture(scope="module")
def uninterrupted(home, tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    simulate(dp_run(), run, progress=False)
    return charged_rounds(run), declined(run)


@pytest.mark.parametrize("point", list(POINTS))
def test_a_run_killed_anywhere_resumes_without_charging_a_device_twice(
        home, tmp_path, uninterrupted, point):
    from fedrec.audit.run import audit

    run = tmp_path / "run"
    kill_at(point, KILLED_IN, dp_run(), run)
    simulate(None, run, resume=True, progress=False)

    # the same cohorts, and each device charged once per round it was sampled in: a redone
    # round replays the release its device charged before the kill
    charged, declines = uninterrupted
    assert charged_rounds(run) == charged
    lines = privacy.read_ledger(run / "privacy" / "ledger.jsonl")
    pairs = [(line["client"], line["round"]) for line in lines]
    assert len(pairs) == len(set(pairs)) == sum(map(len, charged.values()))
    report = audit(run)
    assert report["verdict"] == "pass", report["findings"]
    # no device refused a redone round as a second release: it declined where it did anyway
    assert declined(run) == declines


def test_a_user_level_round_redone_after_its_charge_is_charged_twice_and_audited(home, tmp_path):
    """The server charged round 2's aggregate, then died before its checkpoint: the resumed run
    redoes round 2 with new clients and new secret noise, a second release, and the ledger
    accounts both; the audit passes with a note."""
    from fedrec.audit.run import audit

    cfg = dp_run()
    cfg.privacy = replace(cfg.privacy, mode="user", epsilon=20.0, max_grad_norm=0.5)
    run = tmp_path / "run"
    kill_at("before-checkpoint", KILLED_IN, cfg.validate(), run)
    simulate(None, run, resume=True, progress=False)
    lines = privacy.read_ledger(run / "privacy" / "ledger.jsonl")
    # σ spends ε = 20 over the 3 planned aggregates: the redone one uses up round 3's share
    assert [line["round"] for line in lines] == [1, 2, 2]
    epsilons = [line["epsilon"] for line in lines]
    assert epsilons[0] < epsilons[1] < epsilons[2] <= 20.0  # each charged on top
    last = json.loads((run / "rounds.jsonl").read_text().splitlines()[-1])
    assert last["round"] == 3 and last["budget_exhausted"] and not last["aggregated"]
    report = audit(run)
    assert report["verdict"] == "pass", report["findings"]
    assert any("released twice" in f["what"] and f["severity"] == "note"
               for f in report["findings"])
