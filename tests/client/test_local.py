import numpy as np
import pytest
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


# --- the sgd recipe (FedSGD with reconstruction) ----------------------------------------------

DROPOUT_CFG = ModelConfig(input_dim=16, dim=8, num_experts=2, max_history=6, num_layers=1,
                          dropout=0.2)
COHORT = [UserData(np.array(items), -1, -1) for items in
          ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [3, 9, 27, 4], [5], [20, 21, 22, 29, 2])]


def sgd(**overrides):
    from fedrec.common.config import FederationConfig

    return FederationConfig(**{"local_lr": 0.5, "reconstruct_steps": 3, "reconstruct_lr": 0.1,
                               **overrides})


def test_a_batched_cohort_update_is_the_weighted_mean_of_the_clients_own_updates():
    """The batched engine's promise: same seeds, same round, the same aggregate as every
    client computing alone (dropout on, personal vectors reconstructed, one client without
    training data, unequal weights)."""
    from fedrec.client.local import sgd_update

    torch.manual_seed(0)
    shared = FedRecModel(DROPOUT_CFG, 1).shared_arrays()
    stored = [None, {PERSONAL_KEY: np.full((1, 8), 0.3, np.float32)}, None, None]
    weights, seeds = [16.0, 4.0, 1.0, 4.0], [11, 12, 13, 14]
    together = sgd_update(DROPOUT_CFG, sgd(), EMB, shared, stored, COHORT, weights, seeds, 99)
    alone = [sgd_update(DROPOUT_CFG, sgd(), EMB, shared, [p], [d], [1.0], [s], 99)
             for p, d, s in zip(stored, COHORT, seeds)]
    trained = [i for i, d in enumerate(COHORT) if len(d.train_items) > 1]
    total = sum(weights[i] for i in trained)
    for k, array in enumerate(together.shared):
        mean = sum(alone[i].shared[k] * weights[i] for i in trained) / total
        assert np.allclose(array, mean, rtol=1e-5, atol=1e-7), k
    for i in range(len(COHORT)):
        assert np.allclose(together.personal[i][PERSONAL_KEY], alone[i].personal[0][PERSONAL_KEY],
                           atol=1e-6)
        assert together.losses[i] == pytest.approx(alone[i].losses[0], rel=1e-5)
    assert together.num_examples == [13, 3, 0, 4] and together.losses[2] == 0.0
    assert not np.allclose(together.shared[0], shared[0])  # it did move


def test_per_client_heads_are_what_each_client_computes_alone():
    """User-level DP clips each client's own update: `per_client` gives the head each client
    reaches alone (dropout on, personal vectors reconstructed, one client without training
    data keeps the received head), and the mean is still the weighted mean of those."""
    from fedrec.client.local import sgd_update

    torch.manual_seed(0)
    shared = FedRecModel(DROPOUT_CFG, 1).shared_arrays()
    stored = [None, {PERSONAL_KEY: np.full((1, 8), 0.3, np.float32)}, None, None]
    weights, seeds = [16.0, 4.0, 1.0, 4.0], [11, 12, 13, 14]
    together = sgd_update(DROPOUT_CFG, sgd(), EMB, shared, stored, COHORT, weights, seeds, 99,
                          per_client=True)
    alone = [sgd_update(DROPOUT_CFG, sgd(), EMB, shared, [p], [d], [1.0], [s], 99)
             for p, d, s in zip(stored, COHORT, seeds)]
    for head, own in zip(together.clients, alone):
        for a, b in zip(head, own.shared):
            assert a.dtype == np.float32 and np.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(together.clients[2], shared))
    assert together.losses == pytest.approx([own.losses[0] for own in alone], rel=1e-5)
    plain = sgd_update(DROPOUT_CFG, sgd(), EMB, shared, stored, COHORT, weights, seeds, 99)
    for a, b in zip(together.shared, plain.shared):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert plain.clients is None
    with pytest.raises(ValueError, match="one local step"):
        sgd_update(DROPOUT_CFG, sgd(local_steps=2), EMB, shared, stored[:1], COHORT[:1], [1.0],
                   seeds[:1], 99, per_client=True)


def test_one_local_sgd_step_is_minus_the_gradient_of_central_trainings_loss():
    """FedSGD: with no dropout and no reconstruction, a client's update is θ − η·∇ of the very
    loss central training minimizes on that client's windows."""
    from fedrec.client.local import sgd_update
    from fedrec.common.train import make_windows, window_loss

    torch.manual_seed(0)
    model = FedRecModel(CFG, 1)
    shared = model.shared_arrays()
    user = COHORT[0]
    update = sgd_update(CFG, sgd(reconstruct_steps=0), EMB, shared, [None], [user], [1.0], [5], 0)
    windows, _ = make_windows([user.train_items], np.zeros(1, np.int64), CFG.max_history,
                              np.random.default_rng(5))
    loss = window_loss(model, EMB, torch.from_numpy(windows), torch.zeros(len(windows), dtype=torch.long))
    grads = torch.autograd.grad(loss, model.shared_parameters())
    for new, old, g in zip(update.shared, shared, grads):
        assert np.allclose(new, old - 0.5 * g.numpy(), atol=1e-6)
    assert update.losses[0] == pytest.approx(loss.item(), rel=1e-5)


def test_several_local_steps_descend_on_the_same_windows_one_client_at_a_time():
    from fedrec.client.local import sgd_update
    from fedrec.common.train import make_windows, window_loss

    with pytest.raises(ValueError, match="one client"):
        sgd_update(CFG, sgd(local_steps=2), EMB, shared0(), [None, None], COHORT[:2],
                   [1.0, 1.0], [1, 2], 0)
    update = sgd_update(CFG, sgd(local_steps=2, reconstruct_steps=0), EMB, shared0(), [None],
                        COHORT[:1], [1.0], [7], 0)
    model = FedRecModel(CFG, 1)
    model.load_shared_arrays(shared0())
    windows, _ = make_windows([COHORT[0].train_items], np.zeros(1, np.int64), CFG.max_history,
                              np.random.default_rng(7))
    for _ in range(2):  # by hand: two gradient steps on the windows cut once per visit
        loss = window_loss(model, EMB, torch.from_numpy(windows),
                           torch.zeros(len(windows), dtype=torch.long))
        grads = torch.autograd.grad(loss, model.shared_parameters())
        with torch.no_grad():
            for p, g in zip(model.shared_parameters(), grads):
                p.sub_(0.5 * g)
    for new, expected in zip(update.shared, model.shared_arrays()):
        assert np.allclose(new, expected, atol=1e-6)
