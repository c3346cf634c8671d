"""User-level DP on the server: fixed-denominator aggregation, effective noise, budget."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from fedrec.common import privacy
from fedrec.common.config import FederationConfig, RunConfig
from fedrec.common.plan import RunPlan
from fedrec.server.accountant import UserLevelAccountant
from fedrec.server.strategy import FedRecStrategy

KEYS = ["a", "b"]
INITIAL = [np.zeros(2, np.float32), np.zeros((1, 2), np.float32)]
USER = privacy.PrivacyConfig(mode="user", epsilon=3.0, noise_multiplier=2.0, max_grad_norm=2.0)


def reply(node, value, n, arrays=None):
    arrays = arrays or [np.full(2, value, np.float32), np.full((1, 2), value, np.float32)]
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, {})
    return SimpleNamespace(node_id=node), res


def make(tmp_path, cfg=USER):
    records = []
    fed = FederationConfig(rounds=10, clients_per_round=4, checkpoint_every=100, strategy="fedavg",
                           server_lr=1.0, server_lr_schedule="constant")
    plan = RunPlan.build(RunConfig(federation=fed, privacy=cfg), 8, 2,
                         dict(zip(KEYS, [(2,), (1, 2)])))
    strategy = FedRecStrategy(plan, INITIAL, tmp_path,
                              lambda kind, r, v: records.append((kind, r, v)),
                              ledger=tmp_path / "privacy" / "ledger.jsonl")
    strategy.node_to_client = {100 + i: i for i in range(8)}
    return strategy, records


def test_the_mean_has_the_fixed_denominator_m_and_each_aggregate_is_charged(tmp_path):
    strategy, records = make(tmp_path)
    # 3 of the m = 4 sampled clients report; weights (num_examples) are ignored
    params, _ = strategy.aggregate_fit(1, [reply(100, 1.0, 1), reply(101, 2.0, 5),
                                           reply(102, 3.0, 9)], [RuntimeError("dropped")])
    assert np.allclose(parameters_to_ndarrays(params)[0], (1 + 2 + 3) / 4)
    lines = privacy.read_ledger(tmp_path / "privacy" / "ledger.jsonl")
    assert len(lines) == 1 and lines[0]["client"] == "server" and lines[0]["unit"] == "user"
    # the sum carries σC·√(3/4): the round is accounted with that effective σ
    assert lines[0]["noise_multiplier"] == pytest.approx(2.0 * math.sqrt(3 / 4))
    assert lines[0]["sample_rate"] == 0.5 and lines[0]["steps"] == 1
    assert lines[0]["epsilon"] == pytest.approx(
        privacy.epsilon([(2.0 * math.sqrt(3 / 4), 0.5, 1)], 1e-5))
    assert records[-1][2]["noise_shortfall"] == pytest.approx(0.25)


def test_a_round_that_would_exceed_epsilon_is_not_aggregated(tmp_path):
    strategy, records = make(tmp_path)
    rounds = 0
    while True:
        rounds += 1
        params, _ = strategy.aggregate_fit(rounds, [reply(100 + i, 1.0, 1) for i in range(4)], [])
        if params is None:
            break
    fit = records[-1][2]
    assert fit["budget_exhausted"] and not fit["aggregated"]
    assert strategy.accountant.epsilon <= USER.epsilon
    assert len(privacy.read_ledger(tmp_path / "privacy" / "ledger.jsonl")) == rounds - 1


def test_the_run_summary_says_after_which_round_the_budget_ran_out(tmp_path):
    from fedrec.common import config
    from fedrec.common.jsonl import dumps
    from fedrec.server.records import privacy_summary

    strategy, records = make(tmp_path)
    for round_ in range(1, 8):
        strategy.aggregate_fit(round_, [reply(100 + i, 1.0, 1) for i in range(4)], [])
    config.save(strategy.plan.config, tmp_path / "config.toml")
    fits = [{"round": r, **v} for kind, r, v in records if kind == "fit"]
    (tmp_path / "rounds.jsonl").write_text("".join(dumps(f) + "\n" for f in fits))
    aggregated = [f["round"] for f in fits if f["aggregated"]]
    blocked = [f["round"] for f in fits if f["budget_exhausted"]]
    assert aggregated and blocked and max(aggregated) < min(blocked)
    summary = privacy_summary(tmp_path)
    assert summary["budget_exhausted_after_round"] == max(aggregated)
    assert summary["rounds_blocked_by_budget"] == len(blocked) == 7 - len(aggregated)
    assert summary["releases"] == len(aggregated)


def test_the_accountant_resumes_from_the_ledger(tmp_path):
    strategy, _ = make(tmp_path)
    strategy.aggregate_fit(1, [reply(100 + i, 1.0, 1) for i in range(4)], [])
    strategy.aggregate_fit(2, [reply(100 + i, 1.0, 1) for i in range(4)], [])
    resumed = UserLevelAccountant(USER, 4, 8, tmp_path / "privacy" / "ledger.jsonl")
    assert resumed.history == [(2.0, 0.5, 1)] * 2
    assert resumed.epsilon == pytest.approx(strategy.accountant.epsilon)


def test_updates_beyond_clip_plus_noise_are_rejected(tmp_path):
    strategy, records = make(tmp_path)
    bound = strategy.max_update_norm  # d = 4 parameters, m = 4
    assert bound == pytest.approx(2.0 + 2.0 * 2.0 / 2 * (2 + 10))  # C + σC/√m·(√d + 10)
    huge = [np.full(2, 1000.0, np.float32), np.zeros((1, 2), np.float32)]
    strategy.aggregate_fit(1, [reply(100, 1.0, 1), reply(101, 0, 1, huge)], [])
    assert records[-1][2]["rejected"] == 1


def test_record_level_declines_are_counted_and_weights_are_equal(tmp_path):
    strategy, records = make(tmp_path, privacy.PrivacyConfig(mode="record"))
    _, declined = reply(101, 0.0, 0)
    declined.metrics = {"declined": 1}
    params, _ = strategy.aggregate_fit(1, [reply(100, 1.0, 1), reply(102, 4.0, 1),
                                           (declined_proxy := reply(101, 0, 0)[0], declined)], [])
    assert np.allclose(parameters_to_ndarrays(params)[0], 2.5)
    assert records[-1][2]["declined"] == 1 and records[-1][2]["clients_exhausted"] == 1
    assert strategy.exhausted == {strategy.node_to_client[declined_proxy.node_id]}


def test_user_level_client_sampling_is_not_a_function_of_the_public_seed(tmp_path):
    class Manager:
        def all(self):
            return {i: SimpleNamespace(node_id=100 + i) for i in range(8)}

    def samples(cfg):
        strategy, _ = make(tmp_path, cfg)
        return [tuple(p.node_id for p in strategy._sample(Manager(), r, 4, 0)) for r in range(8)]

    plain = privacy.PrivacyConfig()
    assert samples(plain) == samples(plain)  # reproducible without user-level DP
    assert samples(USER) != samples(USER)  # 70^-8 chance of a false failure
