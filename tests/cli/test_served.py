"""A federated run is a model like any other: `fedrec evaluate` and `fedrec recommend` serve a
`fedrec simulate` run directory (its served round's head, each simulated user with the personal
state on its own device) and reproduce the run's own metrics."""

import json
import shutil
from dataclasses import replace

import pytest
import torch

from fedrec.cli.served import load_run
from fedrec.client.personal import personalized_model
from fedrec.client.store import DeviceStore
from fedrec.common import config
from fedrec.common.errors import RunDirError
from fedrec.common.evaluate import evaluate_all
from fedrec.common.hparams import ModelConfig, TrainConfig
from fedrec.simulation.devices import store_path
from fedrec.simulation.run import simulate

pytestmark = pytest.mark.slow
TEST_METRICS = ("hr@10", "ndcg@10", "recall@20", "mrr@10", "coverage@10", "diversity@10",
                "cold_hr@10", "cold_ndcg@10", "cold_random_hr@10", "valid_ndcg@10")


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_home):
    """A finished simulation whose devices keep their personal vectors between visits."""
    root = tmp_path_factory.mktemp("served")
    with synthetic_home(root / "home", "fed", num_users=40, num_items=60,
                        interactions_per_user=20):
        cfg = config.RunConfig(
            dataset="fed",
            fedrec=ModelConfig(dim=16, num_experts=2, max_history=10, num_layers=1, dropout=0.0),
            train=TrainConfig(lr=1e-2, personal_lr=5e-2))
        cfg.federation = replace(cfg.federation, rounds=4, clients_per_round=10, server_lr=0.02,
                                 eval_every=2, eval_clients=0, checkpoint_every=2,
                                 reconstruct_from="stored", engine="batched")
        simulate(cfg.validate(), root / "run", progress=False)
        yield root / "run"


def test_evaluate_reproduces_the_runs_own_metrics_of_the_served_round(run, fedrec_cli):
    final = json.loads((run / "metrics.json").read_text())
    loaded = load_run(run)
    assert loaded.label == f"fedrec (federated, round {final['selected_round']})"
    again = evaluate_all(loaded.model, loaded.prepared.split, loaded.prepared.item_embeddings)
    assert {k: again[k] for k in TEST_METRICS} == {k: final[k] for k in TEST_METRICS}

    code, out, _ = fedrec_cli("evaluate", "--run", str(run))
    assert code == 0
    row = out.splitlines()[-1]
    assert row.startswith(loaded.label)
    assert f"{final['ndcg@10']:.4f}" in row and f"{final['hr@10']:.4f}" in row


def test_a_simulated_user_is_served_with_the_personal_state_on_its_device(run):
    loaded = load_run(run)
    served_round = json.loads((run / "metrics.json").read_text())["selected_round"]
    stored = {}
    for user in range(loaded.prepared.split.num_users):
        if store_path(run, user).exists():
            with DeviceStore(store_path(run, user), fsync=False) as store:
                state = store.personal.load(before_round=served_round + 1)
            if state is not None:
                stored[user] = state
    assert stored, "no device kept a personal vector"
    user, state = next(iter(stored.items()))
    model = loaded.model
    model.recommend(user, loaded.prepared.split.history(user, "test"), 5)
    served = model.model.personal.vectors.weight[user]

    def reconstructed(start):  # what the device itself computes, alone, against the head
        fed = loaded.config.federation
        one = personalized_model(model.plan.model, model.embeddings, model.shared, [start],
                                 [loaded.prepared.split.train_sequences[user]],
                                 fed.reconstruct_steps, fed.reconstruct_lr)
        return one.personal.vectors.weight[0]

    assert torch.allclose(served, reconstructed(state), atol=1e-5)
    assert not torch.allclose(served, reconstructed(None), atol=1e-3)


def test_recommend_serves_a_simulated_user(run, fedrec_cli):
    code, out, _ = fedrec_cli("recommend", "--run", str(run), "--user", "u000003", "--k", "5",
                              "--explain")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("user u000003:") and lines[0].endswith("top 5:")
    ranks = [line for line in lines if line[:4].strip().rstrip(".").isdigit()]
    assert [int(line[:4].strip().rstrip(".")) for line in ranks] == [1, 2, 3, 4, 5]


def test_a_run_that_serves_nothing_yet_says_why(run, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "metrics.json").unlink()
    with pytest.raises(RunDirError, match="has not finished .* --resume"):
        load_run(unfinished)
    deployed = tmp_path / "deployed"
    shutil.copytree(run, deployed)
    final = json.loads((run / "metrics.json").read_text())
    (deployed / "metrics.json").write_text(json.dumps(  # only the clients' own evaluations
        {k: v for k, v in final.items() if k.startswith("federated_") or k == "selected_round"}))
    with pytest.raises(RunDirError, match="deployment"):
        load_run(deployed)
    missing = tmp_path / "missing"
    shutil.copytree(run, missing)
    for path in (missing / "checkpoints").glob(f"round-{final['selected_round']:06d}.*"):
        path.unlink()
    with pytest.raises(RunDirError, match="checkpoint of the round the run serves"):
        load_run(missing)
