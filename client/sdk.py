"""`FedrecClient`: what an app embeds on a device. Offline: nothing here touches the network.

    client = FedrecClient(store="app-data/device.sqlite")
    client.install(catalog_embeddings, head_arrays, model_config)   # ship an initial head
    client.add_interaction(42)
    client.recommend(k=10)          # [Recommendation(item, score, because=[(item, weight)])]
    client.forget(42); client.forget_all()
    client.privacy_status()         # record-level ε spent, budget, releases, pseudonym

Everything lives in the device's `DeviceStore` (`fedrec.client.store`); a federation round
(the `ClientApp` on the same store) replaces the head, and the next recommendation uses it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np

from fedrec.client.budget import PrivacyAccount
from fedrec.client.inference import OnDeviceRecommender
from fedrec.client.store import DeviceStore, NoHead
from fedrec.common.config import FederationConfig
from fedrec.common.errors import FedrecError
from fedrec.common.hparams import ModelConfig
from fedrec.common.model import FedRecModel
from fedrec.common.privacy import PrivacyConfig

__all__ = ["FedrecClient", "Recommendation", "PrivacyStatus", "UnknownItem", "NoHead"]


class UnknownItem(FedrecError):
    """An item id that is not in the installed catalog."""


@dataclass(frozen=True)
class Recommendation:
    """A recommended item, its score, and the history items most like it (cosine)."""

    item: int
    score: float
    because: list[tuple[int, float]]


@dataclass(frozen=True)
class PrivacyStatus:
    """What this device has spent: record-level (ε, δ)-DP — each training window of the
    user's interactions is protected — composed over every release by `accountant`."""

    unit: str
    epsilon_spent: float
    delta: float
    epsilon_budget: float
    epsilon_remaining: float
    releases: int
    pseudonym: str
    accountant: str


class FedrecClient:
    """The device of the store at `store` (default: `device.sqlite` in the user's app data
    directory). `privacy`: the budget this device enforces (the federation's `[privacy]`);
    `federation`: its reconstruction recipe. `fsync=False` only for simulated devices."""

    def __init__(self, store: str | Path | None = None, *, privacy: PrivacyConfig | None = None,
                 federation: FederationConfig | None = None, fsync: bool = True):
        self.store = DeviceStore(store, fsync=fsync)
        self.privacy = privacy or PrivacyConfig()
        self.recommender = OnDeviceRecommender(self.store, federation)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> FedrecClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def install(self, catalog_embeddings: np.ndarray, head_arrays: list[np.ndarray],
                model_config: ModelConfig | dict, round_: int = 0,
                catalog_name: str = "catalog") -> None:
        """Install the catalog's frozen embeddings (n_items, d) and a head (its shared arrays
        in wire order, for `model_config`) that the app ships, and compute the item vectors
        so that the first recommendation is fast. A head from a later round already on the
        device (a federation replaced it) is kept."""
        config = asdict(model_config) if is_dataclass(model_config) else dict(model_config)
        embeddings = np.asarray(catalog_embeddings, np.float32)
        model = FedRecModel(ModelConfig(**config), num_users=1)
        model.load_shared_arrays(head_arrays)  # the arrays must fit the config: raises if not
        if embeddings.ndim != 2 or embeddings.shape[1] != model.cfg.input_dim:
            raise ValueError(f"catalog embeddings of shape {embeddings.shape}; the head expects "
                             f"(n_items, {model.cfg.input_dim})")
        head = self.store.head()
        with self.store.transaction():
            self.store.set_catalog(embeddings, catalog_name)
            if head is None or head.round <= round_:
                self.store.save_head(round_, head_arrays, config)
        self.recommender.item_vectors()

    def add_interaction(self, item: int, timestamp: float | None = None) -> None:
        """Record that the user interacted with catalog item `item` (at `timestamp`, seconds
        since the epoch; default: now)."""
        self._check_item(item)
        self.store.add_interaction(item, time.time() if timestamp is None else timestamp)

    def recommend(self, k: int = 10, explain: bool = True) -> list[Recommendation]:
        """The `k` best items the user has not interacted with yet, best first. With
        `explain`, each names the history items most like it."""
        ranked = self.recommender.recommend(k, explain)
        because = ranked.because or [[] for _ in ranked.items]
        return [Recommendation(int(i), float(s), b)
                for i, s, b in zip(ranked.items, ranked.scores, because)]

    def forget(self, item: int) -> int:
        """Delete every interaction with `item` (and what was fitted to it); returns how many
        were deleted."""
        self._check_item(item)
        return self.store.forget(item)

    def forget_all(self) -> None:
        """Delete all of the user's data on this device (`DeviceStore.forget_all`): the
        privacy budget already spent keeps counting."""
        self.store.forget_all()

    def privacy_status(self) -> PrivacyStatus:
        """Record-level ε this device has spent (0 if it never trained) at the δ its account
        was charged at, against the budget the device enforced (the SDK's `privacy.epsilon`
        before its first release)."""
        state = self.store.read_account() or {}
        delta = float(state.get("delta", self.privacy.delta))
        accountant = str(state.get("accountant", self.privacy.accountant))
        account = PrivacyAccount(self.store, delta, accountant)
        spent = account.epsilon
        budget = float(account.budget if account.budget is not None else self.privacy.epsilon)
        return PrivacyStatus("record", spent, delta, budget, max(0.0, budget - spent),
                             len(self.store.releases()), self.store.pseudonym(), accountant)

    def _check_item(self, item) -> None:
        size = self.store.catalog_size
        if size is None:
            raise NoHead(f"{self.store.path}: no catalog yet, so item {item!r} cannot be "
                         "checked; install one first (`FedrecClient.install`)")
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)) or not 0 <= item < size:
            raise UnknownItem(f"item {item!r} is not in the catalog: its {size} items have "
                              f"ids 0..{size - 1}")
