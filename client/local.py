"""What a client does with its own data, without Flower: train the shared head and its
personal vector locally, and rank the full catalog for its own held-out item.

The model, training loop and metrics are the ones central training uses (fedrec.common).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from fedrec.common import metrics
from fedrec.common.evaluate import history_mask
from fedrec.common.model import FedRecModel, ModelConfig, score_catalog
from fedrec.common.train import TrainConfig, make_optimizer, train

PERSONAL_KEY = "personal_vector"


@dataclass(frozen=True)
class UserData:
    """One user's private data: chronological training items, held-out items (-1 if none),
    and the generalized profile (`fedrec.client.scrub`; no model uses it yet)."""

    train_items: np.ndarray
    valid_item: int
    test_item: int
    profile: dict = field(default_factory=dict)

    def history(self, stage: str) -> np.ndarray:
        if stage == "test" and self.valid_item >= 0:
            return np.append(self.train_items, self.valid_item)
        return self.train_items


def build_model(model_cfg: ModelConfig, shared: list[np.ndarray], personal: dict | None):
    """A one-user model with the received shared arrays and this device's personal vector."""
    model = FedRecModel(model_cfg, num_users=1)
    model.load_shared_arrays(shared)
    if personal is not None:
        with torch.no_grad():
            model.personal.vectors.weight.copy_(torch.as_tensor(personal[PERSONAL_KEY]))
    return model


def fit_local(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    item_embeddings: torch.Tensor,
    shared: list[np.ndarray],
    personal: dict | None,
    data: UserData,
    epochs: int,
    seed: int,
    proximal_mu: float = 0.0,
) -> tuple[list[np.ndarray], dict[str, np.ndarray], int, float]:
    """Train on this user's sequence for `epochs` local epochs.

    Returns (new shared arrays, new personal state, number of training positions, mean loss).
    With `proximal_mu` > 0 adds FedProx's (mu/2)·||θ − θ_global||² on the shared parameters.
    """
    torch.manual_seed(seed)
    model = build_model(model_cfg, shared, personal)
    regularizer = None
    if proximal_mu > 0:
        anchor = [p.detach().clone() for p in model.shared_parameters()]

        def regularizer():
            return 0.5 * proximal_mu * sum(
                (p - a).pow(2).sum() for p, a in zip(model.shared_parameters(), anchor))

    cfg = replace(train_cfg, epochs=epochs, seed=seed)
    losses = train(model, item_embeddings, [data.train_items], np.zeros(1, np.int64), cfg,
                   make_optimizer(model, cfg), regularizer=regularizer)
    num_examples = max(0, len(data.train_items) - 1)
    new_personal = {PERSONAL_KEY: model.personal.vectors.weight.detach().numpy().copy()}
    return model.shared_arrays(), new_personal, num_examples, float(np.mean(losses or [0.0]))


def evaluate_local(
    model_cfg: ModelConfig,
    item_embeddings: torch.Tensor,
    shared: list[np.ndarray],
    personal: dict | None,
    data: UserData,
) -> dict[str, float] | None:
    """Rank the whole catalog on the device for the user's test item (excluding the user's
    earlier items), with the same metric code as central evaluation. None if no test item."""
    if data.test_item < 0:
        return None
    model = build_model(model_cfg, shared, personal)
    history = data.history("test")
    scores = score_catalog(model, item_embeddings, np.zeros(1, np.int64), [history]).numpy()
    exclude = history_mask([history], scores.shape[1])
    greater, ties = metrics.target_ranks(scores, np.array([data.test_item]), exclude)
    return {name: float(v[0]) for name, v in metrics.rank_metrics(greater, ties).items()}
