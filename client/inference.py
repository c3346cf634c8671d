"""On-device recommendation from the device's store, with torch.

    item vectors  v_i = g_θ(e_i)            for the store's head over its catalog
    personal p_u                             reconstructed against that head from the
                                             device's interactions (`fedrec.client.personal`,
                                             the federation's own code and recipe)
    user vector   u = normalize(s_φ(history) + p_u)
    scores        <u, v_i> / temperature     (`FedRecModel.logits`), the whole catalog

Both derived parts are cached in the store and in memory: the item vectors by the head's and
the catalog's digests (recomputed only when a new head or catalog arrives), the personal and
user vectors by (head, catalog, interactions, reconstruction recipe). So a recommendation
with warm caches is one (n_items × dim) product and a top-k (`fedrec.client.ranking`);
reconstruction runs only when the data or the head changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedrec.client import personal as personal_state
from fedrec.client import ranking
from fedrec.client.store import DeviceStore, Head, NoHead
from fedrec.common.config import FederationConfig
from fedrec.common.hparams import ModelConfig
from fedrec.common.model import FedRecModel, combine, pad_histories

EXPLAIN_ITEMS = 3  # history items named per recommendation


@dataclass(frozen=True)
class Ranking:
    """Top items, best first: ids (k,) int64, scores (k,) float32, and per item the history
    items most like it with their cosine similarity (None unless asked)."""

    items: np.ndarray
    scores: np.ndarray
    because: list[list[tuple[int, float]]] | None


def user_vectors(model: FedRecModel, item_vectors: torch.Tensor, history: torch.Tensor,
                 valid: torch.Tensor, personal: torch.Tensor) -> torch.Tensor:
    """(B, dim) user vectors from left-padded histories `history` (B, L) (any id where
    `valid` (B, L) is False) and personal vectors (B, dim), as `score_catalog` forms them:
    zeros at padding, and an empty history leaves the personal vector alone. Traceable (the
    ONNX export runs this same function)."""
    mask = valid.to(item_vectors.dtype)
    safe = torch.where(valid, history, torch.zeros_like(history))
    states = model.sequence_states(item_vectors[safe] * mask.unsqueeze(-1), valid)[:, -1]
    states = states * mask.amax(dim=-1, keepdim=True)
    return combine(states, personal)


def recipe(federation) -> dict:
    """The reconstruction settings a personal vector depends on (part of its cache key)."""
    return {"steps": int(federation.reconstruct_steps), "lr": float(federation.reconstruct_lr),
            "from": str(federation.reconstruct_from)}


class OnDeviceRecommender:
    """Recommendations for the device of `store`, reconstructing its personal vector with the
    recipe of `federation` (a `FederationConfig`: `reconstruct_steps`, `reconstruct_lr`,
    `reconstruct_from`; default: the federation's defaults). Item vectors are computed
    `chunk` catalog rows at a time (bounded memory on a device)."""

    def __init__(self, store: DeviceStore, federation: FederationConfig | None = None,
                 chunk: int = 8192):
        self.store, self.chunk = store, chunk
        self.federation = federation or FederationConfig()
        self.recipe = recipe(self.federation)
        self._model: tuple[str, Head, FedRecModel] | None = None
        self._items: tuple[str, np.ndarray, torch.Tensor] | None = None
        self._user: tuple[str, np.ndarray, torch.Tensor] | None = None

    # --- the head and its item vectors ------------------------------------------------------
    def digests(self) -> tuple[str, str]:
        """(head digest, catalog digest) of what the store holds now; `NoHead` if it lacks
        either."""
        head_digest, catalog_digest = self.store.head_digest, self.store.catalog_digest
        if head_digest is None or catalog_digest is None:
            missing = "recommendation head" if head_digest is None else "catalog"
            raise NoHead(f"{self.store.path}: no {missing} yet; install one "
                         "(`FedrecClient.install`) or take part in a federation round")
        return head_digest, catalog_digest

    def model(self, head_digest: str | None = None) -> tuple[Head, FedRecModel]:
        """The store's newest head (whose digest is `head_digest`, if known) as an eval-mode
        one-user model (personal vector zero)."""
        head_digest = head_digest or self.digests()[0]
        if self._model is None or self._model[0] != head_digest:
            head = self.store.head()
            model = FedRecModel(ModelConfig(**head.model_config), num_users=1)
            model.load_shared_arrays(head.arrays)
            self._model = (head.digest, head, model.eval())
        return self._model[1], self._model[2]

    def item_vectors(self) -> np.ndarray:
        """(n_items, dim) float32 item vectors of the current head (cached)."""
        return self._item_vectors(self.digests())[0]

    def _item_vectors(self, digests: tuple[str, str]) -> tuple[np.ndarray, torch.Tensor]:
        key = ranking.item_key(*digests)
        if self._items is None or self._items[0] != key:
            cached = self.store.cached(ranking.ITEM_VECTORS, key)
            vectors = cached["item_vectors"] if cached else self._compute_item_vectors(digests)
            # held as (dim, n_items) in memory: the product with the user vector then streams
            # the catalog contiguously (measured 30 % faster at 100,000 items on one core)
            by_dim = np.ascontiguousarray(vectors.T)
            self._items = (key, by_dim.T, torch.from_numpy(by_dim).T)
        return self._items[1], self._items[2]

    @torch.no_grad()
    def _compute_item_vectors(self, digests: tuple[str, str]) -> np.ndarray:
        _, model = self.model(digests[0])
        catalog = self.store.catalog()
        if catalog.shape[1] != model.cfg.input_dim:
            raise ValueError(f"{self.store.path}: the catalog's embeddings have width "
                             f"{catalog.shape[1]}, the head expects {model.cfg.input_dim}")
        parts = [model.item_vectors(torch.from_numpy(catalog[lo : lo + self.chunk]))
                 for lo in range(0, len(catalog), self.chunk)]
        vectors = torch.cat(parts).numpy()
        self.store.put_cached(ranking.ITEM_VECTORS, ranking.item_key(*digests),
                              {"item_vectors": vectors}, personal=False)
        return vectors

    # --- the user ---------------------------------------------------------------------------
    def user_vector(self) -> tuple[np.ndarray, np.ndarray]:
        """(personal vector, user vector), each (dim,) float32, for the device's current
        history and head (cached; reconstructed when either changed)."""
        digests = self.digests()
        history, _ = self.store.interactions()
        return self._user_vector(digests, history)[:2]

    def _user_vector(self, digests: tuple[str, str], history: np.ndarray):
        user_key = ranking.user_key(*digests, history, self.recipe)
        fresh = self._user is not None and self._user[0] == user_key
        if not fresh or self.store.cached_key(ranking.USER_VECTOR) != user_key:  # dropped?
            cached = self.store.cached(ranking.USER_VECTOR, user_key)
            if cached is None:
                cached = self._reconstruct(digests, history)
                self.store.put_cached(ranking.USER_VECTOR, user_key, cached, personal=True)
            user = cached["user_vector"]
            self._user = (user_key, cached["personal_vector"], user, torch.from_numpy(user))
        return self._user[1:]

    def _reconstruct(self, digests: tuple[str, str], history: np.ndarray) -> dict[str, np.ndarray]:
        """Reconstruct p_u against the frozen head from the whole history (the federation's
        `fedrec.client.personal.reconstruct`), then form the user vector."""
        head, model = self.model(digests[0])
        _, items = self._item_vectors(digests)
        # `self` is a device here: it has the store (`fedrec.client.device.Device.store`)
        stored = personal_state.starting_point(self, head.round + 1, self.federation)
        start = personal_state.initial(stored, model.cfg.dim).unsqueeze(0)
        personal = personal_state.reconstruct(model, items, [history], start,
                                              self.recipe["steps"], self.recipe["lr"])
        index = pad_histories([history], model.cfg.max_history)
        with torch.no_grad():
            user = user_vectors(model, items, index, index >= 0, personal)
        return {"personal_vector": personal[0].numpy().astype(np.float32),
                "user_vector": user[0].numpy().astype(np.float32)}

    # --- ranking ----------------------------------------------------------------------------
    def scores(self) -> np.ndarray:
        """(n_items,) scores of the whole catalog for this device."""
        digests = self.digests()
        history, _ = self.store.interactions()
        return self._scores(digests, history)

    def _scores(self, digests: tuple[str, str], history: np.ndarray) -> np.ndarray:
        _, items = self._item_vectors(digests)
        _, _, user = self._user_vector(digests, history)
        _, model = self.model(digests[0])
        with torch.no_grad():
            return model.logits(user, items).numpy()

    def recommend(self, k: int = 10, explain: bool = True) -> Ranking:
        """The `k` best items the user has not interacted with, best first; with `explain`,
        the history items most like each one."""
        digests = self.digests()
        history, _ = self.store.interactions()
        top, top_scores = ranking.top_k(self._scores(digests, history), history, k)
        because = None
        if explain:
            because = ranking.because(self._items[1], top, history, EXPLAIN_ITEMS)
        return Ranking(top, top_scores, because)
