"""The one evaluation routine: central training, simulation and baselines all call it.

Protocol (docs/DESIGN "Evaluation protocol"): full ranking over the whole catalog, excluding every
item the user interacted with before the target (`Split.history`). Cold items stay in the catalog as
distractors. The cold stage ranks each user's cold target among the cold items only (minus the
user's other cold items). Metrics are expected values under random tie-breaking (`metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedrec.common import metrics
from fedrec.common.split import Split

TOP_K = 10


class Scorer(Protocol):
    """Anything that ranks the catalog for a batch of users."""

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """`users`: (B,) user indices; `histories[b]`: user b's item indices before the target,
        oldest first. Returns (B, n_items) float32 scores, higher is better, no NaN."""
        ...


@dataclass(frozen=True)
class MatrixScorer:
    """A precomputed (n_users, n_items) score matrix; ignores histories."""

    scores: np.ndarray

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        return self.scores[users]


@dataclass(frozen=True)
class RowScorer:
    """`scorer` built for a subset of users: user u is its row `rows[u]` (-1: not in it)."""

    scorer: Scorer
    rows: np.ndarray

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        rows = self.rows[users]
        if (rows < 0).any():
            raise ValueError(f"users {users[rows < 0][:5].tolist()} are not in this scorer's "
                             "subset")
        return self.scorer.score(rows, histories)


def history_mask(histories: list[np.ndarray], num_items: int) -> np.ndarray:
    """(B, num_items) bool, True where the item is in that row's history. One scatter."""
    lengths = [len(h) for h in histories]
    rows = np.repeat(np.arange(len(histories)), lengths)
    cols = np.concatenate(histories).astype(np.int64) if sum(lengths) else np.zeros(0, np.int64)
    mask = np.zeros((len(histories), num_items), bool)
    mask[rows, cols] = True
    return mask


def _batch_scores(scorer: Scorer, users: np.ndarray, histories: list[np.ndarray], n: int):
    scores = np.asarray(scorer.score(users, histories))
    if scores.shape != (len(users), n):
        raise ValueError(
            f"scorer {type(scorer).__name__} returned shape {scores.shape}, "
            f"expected (batch, n_items) = ({len(users)}, {n})"
        )
    if np.isnan(scores).any():
        raise ValueError(f"scorer {type(scorer).__name__} returned NaN scores")
    return scores


def evaluate(
    scorer: Scorer,
    split: Split,
    stage: str = "test",
    item_embeddings: np.ndarray | None = None,
    batch_size: int = 1024,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """Full-ranking metrics on the `stage` ('valid' or 'test') targets of `split`, over every
    user with such a target, or only those among `users` (a sample of user indices).

    Keys: hr@10, ndcg@10, recall@20, mrr@10 (means over users), ndcg@10_ci95 and hr@10_ci95
    (half-widths of the normal 95 % confidence intervals of those means, NaN below 2 users),
    coverage@10, diversity@10 (only with `item_embeddings`, (n_items, d)), users. Metrics are
    NaN when no user has a target.
    """
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got '{stage}' (cold: evaluate_cold)")
    evaluated = _among(split.eval_users(stage), users)
    targets = split.targets(stage)
    sums = {"hr@10": 0.0, "ndcg@10": 0.0, "recall@20": 0.0, "mrr@10": 0.0}
    squares = {name: 0.0 for name in CI_METRICS}
    lists = []
    for start in range(0, len(evaluated), batch_size):
        batch = evaluated[start : start + batch_size]
        histories = split.histories(batch, stage)
        scores = _batch_scores(scorer, batch, histories, split.num_items)
        exclude = history_mask(histories, split.num_items)
        greater, ties = metrics.target_ranks(scores, targets[batch], exclude)
        for name, values in metrics.rank_metrics(greater, ties).items():
            sums[name] += values.sum()
            if name in squares:
                squares[name] += np.square(values).sum()
        lists.append(metrics.top_k(scores, exclude, TOP_K))

    n_users = len(evaluated)
    if n_users == 0:
        result = {name: float("nan") for name in (*sums, "coverage@10")}
        all_lists = np.zeros((0, TOP_K), np.int64)
    else:
        result = {name: float(total / n_users) for name, total in sums.items()}
        all_lists = np.concatenate(lists)
        result["coverage@10"] = metrics.coverage(all_lists, split.num_items)
    for name in CI_METRICS:
        result[f"{name}_ci95"] = _ci95(sums[name], squares[name], n_users)
    if item_embeddings is not None:
        result["diversity@10"] = metrics.intra_list_diversity(all_lists, item_embeddings)
    result["users"] = n_users
    return result


CI_METRICS = ("ndcg@10", "hr@10")  # the metrics reported with a confidence interval


def _among(candidates: np.ndarray, users: np.ndarray | None) -> np.ndarray:
    """`candidates` (sorted user indices), or those of them in `users`."""
    return candidates if users is None else candidates[np.isin(candidates, users)]


def _ci95(total: float, squares: float, n: int) -> float:
    """Half-width of the normal 95 % confidence interval of a mean of n values, from their sum
    and sum of squares (sample standard deviation)."""
    if n < 2:
        return float("nan")
    variance = max(0.0, (squares - total * total / n) / (n - 1))
    return float(1.96 * np.sqrt(variance / n))


def evaluate_cold(scorer: Scorer, split: Split, batch_size: int = 1024,
                  users: np.ndarray | None = None) -> dict[str, float]:
    """Rank each user's cold target among the cold items, minus the user's other cold items
    (every user with a cold target, or those among `users`).

    Keys: cold_hr@10, cold_ndcg@10, cold_random_hr@10 (expected HR@10 of a random ranking of the
    same candidates), cold_users. NaN metrics and 0 users when there are no cold targets.
    """
    users = _among(split.eval_users("cold"), users)
    targets = split.targets("cold")
    if len(split.cold_items) == 0 or len(users) == 0:
        nan = float("nan")
        return {"cold_hr@10": nan, "cold_ndcg@10": nan, "cold_random_hr@10": nan, "cold_users": 0}
    not_cold = np.ones(split.num_items, bool)
    not_cold[split.cold_items] = False
    hr = ndcg_sum = random_hr = 0.0
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = _batch_scores(scorer, batch, split.histories(batch, "cold"), split.num_items)
        exclude = history_mask([split.cold_other[u] for u in batch], split.num_items) | not_cold
        exclude[np.arange(len(batch)), targets[batch]] = False
        greater, ties = metrics.target_ranks(scores, targets[batch], exclude)
        hr += metrics.hit_rate(greater, ties, TOP_K).sum()
        ndcg_sum += metrics.ndcg(greater, ties, TOP_K).sum()
        random_hr += metrics.random_hit_rate((~exclude).sum(axis=1), TOP_K).sum()
    n = len(users)
    return {
        "cold_hr@10": float(hr / n),
        "cold_ndcg@10": float(ndcg_sum / n),
        "cold_random_hr@10": float(random_hr / n),
        "cold_users": n,
    }


def evaluate_all(
    scorer: Scorer, split: Split, item_embeddings: np.ndarray | None = None,
    users: np.ndarray | None = None,
) -> dict[str, float]:
    """Test metrics (`evaluate`), cold metrics (`evaluate_cold`) and valid_ndcg@10, in one dict;
    over every user, or only `users`."""
    result = evaluate(scorer, split, "test", item_embeddings, users=users)
    result.update(evaluate_cold(scorer, split, users=users))
    result["valid_ndcg@10"] = evaluate(scorer, split, "valid", users=users)["ndcg@10"]
    return result
