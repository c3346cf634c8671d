"""The empirical audit: the lower bound's arithmetic by hand, and the attack's power on a toy
federation without protection (and its failure under DP)."""

import math

import numpy as np
import pytest

from fedrec.audit import attack
from fedrec.client.attack_target import DeviceUpdates


def test_lower_bound_by_hand():
    # all r guesses right: P[Bin(r, p) >= r] = p^r <= 0.05 -> p = 0.05^(1/r), ε = logit(p)
    p = 0.05 ** (1 / 100)
    assert attack.epsilon_lower_bound(100, 100) == pytest.approx(math.log(p / (1 - p)), rel=1e-6)
    assert attack.epsilon_lower_bound(50, 100) == 0.0  # a coin does as well
    assert attack.epsilon_lower_bound(0, 0) == 0.0
    assert 0 < attack.epsilon_lower_bound(70, 100) < attack.epsilon_lower_bound(90, 100)


def test_auc_and_tpr_by_hand():
    assert attack.auc(np.array([3, 4]), np.array([1, 2])) == 1.0
    assert attack.auc(np.array([1, 3]), np.array([2, 2])) == 0.5  # one pair each way
    assert attack.auc(np.array([2]), np.array([2])) == 0.5  # ties count half
    negatives = np.arange(100.0)  # at 1 % FPR one negative (99) may score above the threshold
    assert attack.tpr_at_fpr(np.array([98.5, 50, 100]), negatives, 0.01) == pytest.approx(2 / 3)
    assert attack.tpr_at_fpr(np.array([98.5]), negatives, 0.0) == 0.0


@pytest.fixture(scope="module")
def toy(tmp_path_factory, synthetic_home):
    from fedrec.common import config
    from fedrec.common.model import ModelConfig

    with synthetic_home(tmp_path_factory.mktemp("home"), "toy", num_users=40, num_items=80,
                        interactions_per_user=20):
        cfg = config.RunConfig(dataset="toy", fedrec=ModelConfig(
            dim=16, num_experts=2, max_history=21, num_layers=1, dropout=0.0))
        cfg.privacy.negatives = 10
        yield cfg.validate()


@pytest.mark.slow
def test_the_attack_has_power_without_protection_and_none_under_dp(toy):
    report = attack.attack_all(toy, DeviceUpdates, settings=(attack.Setting("none"),
                                                             attack.Setting("DP ε=1", 1.0)),
                               trials=32, progress=False)
    plain, private = report["results"]
    assert plain["canary_auc"] > 0.9 and plain["correct"] >= plain["guesses"] - 1
    assert plain["epsilon_lower_bound"] > 1.0  # it refutes any claim of ε <= 1 ...
    assert private["epsilon_lower_bound"] <= 1.0  # ... which DP at ε = 1 keeps
    assert private["canary_auc"] < 0.8 < plain["canary_auc"]
    assert plain["max_provable_epsilon"] == pytest.approx(
        attack.epsilon_lower_bound(plain["guesses"], plain["guesses"]))
    assert plain["member_item_auc"] > 0.6
    assert "| none |" in attack.table(report)


@pytest.mark.slow
def test_distributed_dp_holds_against_the_attack_on_the_secagg_sum(toy):
    """The attack on what the server sees under distributed noise: the sum of a cohort's
    releases, each clipped per record and carrying its share of the noise of ε = 1."""
    report = attack.attack_all(toy, DeviceUpdates, settings=(
        attack.Setting("distributed DP ε=1", 1.0, secagg=True, distributed=True),), trials=32,
        cohort=4, progress=False)
    (private,) = report["results"]
    assert private["epsilon_lower_bound"] <= 1.0
    assert private["canary_auc"] < 0.8
