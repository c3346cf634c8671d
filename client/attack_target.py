"""A device as the membership attack's target (`fedrec.audit.attack`): the update it would
release after training on given items, by the same local training (`fedrec.client.local`) and
record-level DP-SGD (`fedrec.client.dp`) a device runs in a federation, from one fixed global
model. The audit takes it as a parameter (`fedrec audit attack` passes `DeviceUpdates`), so the
audit depends on `fedrec.common` only."""

from __future__ import annotations

import secrets
from dataclasses import replace

import numpy as np
import torch

from fedrec.client import dp, local
from fedrec.common import privacy
from fedrec.common.config import RunConfig
from fedrec.common.model import FedRecModel


class DeviceUpdates:
    """Updates θ_local − θ_global of a device, from the global model `cfg` initializes (seed
    `cfg.seed`), over the catalog's frozen `item_embeddings` (n_items × d)."""

    def __init__(self, cfg: RunConfig, item_embeddings: np.ndarray):
        self.cfg = cfg
        self.item_embeddings = torch.as_tensor(item_embeddings)
        self.model_cfg = replace(cfg.fedrec, input_dim=int(self.item_embeddings.shape[1]))
        torch.manual_seed(cfg.seed)
        self.global_ = FedRecModel(self.model_cfg, num_users=1).shared_arrays()

    def __call__(self, train_items: np.ndarray, epsilon: float | None, seed: int,
                 shares: int | None = None) -> list[np.ndarray]:
        """The update (float64) after training on `train_items` (item ids, oldest first) for
        the run's local epochs: plain local training seeded by `seed` (`epsilon` None), or
        record-level DP-SGD with σ calibrated to spend exactly `epsilon` in this one release,
        its randomness from a secret seed: local noise, or with `shares` = m the distributed
        step (`fedrec.client.dp.distributed_update`) with this device's share of the noise."""
        data = local.UserData(np.asarray(train_items, dtype=np.int64), -1, -1)
        epochs = self.cfg.federation.local_epochs
        if epsilon is not None and shares is not None:
            p = replace(self.cfg.privacy, mode="record", noise="distributed", epsilon=epsilon,
                        planned_rounds=1, shares=shares)
            p = replace(p, noise_multiplier=privacy.noise_for_epsilon(
                epsilon, p.delta, p.sample_rate, 1, p.accountant))
            shared = dp.distributed_update(self.model_cfg, p, self.item_embeddings,
                                           self.global_, [data], [secrets.randbits(62)],
                                           seed, [True])
        elif epsilon is None:
            shared, *_ = local.fit_local(self.model_cfg, self.cfg.train, self.item_embeddings,
                                         self.global_, None, data, epochs=epochs, seed=seed)
        else:
            p = replace(self.cfg.privacy, mode="record", epsilon=epsilon, planned_rounds=1)
            mechanism = dp.plan(data, self.cfg.train, p, epochs)
            sigma = privacy.noise_for_epsilon(epsilon, p.delta, mechanism.sample_rate,
                                              mechanism.steps, p.accountant)
            shared, *_ = dp.fit_private(self.model_cfg, self.cfg.train, p, self.item_embeddings,
                                        self.global_, None, data, epochs, sigma,
                                        secrets.randbits(62))
        return [np.asarray(s, np.float64) - g for s, g in zip(shared, self.global_)]
