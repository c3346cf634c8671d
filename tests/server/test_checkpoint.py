"""Checkpoints: a corrupt one on resume is named in one line, set aside, and the run resumes
from the newest good one before it."""

import logging

import numpy as np
import pytest

from fedrec.server import checkpoint


def save(directory, round_, value=1.0):
    return checkpoint.save(directory, round_, {"a": np.full(3, value, np.float32)},
                           {"m": np.zeros(3, np.float32)})


def test_a_checkpoint_round_trips_with_its_optimizer_state(tmp_path):
    path = save(tmp_path, 4, 2.0)
    round_, shared, opt = checkpoint.load(path)
    assert round_ == 4 and np.all(shared["a"] == 2.0) and set(opt) == {"m"}
    assert checkpoint.resume_point(tmp_path) == (4, path)
    assert checkpoint.resume_point(tmp_path / "none") == (0, None)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "nan", "renamed"])
def test_a_corrupt_checkpoint_falls_back_to_the_previous_good_one(tmp_path, caplog, damage):
    good = save(tmp_path, 2)
    bad = save(tmp_path, 4, float("nan") if damage == "nan" else 1.0)
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:-7])
    elif damage == "garbage":
        bad.write_bytes(b"\x00" * 64)
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "renamed":  # a round-2 file under round 4's name
        bad.write_bytes(good.read_bytes())
    with caplog.at_level(logging.WARNING, logger="fedrec"):
        assert checkpoint.resume_point(tmp_path) == (2, good)
    [message] = [r.getMessage() for r in caplog.records]
    assert str(bad) in message and "\n" not in message
    assert not bad.exists() and bad.with_name(bad.name + ".corrupt").exists()  # kept, set aside
    with pytest.raises(checkpoint.CorruptCheckpoint, match="round-000004"):
        checkpoint.load(bad.with_name(bad.name + ".corrupt").rename(bad))


def test_a_resume_with_a_corrupt_checkpoint_truncates_the_records_to_the_good_one(tmp_path):
    """open_run resumes from the fallback: the rounds after it are redone."""
    import json

    from fedrec.common.config import FederationConfig, RunConfig
    from fedrec.common.plan import RunPlan
    from fedrec.server import records

    plan = RunPlan.build(RunConfig(federation=FederationConfig(rounds=6, clients_per_round=2)),
                         4, 2, {"a": (3,)})
    assert records.open_run(tmp_path, plan) == (0, None)
    (tmp_path / "rounds.jsonl").write_text("".join(
        json.dumps({"round": r, "train_loss": float("nan")}) + "\n" for r in range(1, 5)))
    good = save(tmp_path / "checkpoints", 2)
    save(tmp_path / "checkpoints", 4).write_bytes(b"torn")
    assert records.open_run(tmp_path, plan) == (2, good)
    lines = (tmp_path / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2]
    assert all("NaN" not in x and json.loads(x)["train_loss"] is None for x in lines)
