"""Differentially private local training on a device.

Record-level (`fit_private`): DP-SGD with Opacus over the user's disjoint training windows
(`fedrec.common.train.disjoint_windows`), Poisson sampling, per-sample clipping to
`max_grad_norm` and Gaussian noise σ·max_grad_norm per step. The whole model trains through the
DP optimizer, the personal vector included: it is never released, but it feeds every later
gradient, so training it without DP would leak each record into every released update.

User-level (`clip_and_noise`): the update θ_local − θ_global is clipped to norm C and each of
the m sampled clients adds N(0, (σC)²/m), so the sum of the m updates carries N(0, (σC)²).

All noise and sampling come from generators seeded with a secret seed (`secrets`), never from
the run's public seed: a server that could regenerate the noise could subtract it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedrec.client.local import UserData, build_model
from fedrec.client.personal import as_state
from fedrec.common.model import FedRecModel, ModelConfig
from fedrec.common.privacy import PrivacyConfig
from fedrec.common.train import TrainConfig, disjoint_windows, make_optimizer, window_loss


@dataclass(frozen=True)
class DPPlan:
    """The mechanism of one local round: `steps` DP-SGD steps at Poisson rate `sample_rate`
    over `records` windows (q = 1 / ceil(records / batch_size), Opacus' convention)."""

    records: int
    sample_rate: float
    steps: int


def plan(data: UserData, train_cfg: TrainConfig, privacy: PrivacyConfig, epochs: int) -> DPPlan:
    records = len(disjoint_windows(data.train_items, privacy.window))
    sample_rate = 1.0 / max(1, math.ceil(records / train_cfg.batch_size))
    # Opacus' Poisson sampler takes int(1 / q) steps per epoch (int(1 / (1/93)) == 92)
    return DPPlan(records, sample_rate, epochs * int(1 / sample_rate))


class WindowLoss(nn.Module):
    """The model as Opacus sees it: (windows (B, W+1), users (B,)) -> per-window losses (B,),
    every term computed from its own window and its own sampled candidates only."""

    def __init__(self, model: FedRecModel, item_embeddings: torch.Tensor, negatives: int,
                 generator: torch.Generator):
        super().__init__()
        self.model, self.negatives, self.generator = model, negatives, generator
        self.register_buffer("item_embeddings", item_embeddings, persistent=False)

    def forward(self, windows: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return window_loss(self.model, self.item_embeddings, windows, users, self.negatives,
                           self.generator, reduction="none")


def fit_private(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    privacy: PrivacyConfig,
    item_embeddings: torch.Tensor,
    shared: list[np.ndarray],
    personal: dict | None,
    data: UserData,
    epochs: int,
    noise_multiplier: float,
    secret_seed: int,
) -> tuple[list[np.ndarray], dict[str, np.ndarray], list[tuple[float, float, int]]]:
    """One round of record-level DP-SGD. Returns (new shared arrays, new personal state, the
    mechanism history Opacus' accountant recorded: [(σ, q, steps)])."""
    from opacus import PrivacyEngine

    torch.manual_seed(secret_seed)  # dropout and negatives: private randomness too
    model = build_model(model_cfg, shared, personal)
    cfg = replace(train_cfg, epochs=epochs)
    windows = torch.from_numpy(disjoint_windows(data.train_items, privacy.window))
    dataset = TensorDataset(windows, torch.zeros(len(windows), dtype=torch.long))
    sampling = torch.Generator().manual_seed(secret_seed + 1)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, generator=sampling)
    module = WindowLoss(model, item_embeddings, privacy.negatives,
                        torch.Generator().manual_seed(secret_seed + 2))
    engine = PrivacyEngine(accountant=privacy.accountant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus' notes on secure RNG and full backward hooks
        dp_module, optimizer, dp_loader = engine.make_private(
            module=module, optimizer=make_optimizer(model, cfg), data_loader=loader,
            noise_multiplier=noise_multiplier, max_grad_norm=privacy.max_grad_norm,
            poisson_sampling=True, noise_generator=torch.Generator().manual_seed(secret_seed + 3),
        )
    dp_module.train()
    with warnings.catch_warnings():
        # the inputs are frozen embeddings, so module-level backward hooks see no input grads
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(epochs):
            for batch_windows, batch_users in dp_loader:
                losses = dp_module(batch_windows, batch_users)
                loss = losses.sum() / max(1, len(losses))  # Poisson batches can be empty
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    history = [(float(s), float(q), int(n)) for s, q, n in engine.accountant.history]
    dp_module.to_standard_module()  # remove Opacus' hooks: nothing of the wrapper survives
    new_personal = as_state(model.personal.vectors.weight)
    return model.shared_arrays(), new_personal, history


def _update(local: list[np.ndarray], global_: list[np.ndarray]) -> tuple[list, float]:
    """(θ_local − θ_global in float64, its L2 norm)."""
    delta = [loc.astype(np.float64) - glo for loc, glo in zip(local, global_)]
    return delta, math.sqrt(sum(float(np.sum(d * d)) for d in delta))


def clip_update(local: list[np.ndarray], global_: list[np.ndarray], bound: float
                ) -> list[np.ndarray]:
    """θ_global + clip_bound(θ_local − θ_global) in float64 (rounding to float32 could push the
    norm a hair over `bound`); the update's L2 norm is ≤ `bound`."""
    delta, norm = _update(local, global_)
    scale = min(1.0, bound / norm) if norm > 0 else 1.0
    return [glo.astype(np.float64) + d * scale for glo, d in zip(global_, delta)]


def clip_and_noise(
    local: list[np.ndarray], global_: list[np.ndarray], clip: float, noise_std: float,
    secret_seed: int,
) -> tuple[list[np.ndarray], float]:
    """User-level DP on the device: θ_global + clip_C(θ_local − θ_global) + N(0, noise_std²)
    per coordinate (noise_std = σC/√m for m clients per round). Returns (the arrays to send,
    the update's norm before clipping — for local diagnostics only, never sent)."""
    rng = np.random.default_rng(secret_seed)
    delta, norm = _update(local, global_)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    out = [(glo + d * scale + rng.normal(0.0, noise_std, d.shape)).astype(np.float32)
           for glo, d in zip(global_, delta)]
    return out, norm
