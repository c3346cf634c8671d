"""The Flower `ClientApp`: a thin adapter from messages to `fedrec.client.local`.

Replies are FitRes-shaped (`NumPyClient`), which is what `secaggplus_mod` needs. A reply
carries only the shared arrays, the number of training positions and the local loss; the
personal vector stays in the device's `PersonalStore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from fedrec.client import data, local
from fedrec.client.store import PersonalStore
from fedrec.common.config import FederationConfig
from fedrec.common.model import ModelConfig
from fedrec.common.train import TrainConfig


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs, fixed for the run (small: pickled with every message)."""

    model: ModelConfig
    train: TrainConfig
    federation: FederationConfig
    data: data.DataSpec
    store_root: str


class InjectedFailure(RuntimeError):
    """Raised by clients chosen by --fail-rate, to exercise the failure path."""


class FedRecClient(NumPyClient):
    def __init__(self, settings: ClientSettings, user: int):
        self.settings, self.user = settings, user
        self.store = PersonalStore(Path(settings.store_root) / f"{user:06d}")

    def get_properties(self, config):
        """Only the simulation's partition index, used to sample reproducibly."""
        return {"partition-id": self.user}

    def fit(self, parameters, config):
        s, round_ = self.settings, int(config["server_round"])
        seed = int(config["seed"])
        if s.federation.fail_rate > 0:
            if np.random.default_rng([seed, round_, 1, self.user, 0]).random() < s.federation.fail_rate:
                raise InjectedFailure(f"injected failure in round {round_}")
        proximal_mu = s.federation.proximal_mu if s.federation.strategy == "fedprox" else 0.0
        shared, personal, num_examples, loss = local.fit_local(
            s.model, s.train, data.catalog_embeddings(s.data), parameters,
            self.store.load(before_round=round_), data.user_partition(s.data, self.user),
            epochs=s.federation.local_epochs,
            seed=int(np.random.default_rng([seed, round_, 1, self.user, 1]).integers(2**31)),
            proximal_mu=proximal_mu,
        )
        self.store.save(round_, personal, keep_from=int(config["checkpoint_round"]))
        return shared, num_examples, {"loss": loss}

    def evaluate(self, parameters, config):
        s = self.settings
        personal = self.store.load(before_round=int(config["server_round"]) + 1)
        result = local.evaluate_local(s.model, data.catalog_embeddings(s.data), parameters,
                                      personal, data.user_partition(s.data, self.user))
        if result is None:
            return 0.0, 0, {}
        return 1.0 - result["ndcg@10"], 1, result


def make_client_app(settings: ClientSettings, mods: list | None = None) -> ClientApp:
    def client_fn(context):
        import torch

        torch.set_num_threads(1)
        user = int(context.node_config["partition-id"])
        return FedRecClient(settings, user).to_client()

    return ClientApp(client_fn=client_fn, mods=mods or [])
