import numpy as np
import torch

from fedrec.client.local import PERSONAL_KEY, UserData, evaluate_local, fit_local
from fedrec.common.evaluate import evaluate
from fedrec.common.model import FedRecModel, ModelConfig
from fedrec.common.recommenders import FedRecCentral
from fedrec.common.split import Split
from fedrec.common.train import TrainConfig

CFG = ModelConfig(input_dim=16, dim=8, num_experts=2, max_history=6, num_layers=1, dropout=0.0)
EMB = torch.nn.functional.normalize(torch.randn(30, 16, generator=torch.Generator().manual_seed(0)))
USER = UserData(np.array([1, 2, 3, 4, 5, 6]), valid_item=7, test_item=8)


def shared0():
    torch.manual_seed(0)
    return FedRecModel(CFG, 1).shared_arrays()


def test_fit_returns_only_the_shared_arrays_and_keeps_personal_state_apart():
    shared = shared0()
    new_shared, personal, n, loss = fit_local(CFG, TrainConfig(lr=1e-2), EMB, shared, None, USER,
                                              epochs=3, seed=1)
    assert [a.shape for a in new_shared] == [a.shape for a in shared]
    assert any(not np.allclose(a, b) for a, b in zip(new_shared, shared))
    assert set(personal) == {PERSONAL_KEY} and personal[PERSONAL_KEY].shape == (1, 8)
    assert np.abs(personal[PERSONAL_KEY]).sum() > 0  # trained, from zero
    assert n == 5 and np.isfinite(loss)


def test_fedprox_term_keeps_the_update_closer_to_the_global_model():
    shared = shared0()
    dist = []
    for mu in (0.0, 10.0):
        new, *_ = fit_local(CFG, TrainConfig(lr=1e-2), EMB, shared, None, USER, epochs=5, seed=1,
                            proximal_mu=mu)
        dist.append(sum(np.square(a - b).sum() for a, b in zip(new, shared)))
    assert dist[1] < dist[0]


def test_on_device_evaluation_equals_the_central_protocol_for_that_user():
    shared = shared0()
    _, personal, _, _ = fit_local(CFG, TrainConfig(), EMB, shared, None, USER, epochs=2, seed=1)
    on_device = evaluate_local(CFG, EMB, shared, personal, USER)

    model = FedRecModel(CFG, 1)
    model.load_shared_arrays(shared)
    model.personal.vectors.weight.data[:] = torch.as_tensor(personal[PERSONAL_KEY])
    split = Split(1, 30, [USER.train_items], np.array([7]), np.array([8]), np.zeros(0, int),
                  np.array([-1]), [np.zeros(0, int)])
    central = evaluate(FedRecCentral.from_model(model, EMB), split, "test")
    for key in ("hr@10", "ndcg@10", "recall@20", "mrr@10"):
        assert on_device[key] == central[key]


def test_a_user_without_a_test_item_reports_nothing():
    assert evaluate_local(CFG, EMB, shared0(), None, UserData(np.array([1, 2]), -1, -1)) is None
