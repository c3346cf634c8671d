import numpy as np
import pytest
import torch

from fedrec.common.config import FederationConfig
from fedrec.server.optimizer import ServerOptimizer


def test_fedavg_with_lr_1_moves_to_the_client_mean():
    w, delta = [np.array([1.0, 2.0])], [np.array([0.5, -1.0])]
    assert np.allclose(ServerOptimizer("fedavg", 1.0).step(w, delta)[0], [1.5, 1.0])


def test_fedavgm_accumulates_momentum_by_hand():
    opt = ServerOptimizer("fedavgm", lr=0.5, momentum=0.9)
    w = opt.step([np.array([0.0])], [np.array([1.0])])  # v = 1, w = 0.5
    assert np.allclose(w[0], [0.5])
    w = opt.step(w, [np.array([1.0])])  # v = 0.9 + 1 = 1.9, w = 0.5 + 0.95
    assert np.allclose(w[0], [1.45])


def test_fedadam_first_step_by_hand():
    # bias-corrected: m̂ = Δ, v̂ = Δ², so the first step is lr·Δ/(|Δ| + τ) minus the decay
    opt = ServerOptimizer("fedadam", lr=0.1, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.5)
    w = opt.step([np.array([1.0])], [np.array([2.0])])
    assert w[0][0] == pytest.approx(1.0 * (1 - 0.1 * 0.5) + 0.1 * 2.0 / (2.0 + 1e-3))


def assert_matches_torch(fed, make_reference, steps: int, shape, seed: int):
    """Stepping fedadam with Δ = −g (one local SGD step at rate 1) for `steps` rounds lands
    where torch's reference optimizer (and its scheduler, if any) lands with gradients g."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=shape)
    param = torch.nn.Parameter(torch.tensor(w0))
    reference, schedule = make_reference(param)
    opt, w = ServerOptimizer.for_federation(fed), [w0.copy()]
    for round_ in range(1, steps + 1):
        g = rng.normal(size=shape)
        param.grad = torch.tensor(g)
        reference.step()
        if schedule is not None:
            schedule.step()
        w = opt.step(w, [-g], round_)
    assert np.allclose(w[0], param.detach().numpy(), rtol=0, atol=1e-12)
    return opt


def test_fedadam_on_minus_the_gradient_is_torch_adamw():
    """With one local SGD step at rate 1, Δ = −g: the server's fedadam must be AdamW."""
    fed = FederationConfig(strategy="fedadam", server_lr=2e-3, server_weight_decay=1e-2,
                           server_lr_schedule="constant")
    assert_matches_torch(fed, lambda p: (torch.optim.AdamW([p], lr=2e-3, betas=(0.9, 0.999),
                                                           eps=1e-8, weight_decay=1e-2), None),
                         steps=20, shape=(3, 4), seed=0)


def test_cosine_schedule_is_torch_adamw_with_cosine_annealing():
    """`server_lr_schedule = "cosine"` anneals η to 0 over `rounds`, as torch's
    CosineAnnealingLR(T_max=rounds) does for AdamW stepped once per round."""

    def reference(p):
        adamw = torch.optim.AdamW([p], lr=1e-2, weight_decay=1e-3)
        return adamw, torch.optim.lr_scheduler.CosineAnnealingLR(adamw, T_max=12)

    fed = FederationConfig(rounds=12, server_lr=1e-2, server_weight_decay=1e-3,
                           server_lr_schedule="cosine")
    opt = assert_matches_torch(fed, reference, steps=12, shape=(5,), seed=1)
    assert opt.lr_at(1) == 1e-2 and opt.lr_at(7) == pytest.approx(5e-3) and opt.lr_at(13) == 0


def test_the_schedule_follows_rounds_so_a_round_without_aggregate_still_counts():
    fed = FederationConfig(strategy="fedavg", rounds=10, server_lr=1.0, server_lr_schedule="cosine")
    opt = ServerOptimizer.for_federation(fed)
    opt.step([np.zeros(1)], [np.ones(1)], 1)  # round 2 aggregated nothing: no step
    w = opt.step([np.zeros(1)], [np.ones(1)], 3)
    assert w[0][0] == pytest.approx(opt.lr_at(3)) and opt.lr_at(3) < opt.lr_at(2)


def test_fedyogi_second_moment_moves_additively():
    opt = ServerOptimizer("fedyogi", lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    opt.step([np.zeros(1)], [np.array([2.0])])  # v = 0 − 0.01·4·sign(0 − 4) = 0.04
    assert opt.state["v"][0][0] == pytest.approx(0.04)
    opt.step([np.zeros(1)], [np.array([0.1])])  # v = 0.04 − 0.01·0.01·sign(0.04 − 0.01)
    assert opt.state["v"][0][0] == pytest.approx(0.04 - 0.0001)


@pytest.mark.parametrize("kind", ["fedavgm", "fedadam", "fedyogi"])
def test_state_round_trip_continues_identically(kind):
    a = ServerOptimizer(kind, 0.1)
    w = a.step([np.ones(3)], [np.full(3, 0.5)])
    b = ServerOptimizer(kind, 0.1)
    b.load_state_arrays(a.state_arrays())
    delta = [np.array([0.1, -0.2, 0.3])]
    assert np.allclose(a.step(w, delta)[0], b.step(w, delta)[0])
