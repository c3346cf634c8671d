"""Every model behind one small interface (implicit-style): `fit`, `score`, `recommend`,
`save`/`load`. Evaluation, the CLI and the federation never special-case a model.

- `popular`: most-popular by training interactions.
- `bpr`: BPR-MF (Rendle et al., 2009), a small PyTorch implementation.
- `fedrec`: the fedrec model (common/model.py) trained centrally, without privacy.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from fedrec.common import atomic
from fedrec.common.errors import RunDirError
from fedrec.common.evaluate import evaluate
from fedrec.common.hparams import BPRConfig, ModelConfig, TrainConfig
from fedrec.common.model import FedRecModel, score_catalog
from fedrec.common.split import Split
from fedrec.common.train import make_optimizer, train


class Recommender:
    """Base: subclasses implement `fit`, `score`, `state`, `from_state`."""

    name = "base"

    def fit(self, split: Split, item_embeddings: np.ndarray, progress=None) -> Recommender:
        raise NotImplementedError

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """(B, n_items) float32 scores; `histories` are chronological item indices per user."""
        raise NotImplementedError

    def item_vectors(self) -> np.ndarray | None:
        """(n_items, d) vectors whose cosine says which items are alike (for explanations)."""
        return None

    def recommend(
        self, user: int, history: np.ndarray, k: int = 10, filter_seen: bool = True
    ) -> list[tuple[int, float]]:
        """Top-`k` (item, score) for `user`, excluding `history` when `filter_seen`."""
        scores = self.score(np.array([user]), [history])[0].astype(np.float64)
        if filter_seen and len(history):
            scores[np.asarray(history)] = -np.inf
        top = np.lexsort((np.arange(len(scores)), -scores))[:k]
        return [(int(i), float(scores[i])) for i in top if np.isfinite(scores[i])]

    def explain(self, item: int, history: np.ndarray, n: int = 3) -> list[tuple[int, float]]:
        """The `n` history items most similar to `item`, with cosine similarity."""
        vectors = self.item_vectors()
        if vectors is None or len(history) == 0:
            return []
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        history = np.unique(np.asarray(history))
        sims = unit[history] @ unit[item]
        best = np.argsort(-sims, kind="stable")[:n]
        return [(int(history[j]), float(sims[j])) for j in best]

    # --- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        tensors, meta = self.state()
        with atomic.atomic_path(Path(directory) / "model.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        atomic.write_text(Path(directory) / "model.json", json.dumps({"model": self.name, **meta}))

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        raise NotImplementedError


class Popular(Recommender):
    name = "popular"

    def fit(self, split, item_embeddings=None, progress=None):
        self.counts = split.item_popularity().astype(np.float32)
        return self

    def score(self, users, histories):
        return np.broadcast_to(self.counts, (len(users), len(self.counts))).copy()

    def state(self):
        return {"counts": torch.from_numpy(self.counts)}, {}

    @classmethod
    def from_state(cls, tensors, meta, item_embeddings=None):
        model = cls()
        model.counts = tensors["counts"].numpy()
        return model


class EarlyStopping:
    """Keeps the best state by validation NDCG@10; stops after `patience` checks without gain."""

    def __init__(self, patience: int):
        self.patience, self.best, self.best_state, self.bad_checks = patience, -1.0, None, 0

    def update(self, metric: float, state: dict) -> bool:
        """Record a validation result; returns True when training should stop."""
        if self.best_state is None or metric > self.best:  # NaN (no validation users) too
            self.best, self.best_state, self.bad_checks = metric, copy.deepcopy(state), 0
        else:
            self.bad_checks += 1
        return self.bad_checks >= self.patience



class BPRMF(Recommender):
    """Matrix factorization trained with the BPR pairwise loss (Rendle et al., 2009): each
    training interaction against `negatives` items the user has not interacted with."""

    name = "bpr"

    def __init__(self, cfg: BPRConfig | None = None):
        self.cfg = cfg or BPRConfig()

    def fit(self, split, item_embeddings=None, progress=None):
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.users = torch.nn.Embedding(split.num_users, cfg.dim)
        self.items = torch.nn.Embedding(split.num_items, cfg.dim)
        for emb in (self.users, self.items):
            torch.nn.init.normal_(emb.weight, std=0.1)
        params = [self.users.weight, self.items.weight]
        opt = torch.optim.Adam(params, lr=cfg.lr)
        seen = split.train_matrix()
        matrix = seen.tocoo()
        pos_u = np.repeat(matrix.row.astype(np.int64), cfg.negatives)
        pos_i = np.repeat(matrix.col.astype(np.int64), cfg.negatives)
        stopper = EarlyStopping(cfg.patience)
        last: dict[str, float] = {}  # the latest validation, shown with every epoch
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(pos_u))
            neg = unseen_items(seen, pos_u, rng)
            total = 0.0
            for start in range(0, len(order), cfg.batch_size):
                b = order[start : start + cfg.batch_size]
                u, i, j = (torch.from_numpy(x[b]) for x in (pos_u, pos_i, neg))
                eu, ei, ej = self.users(u), self.items(i), self.items(j)
                x = (eu * (ei - ej)).sum(-1)
                reg = cfg.weight_decay * (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum())
                loss = -torch.nn.functional.logsigmoid(x).mean() + reg / len(b)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            validate = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
            if validate:
                last["valid_ndcg@10"] = evaluate(self, split, stage="valid")["ndcg@10"]
            if progress:
                progress(epoch, {"loss": total / max(1, len(order)), **last})
            if validate and stopper.update(last["valid_ndcg@10"], self.state()[0]):
                break
        self._load(stopper.best_state)
        return self

    def score(self, users, histories):
        with torch.no_grad():
            return (self.users.weight[torch.as_tensor(users)] @ self.items.weight.T).numpy()

    def item_vectors(self):
        return self.items.weight.detach().numpy()

    def state(self):
        return {"users": self.users.weight.detach(), "items": self.items.weight.detach()}, {
            "config": asdict(self.cfg)
        }

    def _load(self, tensors):
        self.users = torch.nn.Embedding.from_pretrained(tensors["users"].clone())
        self.items = torch.nn.Embedding.from_pretrained(tensors["items"].clone())

    @classmethod
    def from_state(cls, tensors, meta, item_embeddings=None):
        model = cls(BPRConfig(**meta["config"]))
        model._load(tensors)
        return model


def unseen_items(seen, users: np.ndarray, rng: np.random.Generator, tries: int = 20) -> np.ndarray:
    """One item per entry of `users`, uniform among the items that user has not seen in
    `seen` (a CSR user x item matrix): rejection sampling, redrawing only the clashes, and an
    exact draw from the user's unseen items for the few still clashing after `tries`. A user
    who has seen every item keeps its last draw."""
    coo = seen.tocoo()
    n_items = seen.shape[1]
    keys = np.sort(coo.row.astype(np.int64) * n_items + coo.col)  # every (user, item) seen

    def was_seen(u, i):
        key = u * n_items + i
        pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        return keys[pos] == key if len(keys) else np.zeros(len(key), bool)

    items = rng.integers(0, n_items, len(users))
    clash = was_seen(users, items)
    for _ in range(tries):
        if not clash.any():
            break
        idx = np.flatnonzero(clash)
        items[idx] = rng.integers(0, n_items, len(idx))
        clash[idx] = was_seen(users[idx], items[idx])
    for k in np.flatnonzero(clash):
        unseen = np.setdiff1d(np.arange(n_items), seen[users[k]].indices)
        if len(unseen):
            items[k] = rng.choice(unseen)
    return items


class FedRecCentral(Recommender):
    """The fedrec model trained on all users' data in one place (the non-private reference)."""

    name = "fedrec"

    def __init__(
        self,
        model_cfg: ModelConfig | None = None,
        train_cfg: TrainConfig | None = None,
        eval_every: int = 5,
        patience: int = 3,
    ):
        self.model_cfg = model_cfg or ModelConfig()
        self.train_cfg = train_cfg or TrainConfig()
        self.eval_every, self.patience = eval_every, patience

    def fit(self, split, item_embeddings, progress=None):
        torch.manual_seed(self.train_cfg.seed)
        self.embeddings = torch.as_tensor(item_embeddings, dtype=torch.float32)
        self.model_cfg = replace(self.model_cfg, input_dim=int(self.embeddings.shape[1]))
        self.model = FedRecModel(self.model_cfg, split.num_users)
        optimizer = make_optimizer(self.model, self.train_cfg)
        users = np.arange(split.num_users)
        stopper = EarlyStopping(self.patience)
        last: dict[str, float] = {}  # the latest validation, shown with every epoch
        for start in range(0, self.train_cfg.epochs, self.eval_every):
            epochs = min(self.eval_every, self.train_cfg.epochs - start)
            chunk = replace(self.train_cfg, epochs=epochs, seed=self.train_cfg.seed + start)
            each_epoch = None if progress is None else (
                lambda epoch, loss, start=start: progress(start + epoch, {"loss": loss, **last}))
            losses = train(self.model, self.embeddings, split.train_sequences, users, chunk,
                           optimizer, progress=each_epoch)
            last["valid_ndcg@10"] = evaluate(self, split, stage="valid")["ndcg@10"]
            if progress:
                progress(start + epochs - 1, {"loss": losses[-1], **last})
            if stopper.update(last["valid_ndcg@10"], self.model.state_dict()):
                break
        self.model.load_state_dict(stopper.best_state)
        self.model.eval()
        return self

    @classmethod
    def from_model(cls, model: FedRecModel, item_embeddings) -> FedRecCentral:
        """Wrap an already trained model (e.g. a federated one) in the common interface."""
        obj = cls(model.cfg)
        obj.model, obj.embeddings = model.eval(), torch.as_tensor(item_embeddings)
        return obj

    def score(self, users, histories):
        return score_catalog(self.model, self.embeddings, users, histories).numpy()

    def item_vectors(self):
        with torch.no_grad():
            self.model.eval()
            return self.model.item_vectors(self.embeddings).numpy()

    def state(self):
        return self.model.state_dict(), {
            "model_config": asdict(self.model_cfg),
            "num_users": self.model.personal.vectors.num_embeddings,
        }

    @classmethod
    def from_state(cls, tensors, meta, item_embeddings=None):
        obj = cls(ModelConfig(**meta["model_config"]))
        obj.embeddings = torch.as_tensor(item_embeddings, dtype=torch.float32)
        obj.model = FedRecModel(obj.model_cfg, meta["num_users"])
        obj.model.load_state_dict(tensors)
        obj.model.eval()
        return obj


MODELS: dict[str, type[Recommender]] = {"popular": Popular, "bpr": BPRMF, "fedrec": FedRecCentral}


def load_recommender(directory: Path, item_embeddings: np.ndarray | None = None) -> Recommender:
    """Load what `Recommender.save` wrote into `directory`."""
    directory = Path(directory)
    meta_path, weights_path = directory / "model.json", directory / "model.safetensors"
    if not meta_path.exists() or not weights_path.exists():
        raise RunDirError(f"{directory}: no trained model (expected model.json and model.safetensors)")
    meta = json.loads(meta_path.read_text())
    if meta.get("model") not in MODELS:
        raise RunDirError(f"{meta_path}: unknown model '{meta.get('model')}', expected one of {sorted(MODELS)}")
    return MODELS[meta["model"]].from_state(load_file(str(weights_path)), meta, item_embeddings)
