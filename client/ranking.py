"""Ranking on the device without torch: top-k over scores, the explanations, the keys of the
store's caches, and running an exported ONNX ranking graph (`fedrec.client.export`) with
onnxruntime. Both inference paths — torch (`fedrec.client.inference`) and ONNX — rank
through these functions, so they exclude, order and explain alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedrec.client.budget import digest

ITEM_VECTORS = "item_vectors"  # store cache: the head's item vectors, (n_items, dim)
USER_VECTOR = "user_vector"  # store cache: the serving personal vector and user vector


def item_key(head_digest: str, catalog_digest: str) -> str:
    """The cache key of the item vectors of a head over a catalog."""
    return f"{head_digest}/{catalog_digest}"


def user_key(head_digest: str, catalog_digest: str, history: np.ndarray, recipe: dict) -> str:
    """The cache key of the personal vector reconstructed against a head from a history with
    a reconstruction `recipe` (steps, learning rate, starting point)."""
    history_digest = digest([np.asarray(history, np.int64)])
    return f"{head_digest}/{catalog_digest}/{history_digest}/{json.dumps(recipe, sort_keys=True)}"


def pad_history(history: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The newest `length` items of `history`, left-padded: (ids int64 [length], valid bool
    [length]); padded positions hold item 0 and valid = False."""
    tail = np.asarray(history, np.int64)[-length:] if length else np.zeros(0, np.int64)
    ids, valid = np.zeros(length, np.int64), np.zeros(length, bool)
    if len(tail):
        ids[length - len(tail):], valid[length - len(tail):] = tail, True
    return ids, valid


def top_k(scores: np.ndarray, exclude: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best items by score, best first, skipping the items in `exclude`; ties go to
    the lower item id. Returns (items int64, scores). `scores` itself is left unchanged."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    exclude = np.unique(np.asarray(exclude, np.int64))
    scores[exclude] = -np.inf
    k = min(int(k), len(scores) - len(exclude))
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    top = np.argpartition(scores, len(scores) - k)[len(scores) - k:]
    kth = scores[top].min()  # items tied with the k-th: the lowest ids, as a full sort has it
    above = top[scores[top] > kth]
    top = np.concatenate([above, np.flatnonzero(scores == kth)[: k - len(above)]])
    top = top[np.lexsort((top, -scores[top]))]
    return top.astype(np.int64), scores[top]


def because(item_vectors: np.ndarray, items: np.ndarray, history: np.ndarray,
            n: int = 3) -> list[list[tuple[int, float]]]:
    """For each of `items`, the `n` history items most similar to it with their cosine
    similarity — `fedrec.common.recommenders.Recommender.explain`'s answer, for all items
    at once and without normalizing the whole catalog."""
    history = np.unique(np.asarray(history, np.int64))
    if len(history) == 0:
        return [[] for _ in items]

    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    sims = unit(item_vectors[np.asarray(items)]) @ unit(item_vectors[history]).T  # (k, H)
    best = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    return [[(int(history[j]), float(sims[r, j])) for j in row] for r, row in enumerate(best)]


class OnnxRanker:
    """An exported ranking graph run by onnxruntime (see `fedrec.client.export` for its
    inputs, outputs and metadata). `threads`: onnxruntime's intra-op threads."""

    def __init__(self, model: str | Path | bytes, threads: int = 1):
        try:
            import onnxruntime
        except ImportError:  # an optional extra: say which
            raise ImportError("running an exported graph needs onnxruntime: "
                              "pip install 'fedrec[export]'") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        source = model if isinstance(model, bytes) else str(model)
        self.session = onnxruntime.InferenceSession(source, options,
                                                    providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.max_history = int(meta["max_history"])
        self.num_items = int(meta["num_items"])
        self.head_digest, self.catalog_digest = meta["head_digest"], meta["catalog_digest"]
        self.recipe = json.loads(meta["recipe"])

    def scores(self, history: np.ndarray, personal_vector: np.ndarray) -> tuple[np.ndarray,
                                                                                np.ndarray]:
        """(scores [n_items], user_vector [dim]) for a chronological `history`."""
        ids, valid = pad_history(history, self.max_history)
        scores, user = self.session.run(None, {
            "history": ids, "valid": valid,
            "personal_vector": np.asarray(personal_vector, np.float32).reshape(-1)})
        return scores, user

    def recommend(self, history: np.ndarray, personal_vector: np.ndarray, k: int = 10,
                  exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` (items, scores), excluding `exclude` (default: the history)."""
        scores, _ = self.scores(history, personal_vector)
        return top_k(scores, history if exclude is None else exclude, k)

    def recommend_from(self, store, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` for the device of `store` (a `DeviceStore`): its history, and the personal
        vector the torch path reconstructed for this head and history (cached in the store)."""
        if (store.head_digest, store.catalog_digest) != (self.head_digest, self.catalog_digest):
            raise ValueError(f"this graph was exported for head {self.head_digest} over catalog "
                             f"{self.catalog_digest}; {store.path} holds head "
                             f"{store.head_digest} over {store.catalog_digest}: export it again")
        history, _ = store.interactions()
        cached = store.cached(USER_VECTOR, user_key(self.head_digest, self.catalog_digest,
                                                    history, self.recipe))
        if cached is None:
            raise LookupError(f"{store.path}: no personal vector for this head and history yet "
                              "(it is reconstructed by the torch path, `FedrecClient.recommend`)")
        return self.recommend(history, cached["personal_vector"], k)
