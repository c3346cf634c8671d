from types import SimpleNamespace

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from fedrec.common.config import FederationConfig, RunConfig
from fedrec.common.plan import RunPlan
from fedrec.server import checkpoint
from fedrec.server.strategy import FedRecStrategy

KEYS = ["a", "b"]
INITIAL = [np.zeros(2, np.float32), np.zeros((1, 2), np.float32)]


def make(tmp_path, **fed):
    records = []
    fed = FederationConfig(**{"rounds": 10, "clients_per_round": 3, "checkpoint_every": 2,
                              "strategy": "fedavg", "server_lr": 1.0,
                              "server_lr_schedule": "constant", **fed})
    plan = RunPlan.build(RunConfig(federation=fed), 5, 2, dict(zip(KEYS, [(2,), (1, 2)])))
    strategy = FedRecStrategy(plan, INITIAL, tmp_path,
                              lambda kind, r, v: records.append((kind, r, v)))
    strategy.node_to_client = {100 + i: i for i in range(5)}
    return strategy, records


def reply(node, value, n, arrays=None):
    arrays = arrays or [np.full(2, value, np.float32), np.full((1, 2), value, np.float32)]
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, {"loss": 1.0})
    return SimpleNamespace(node_id=node), res


def test_weighted_average_of_accepted_updates(tmp_path):
    strategy, records = make(tmp_path)
    params, _ = strategy.aggregate_fit(1, [reply(100, 1.0, 1), reply(101, 4.0, 3)], [])
    assert np.allclose(parameters_to_ndarrays(params)[0], [3.25, 3.25])
    assert records[-1][0] == "fit" and records[-1][2]["aggregated"]


def test_bad_updates_are_rejected_counted_and_left_out(tmp_path):
    strategy, records = make(tmp_path)
    nan = [np.full(2, np.nan, np.float32), np.zeros((1, 2), np.float32)]
    huge = [np.full(2, 1e6, np.float32), np.zeros((1, 2), np.float32)]
    wrong_shape = [np.zeros(3, np.float32), np.zeros((1, 2), np.float32)]
    results = [reply(100, 2.0, 1), reply(101, 0, 1, nan), reply(102, 0, 1, huge),
               reply(103, 0, 1, wrong_shape)]
    params, _ = strategy.aggregate_fit(1, results, [RuntimeError("boom")])
    assert np.allclose(parameters_to_ndarrays(params)[0], [2.0, 2.0])
    fit = records[-1][2]
    assert (fit["rejected"], fit["failed"], fit["completed"]) == (3, 1, 4)


def test_too_few_valid_updates_leave_the_model_unchanged(tmp_path):
    strategy, records = make(tmp_path, min_clients=2)
    params, _ = strategy.aggregate_fit(1, [reply(100, 1.0, 1)], [RuntimeError("x")])
    assert params is None and not records[-1][2]["aggregated"]
    assert np.allclose(strategy.current[0], 0.0)


def test_checkpoints_every_n_rounds_with_round_and_state(tmp_path):
    strategy, _ = make(tmp_path)
    strategy.aggregate_fit(1, [reply(100, 1.0, 1)], [])
    assert checkpoint.latest(tmp_path / "checkpoints") is None
    strategy.aggregate_fit(2, [reply(100, 3.0, 1)], [])
    round_, shared, _ = checkpoint.load(checkpoint.latest(tmp_path / "checkpoints"))
    assert round_ == 2 and np.allclose(shared["a"], 3.0) and set(shared) == set(KEYS)


def test_sampling_is_exact_and_reproducible(tmp_path):
    strategy, _ = make(tmp_path)
    manager = SimpleNamespace(all=lambda: {str(n): SimpleNamespace(node_id=n)
                                           for n in (104, 102, 100, 103, 101)})
    params = ndarrays_to_parameters(INITIAL)
    pick = lambda r: [p.node_id for p, _ in strategy.configure_fit(r, params, manager)]  # noqa: E731
    assert len(pick(1)) == 3 and pick(1) == pick(1)
    assert len({tuple(pick(r)) for r in range(1, 8)}) > 1
    assert strategy.configure_fit(1, params, manager)[0][1].config["server_round"] == 1


def test_results_sharing_one_aggregate_weigh_by_their_summed_counts(tmp_path):
    """SecAgg+ and the batched engine give every result the same Parameters object (the
    weighted mean): it is decoded and checked once, and the round moves the model to it."""
    strategy, records = make(tmp_path)
    shared = reply(100, 1.5, 4)[1].parameters
    results = [(SimpleNamespace(node_id=100 + i),
                FitRes(Status(Code.OK, ""), shared, n, {"loss": 2.0})) for i, n in enumerate([4, 8])]
    params, _ = strategy.aggregate_fit(1, results, [])
    assert np.allclose(parameters_to_ndarrays(params)[0], [1.5, 1.5])
    assert records[-1][2]["completed"] == 2 and records[-1][2]["train_loss"] == 2.0


def test_under_dp_every_round_is_checkpointed_and_only_kept_rounds_stay(tmp_path):
    from dataclasses import replace

    from fedrec.common.privacy import PrivacyConfig

    fed = FederationConfig(rounds=6, clients_per_round=3, checkpoint_every=3, eval_every=6,
                           strategy="fedavg", server_lr=1.0, server_lr_schedule="constant")
    cfg = RunConfig(federation=fed)
    cfg.privacy = replace(PrivacyConfig(), mode="record", epsilon=8.0)
    plan = RunPlan.build(cfg, 5, 2, dict(zip(KEYS, [(2,), (1, 2)])))
    records = []
    strategy = FedRecStrategy(plan, INITIAL, tmp_path, lambda *r: records.append(r))
    strategy.node_to_client = {100 + i: i for i in range(5)}
    saved = lambda: sorted(p.name for p in (tmp_path / "checkpoints").glob("*"))  # noqa: E731
    for round_ in (1, 2):  # a resume redoes only the round in flight: its devices replay it
        strategy.aggregate_fit(round_, [reply(100, 1.0, 1)], [])
        assert checkpoint.latest(tmp_path / "checkpoints").name == f"round-00000{round_}.safetensors"
        assert strategy.last_checkpoint == round_
    strategy.aggregate_fit(3, [reply(100, 1.0, 1)], [])
    strategy.aggregate_fit(4, [reply(100, 1.0, 1)], [])
    assert saved() == ["round-000003.safetensors", "round-000004.safetensors"]  # 1, 2 pruned
    # the round's record comes first: a checkpoint never exists without its rounds.jsonl line
    assert [r[1] for r in records if r[0] == "fit"] == [1, 2, 3, 4]


def test_the_fit_config_names_the_run_and_a_resume_keeps_the_name(tmp_path):
    from fedrec.server import records

    strategy, _ = make(tmp_path)
    manager = SimpleNamespace(all=lambda: {str(n): SimpleNamespace(node_id=n)
                                           for n in range(100, 105)})
    [(_, ins), *_] = strategy.configure_fit(1, ndarrays_to_parameters(INITIAL), manager)
    assert ins.config["run"] == records.run_id(tmp_path) and len(ins.config["run"]) == 16
    assert make(tmp_path)[0].run_id == ins.config["run"]  # the same run directory
    assert make(tmp_path / "other")[0].run_id != ins.config["run"]
