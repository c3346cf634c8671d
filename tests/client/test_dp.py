"""Record-level DP-SGD (real Opacus) and user-level clipping + noise on a device."""

import copy

import numpy as np
import pytest
import torch
from opacus import GradSampleModule, PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from fedrec.client import dp
from fedrec.client.local import UserData
from fedrec.common.model import FedRecModel, ModelConfig
from fedrec.common.privacy import PrivacyConfig
from fedrec.common.train import TrainConfig, disjoint_windows, sample_candidates, window_loss

CFG = ModelConfig(input_dim=16, dim=8, num_experts=2, max_history=6, num_layers=1, dropout=0.0)
EMB = torch.nn.functional.normalize(torch.randn(30, 16, generator=torch.Generator().manual_seed(0)))
WINDOWS = torch.tensor([[-1, -1, 3, 4, 5], [1, 2, 3, 4, 5], [-1, -1, -1, 7, 8], [9, 10, 11, 12, 13]])
USERS = torch.tensor([0, 1, 2, 0])
KINDS = ("lowrank", "encoder", "all")  # what DP can train (`privacy.trained` resolved)
P = PrivacyConfig(mode="record", window=3, negatives=5)
USER = UserData(np.arange(1, 21), valid_item=21, test_item=22)


def model(num_users=3):
    torch.manual_seed(0)
    return FedRecModel(CFG, num_users)


def test_per_sample_gradients_equal_each_sample_run_alone():
    net, reference = model(), None
    reference = copy.deepcopy(net)
    candidates = sample_candidates(WINDOWS[:, 1:], 30, 5, torch.Generator().manual_seed(1))

    class Loss(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, w, u, c):
            return window_loss(self.m, EMB, w, u, reduction="none", candidates=c)

    losses = GradSampleModule(Loss(net))(WINDOWS, USERS, candidates)
    losses.mean().backward()
    for i in range(len(WINDOWS)):
        alone = window_loss(reference, EMB, WINDOWS[i : i + 1], USERS[i : i + 1],
                            reduction="none", candidates=candidates[i : i + 1]).sum()
        grads = torch.autograd.grad(alone, list(reference.parameters()), allow_unused=True)
        for (name, p), g in zip(net.named_parameters(), grads):
            expected = torch.zeros_like(p) if g is None else g
            assert torch.allclose(p.grad_sample[i], expected, atol=1e-5), (i, name)


def test_the_full_catalog_softmax_is_refused_for_per_sample_losses():
    with pytest.raises(ValueError, match="full-catalog"):
        window_loss(model(), EMB, WINDOWS, USERS, negatives=0, reduction="none")


def test_disjoint_windows_put_every_interaction_in_exactly_one_record():
    windows = disjoint_windows(np.arange(10), 3)
    values = windows[windows >= 0]
    assert sorted(values) == list(range(10)) and len(windows) == 3


def private_step(sigma, clip, seed=0):
    """One Opacus step (clip, noise, scale) on the 4 windows as one full batch; returns the
    resulting gradient of every parameter and the per-sample gradients before clipping."""
    net = model()
    module = dp.WindowLoss(net, EMB, 5, torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(WINDOWS, USERS), batch_size=4)
    engine = PrivacyEngine(accountant="rdp")
    dp_module, optimizer, _ = engine.make_private(
        module=module, optimizer=torch.optim.SGD(net.parameters(), lr=0.0), data_loader=loader,
        noise_multiplier=sigma, max_grad_norm=clip, poisson_sampling=True,
        noise_generator=torch.Generator().manual_seed(seed))
    losses = dp_module(WINDOWS, USERS)
    losses.mean().backward()
    per_sample = torch.cat([p.grad_sample.flatten(1) for p in net.parameters()], dim=1)
    optimizer.pre_step()
    grad = torch.cat([p.grad.flatten() for p in net.parameters()])
    dp_module.to_standard_module()
    return grad, per_sample


def test_per_sample_gradients_are_clipped_before_averaging():
    clip = 0.01
    grad, per_sample = private_step(sigma=0.0, clip=clip)
    norms = per_sample.norm(dim=1)
    assert (norms > clip).all()  # every sample is really clipped in this setting
    clipped = per_sample * (clip / norms).clamp(max=1.0).unsqueeze(1)
    assert torch.allclose(grad, clipped.sum(0) / 4, atol=1e-7)  # q = 1: expected batch 4
    assert grad.norm() <= clip + 1e-7


def test_gaussian_noise_of_sigma_times_clip_is_added():
    sigma, clip = 2.0, 0.5
    clean, _ = private_step(0.0, clip)
    noise = torch.stack([private_step(sigma, clip, seed)[0] - clean for seed in range(5)])
    expected = sigma * clip / 4  # σC on the sum, divided by the expected batch size
    assert noise.std().item() == pytest.approx(expected, rel=0.05)
    assert noise.mean().abs().item() < 0.05 * expected


def fit(seed, sigma=1.0, **privacy):
    p = PrivacyConfig(**{**P.__dict__, **privacy})
    torch.manual_seed(0)
    shared = FedRecModel(CFG, 1).shared_arrays()
    return dp.fit_private(CFG, TrainConfig(batch_size=2), p, EMB, shared, None, USER,
                          epochs=2, noise_multiplier=sigma, secret_seed=seed)


def test_private_fit_releases_plain_shared_arrays_and_reports_its_mechanism():
    torch.manual_seed(0)
    expected = FedRecModel(CFG, 1).shared_arrays()
    shared, personal, history = fit(seed=7)
    assert [a.shape for a in shared] == [a.shape for a in expected]  # no `_module.` wrapper
    assert set(personal) == {"personal_vector"}
    plan = dp.plan(USER, TrainConfig(batch_size=2), P, epochs=2)
    assert plan.records == 5 and plan.sample_rate == pytest.approx(1 / 3) and plan.steps == 6
    assert history == [(1.0, plan.sample_rate, plan.steps)]


def test_a_retry_with_the_same_secret_seed_replays_the_same_release():
    # a fresh model and engine every call: hooks never stack, nothing carries over
    first, second, other = fit(seed=3)[0], fit(seed=3)[0], fit(seed=4)[0]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_empty_poisson_batches_still_take_a_noisy_step():
    # 5 records, batch 1: q = 0.2, so some of the 10 steps draw empty batches
    for seed in range(5):
        _, _, history = dp.fit_private(
            CFG, TrainConfig(batch_size=1), P, EMB, FedRecModel(CFG, 1).shared_arrays(), None,
            USER, epochs=2, noise_multiplier=1.0, secret_seed=seed)
        assert history == [(1.0, 0.2, 10)]


def test_user_level_update_is_clipped_to_c():
    global_ = [np.zeros(3, np.float32), np.zeros((2, 2), np.float32)]
    local = [np.full(3, 2.0, np.float32), np.full((2, 2), 2.0, np.float32)]
    sent, norm = dp.clip_and_noise(local, global_, clip=1.5, noise_std=0.0, secret_seed=0)
    assert norm == pytest.approx(2.0 * np.sqrt(7))
    assert np.sqrt(sum((a**2).sum() for a in sent)) == pytest.approx(1.5, rel=1e-6)
    small, _ = dp.clip_and_noise([g + 0.1 for g in global_], global_, 1.5, 0.0, 0)
    assert np.allclose(small[0], 0.1)  # within the bound: unchanged


def test_user_level_noise_of_m_clients_sums_to_sigma_c():
    sigma, clip, m = 1.3, 0.8, 16
    global_ = [np.zeros(20000, np.float32)]
    total = sum(dp.clip_and_noise(global_, global_, clip, sigma * clip / np.sqrt(m), seed)[0][0]
                for seed in range(m))
    assert total.std() == pytest.approx(sigma * clip, rel=0.03)


def test_user_level_dp_in_a_subspace_clips_and_noises_only_what_it_releases():
    """`lowrank`: an expert's weight moves only within the catalog basis B (noise included),
    the clip applies to the released update, and the noise per released coordinate is the
    share's std; `encoder`: nothing but the encoder moves."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(6, 3)))[0].T  # (rank 3, input 6), orthonormal rows
    names = ["adapter.experts.0.weight", "adapter.gate.weight", "encoder.norm.bias"]
    global_ = [np.zeros((400, 6), np.float32), np.zeros((2, 6), np.float32),
               np.zeros(4, np.float32)]
    local = [rng.normal(size=a.shape).astype(np.float32) for a in global_]
    lowrank = dp.Subspace(names, "lowrank", basis)
    sent, norm = dp.clip_and_noise(local, global_, clip=0.5, noise_std=0.0, secret_seed=1,
                                   subspace=lowrank)
    released = lowrank.project([a.astype(np.float64) for a in local])
    assert norm == pytest.approx(np.sqrt(sum((r**2).sum() for r in released)))
    assert norm < np.sqrt(sum((a.astype(np.float64)**2).sum() for a in local))
    assert np.sqrt(sum((a.astype(np.float64)**2).sum() for a in sent)) == pytest.approx(0.5, rel=1e-5)
    assert np.allclose(sent[0] @ basis.T @ basis, sent[0], atol=1e-6)  # within span(B)
    noisy, _ = dp.clip_and_noise(global_, global_, 0.5, 2.0, 7, subspace=lowrank)
    assert np.linalg.matrix_rank(noisy[0]) == 3
    coords = noisy[0].astype(np.float64) @ basis.T  # (400, 3) coordinates: N(0, 4)
    assert coords.std() == pytest.approx(2.0, rel=0.1)
    assert noisy[2].std() == pytest.approx(2.0, rel=0.6) and noisy[2].shape == (4,)
    encoder, _ = dp.clip_and_noise(local, global_, 0.5, 1.0, 3,
                                   subspace=dp.Subspace(names, "encoder"))
    assert not encoder[0].any() and not encoder[1].any() and encoder[2].any()
    everything, _ = dp.clip_and_noise(local, global_, 1e3, 0.0, 3)
    assert all(np.allclose(a, b) for a, b in zip(everything, local))


def test_the_plan_counts_steps_as_opacus_takes_them():
    # 93 windows in batches of 1: q = 1/93, and Opacus takes int(1 / q) = 92 steps per epoch
    user = UserData(np.arange(93 * 4), valid_item=-1, test_item=-1)
    plan = dp.plan(user, TrainConfig(batch_size=1), P, epochs=2)
    assert plan.records == 93 and plan.steps == 2 * 92


# --- distributed DP-FedSGD: per-record clipped gradient sums ---------------------------------
RECORDS = torch.tensor([[-1, -1, 3, 4], [1, 2, 3, 4], [-1, -1, 7, 8], [9, 10, 11, 12],
                        [5, 6, 7, 8]])
OWNERS = torch.tensor([0, 1, 1, 0, 2])


def _sums(net, part, clip=1e9, records=RECORDS, owners=OWNERS, clients=3):
    keep = torch.ones(1 + 2 * CFG.num_layers, len(records), records.shape[1] - 1, CFG.dim)
    return dp.clipped_gradient_sums(net, EMB, records, owners, clients, clip, part, keep, None)


def _record_gradients(net, window):
    """The reference: autograd on one record alone, personal vector at zero."""
    from fedrec.common.train import next_item_losses

    losses, _ = next_item_losses(net, EMB, window[None], torch.tensor([0]))
    names = [n for n, _ in net.named_parameters() if not n.startswith("personal.")]
    params = [p for n, p in net.named_parameters() if n in names]
    return dict(zip(names, torch.autograd.grad(losses.mean(), params)))


@pytest.mark.parametrize("kind", KINDS)
def test_each_clients_sum_is_the_sum_of_its_records_gradients_computed_alone(kind):
    net = model()
    basis = dp.catalog_basis(EMB, 4)
    part = dp.TrainedPart(net, kind, basis)
    sums, norms = _sums(net, part)
    alone = [_record_gradients(net, w) for w in RECORDS]
    for client in range(3):
        mine = [g for g, o in zip(alone, OWNERS) if o == client]
        for name, total in sums.items():
            if name.startswith("lowrank."):  # W = W0 + A·B: ∂ℓ/∂A = ∂ℓ/∂W · Bᵀ
                weight = f"adapter.experts.{name.split('.')[1]}.weight"
                expected = sum(g[weight] for g in mine) @ basis.T
            else:
                expected = sum(g[name] for g in mine)
            assert torch.allclose(total[client], expected, atol=1e-5), (kind, client, name)
    trained = set(part.names)
    assert (kind == "all") == ("adapter.experts.0.weight" in trained)
    assert all(n.startswith("encoder.") for n in trained) == (kind == "encoder")
    assert len(norms) == len(RECORDS)


@pytest.mark.parametrize("kind", KINDS)
def test_one_record_moves_its_clients_sum_by_at_most_the_clip(kind):
    net, clip = model(), 0.05
    part = dp.TrainedPart(net, kind, dp.catalog_basis(EMB, 4))
    full, norms = _sums(net, part, clip)
    assert (norms > clip).all()  # every record is clipped: the bound is tight
    for drop in range(len(RECORDS)):
        kept = torch.arange(len(RECORDS)) != drop
        less, _ = _sums(net, part, clip, RECORDS[kept], OWNERS[kept])
        moved = torch.sqrt(sum((full[n] - less[n]).pow(2).flatten(1).sum(1) for n in full))
        assert moved[OWNERS[drop]] == pytest.approx(clip, rel=1e-4)
        others = [c for c in range(3) if c != OWNERS[drop]]
        assert torch.all(moved[others] < 1e-6)


def test_lowrank_coordinates_map_to_the_shared_arrays_in_the_basis():
    net = model()
    basis = dp.catalog_basis(EMB, 4)
    assert torch.allclose(basis @ basis.T, torch.eye(4), atol=1e-5)
    part = dp.TrainedPart(net, "lowrank", basis)
    coords = {n: torch.ones_like(v) for n, v in part.coordinates(net).items()}
    arrays = dict(zip(net.shared_state(), part.to_arrays(net, coords)))
    expert = arrays["adapter.experts.0.weight"]
    assert expert.shape == (CFG.dim, CFG.input_dim)
    assert np.allclose(expert, (torch.ones(CFG.dim, 4) @ basis).numpy())
    assert np.all(arrays["adapter.gate.weight"] == 1) and np.all(arrays["encoder.norm.bias"] == 1)


def _distributed(data, seeds, train, **privacy_settings):
    from fedrec.common.privacy import PrivacyConfig as P

    settings = {"shares": len(data), **privacy_settings}
    p = P(mode="record", noise="distributed", window=3, rank=4,
          noise_multiplier=settings.pop("sigma", 0.0), **settings)
    shared = model(1).shared_arrays()
    return shared, dp.distributed_update(CFG, p, EMB, shared, data, seeds, 7, train)


USERS3 = [UserData(np.arange(1, 12), -1, -1), UserData(np.arange(5, 25), -1, -1),
          UserData(np.array([3, 4]), -1, -1)]


def test_a_cohort_computed_together_is_the_mean_of_each_client_computed_alone():
    seeds, train = [11, 12, 13], [True, True, False]
    _, together = _distributed(USERS3, seeds, train, sigma=0.7)
    alone = [_distributed([u], [s], [t], sigma=0.7, shares=3)[1]
             for u, s, t in zip(USERS3, seeds, train)]
    for i, array in enumerate(together):
        assert np.allclose(array, np.mean([a[i] for a in alone], axis=0), atol=1e-6)


def test_the_noise_shares_of_m_clients_sum_to_sigma_times_clip():
    shared, out = _distributed(USERS3 * 2, list(range(6)), [False] * 6, sigma=2.0,
                               max_grad_norm=0.5)
    keys = list(model(1).shared_state())
    moved = {k: (s - o) * 6 for k, s, o in zip(keys, shared, out)}
    # the experts' weights move only in the rank-4 subspace (noise A·B: smaller per entry)
    noised = np.concatenate([m.ravel() for k, m in moved.items()
                             if not (k.startswith("adapter.experts.") and k.endswith("weight"))])
    n = len(noised)  # the sum of 6 shares is N(0, (σC)²): within 4 standard errors
    assert noised.std() == pytest.approx(2.0 * 0.5, rel=4 / np.sqrt(2 * n))
    assert abs(noised.mean()) < 4 * 1.0 / np.sqrt(n)
    expert = moved["adapter.experts.0.weight"]
    assert np.linalg.matrix_rank(expert) == 4


def test_a_clients_clipped_sum_is_bounded_by_max_records_times_clip():
    user = [UserData(np.arange(1, 29), -1, -1)]  # 7 records of 4 items
    shared, out = _distributed(user, [1], [True], max_grad_norm=0.1, max_records=2)
    norm = np.sqrt(sum(float(np.sum((s - o) ** 2)) for s, o in zip(shared, out)))
    assert norm == pytest.approx(0.2, rel=1e-4)
