"""Rank-based metrics for one held-out target per user, computed from a score matrix.

Pure numpy. Shapes: B users (rows) × n catalog items (columns).

Ties are handled honestly: when the target scores the same as other candidates, its rank is taken
as uniform over the tied positions and every metric is the *expected* value under uniformly random
tie-breaking. So a constant scorer gets exactly the random-guess value, not HR = 1. The ranking
step reduces each row to two counts (`target_ranks`); the metrics are closed forms in them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_COSINE_CHUNK = 4096  # lists per block in intra_list_diversity: bounds memory to chunk × k × d


def target_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Count candidates above and level with each user's target.

    `scores`: (B, n) float, no NaN. `targets`: (B,) item index. `exclude`: (B, n) bool, True for
    items that are not candidates (e.g. the user's history), or None.
    Returns `greater`, `ties`: (B,) int64 — candidates scoring strictly higher than the target, and
    *other* candidates scoring exactly the same. The target itself is always a candidate, even if
    `exclude` marks it (a repeat consumption must still be rankable).
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets, np.int64)
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets][:, None]
    candidate = np.ones(scores.shape, bool) if exclude is None else ~np.asarray(exclude, bool)
    candidate[rows, targets] = False  # counted neither as greater nor as a tie
    greater = ((scores > target_scores) & candidate).sum(axis=1)
    ties = ((scores == target_scores) & candidate).sum(axis=1)
    return greater.astype(np.int64), ties.astype(np.int64)


def _expected_discount(
    greater: np.ndarray, ties: np.ndarray, k: int, discount: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """E[discount(rank) · 1{rank < k}] with the 0-based rank uniform on greater..greater+ties."""
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    greater = np.asarray(greater, np.int64)
    ties = np.asarray(ties, np.int64)
    # cumulative[j] = sum of discount(r) for r < j, j = 0..k
    cumulative = np.concatenate([[0.0], np.cumsum(discount(np.arange(k, dtype=np.float64)))])
    low = np.minimum(greater, k)
    high = np.minimum(greater + ties + 1, k)
    return (cumulative[high] - cumulative[low]) / (ties + 1)


def hit_rate(greater: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """(B,) expected HR@k: probability that the target ranks in the top k."""
    return _expected_discount(greater, ties, k, np.ones_like)


def recall(greater: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """(B,) expected Recall@k. With one relevant item per user this equals HR@k."""
    return hit_rate(greater, ties, k)


def ndcg(greater: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """(B,) expected NDCG@k for one relevant item: 1 / log2(rank + 2) if rank < k, else 0."""
    return _expected_discount(greater, ties, k, lambda r: 1.0 / np.log2(r + 2.0))


def mrr(greater: np.ndarray, ties: np.ndarray, k: int) -> np.ndarray:
    """(B,) expected MRR@k: 1 / (rank + 1) if rank < k, else 0."""
    return _expected_discount(greater, ties, k, lambda r: 1.0 / (r + 1.0))


def rank_metrics(greater: np.ndarray, ties: np.ndarray) -> dict[str, np.ndarray]:
    """The per-user ranking metrics every evaluation reports: hr@10, ndcg@10, recall@20,
    mrr@10, each (B,). Central evaluation and each device's own evaluation both use this."""
    return {
        "hr@10": hit_rate(greater, ties, 10),
        "ndcg@10": ndcg(greater, ties, 10),
        "recall@20": recall(greater, ties, 20),
        "mrr@10": mrr(greater, ties, 10),
    }


def random_hit_rate(num_candidates: np.ndarray, k: int) -> np.ndarray:
    """(B,) expected HR@k of a uniformly random ranking of c candidates: min(k, c) / c.

    Rows with no candidates give NaN.
    """
    c = np.asarray(num_candidates, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, np.minimum(k, c) / c, np.nan)


def top_k(scores: np.ndarray, exclude: np.ndarray | None, k: int) -> np.ndarray:
    """(B, k) int64 indices of each row's k best candidates, best first.

    `scores`: (B, n) float, no NaN; `exclude`: (B, n) bool or None. Equal scores are ordered by the
    lower item index first, so the result is deterministic. Excluded items are never returned; a
    row with fewer than k candidates is padded with -1.
    Cost is O(B·n) (a partition, not a full sort) plus O(B·k log k).
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    n_rows, n_items = scores.shape
    kk = min(k, n_items)
    out = np.full((n_rows, k), -1, np.int64)
    if n_rows == 0 or kk == 0:
        return out
    # Ascending key; NaN marks excluded items and sorts after every candidate (even -inf scores).
    key = -scores if exclude is None else np.where(exclude, np.nan, -scores)

    # Select exactly min(kk, #candidates) per row: everything up to the kk-th best key; where
    # items level with it overflow the kk slots, keep the lowest-index ones.
    kth = np.partition(key, kk - 1, axis=1)[:, kk - 1 : kk]
    selected = key <= kth
    short = np.isnan(kth[:, 0])  # fewer than kk candidates: take them all
    selected[short] = ~np.isnan(key[short])
    overflow = selected.sum(axis=1) > kk
    if overflow.any():
        # Re-rank those rows by item index: better items first (-1), then level items by index.
        sub, sub_kth = key[overflow], kth[overflow]
        index = np.arange(n_items, dtype=np.int64)
        by_index = np.where(sub < sub_kth, -1, np.where(sub == sub_kth, index, n_items))
        cut = np.partition(by_index, kk - 1, axis=1)[:, kk - 1 : kk]
        selected[overflow] = by_index <= cut

    rows, cols = np.nonzero(selected)  # row-major: columns ascending within each row
    counts = np.bincount(rows, minlength=n_rows)
    position = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    picked = np.full((n_rows, kk), -1, np.int64)
    picked_key = np.full((n_rows, kk), np.inf, key.dtype)
    picked[rows, position] = cols
    picked_key[rows, position] = key[rows, cols]
    is_pad = picked < 0
    # Sort by (padding last, key ascending, item index ascending).
    order = np.lexsort((picked, picked_key, is_pad), axis=1)
    out[:, :kk] = np.take_along_axis(picked, order, axis=1)
    return out


def coverage(top_k_lists: np.ndarray, num_items: int) -> float:
    """Fraction of the `num_items` catalog that appears in at least one list. -1 entries ignored."""
    lists = np.asarray(top_k_lists, np.int64)
    if num_items <= 0:
        raise ValueError(f"num_items must be positive, got {num_items}")
    return float(np.unique(lists[lists >= 0]).size / num_items)


def intra_list_diversity(top_k_lists: np.ndarray, item_embeddings: np.ndarray) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 − cos) between a list's items.

    `top_k_lists`: (B, k) item indices, -1 = padding (ignored). `item_embeddings`: (n, d), e.g. the
    frozen public text embeddings. Lists with fewer than 2 items are skipped; NaN if none remain.
    Zero embedding vectors have cosine 0 with everything.
    """
    lists = np.asarray(top_k_lists, np.int64)
    emb = np.asarray(item_embeddings, np.float64)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    unit = emb / np.where(norms > 0, norms, 1.0)
    k = lists.shape[1] if lists.ndim == 2 else 0
    off_diagonal = ~np.eye(k, dtype=bool)
    total, counted = 0.0, 0
    for start in range(0, len(lists), _COSINE_CHUNK):
        block = lists[start : start + _COSINE_CHUNK]
        valid = block >= 0
        vectors = unit[np.where(valid, block, 0)]  # (b, k, d)
        cosine = vectors @ vectors.transpose(0, 2, 1)  # (b, k, k)
        pairs = valid[:, :, None] & valid[:, None, :] & off_diagonal
        n_pairs = pairs.sum(axis=(1, 2))
        keep = n_pairs > 0
        distance = np.where(pairs, 1.0 - cosine, 0.0).sum(axis=(1, 2))
        total += float((distance[keep] / n_pairs[keep]).sum())
        counted += int(keep.sum())
    return total / counted if counted else float("nan")
