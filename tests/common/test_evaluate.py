"""evaluate / evaluate_cold on tiny hand-built splits with known answers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fedrec.common.evaluate import MatrixScorer, RowScorer, evaluate, evaluate_all, evaluate_cold
from fedrec.common.split import NO_ITEM, Split

N_ITEMS = 15


def tiny_split(cold_items=(), cold_targets=(NO_ITEM,) * 3, cold_other=None) -> Split:
    """User 0: train [0, 1], valid 2, test 3.  User 1: train [1], valid 4, test 0.
    User 2: too short, train [5] only, never evaluated on valid/test."""
    return Split(
        num_users=3,
        num_items=N_ITEMS,
        train_sequences=[np.array([0, 1]), np.array([1]), np.array([5])],
        valid_items=np.array([2, 4, NO_ITEM]),
        test_items=np.array([3, 0, NO_ITEM]),
        cold_items=np.array(cold_items, np.int64),
        cold_targets=np.array(cold_targets, np.int64),
        cold_other=cold_other or [np.zeros(0, np.int64)] * 3,
    )


def one_hot(targets, value=1.0) -> np.ndarray:
    scores = np.zeros((len(targets), N_ITEMS), np.float32)
    for user, item in enumerate(targets):
        if item != NO_ITEM:
            scores[user, item] = value
    return scores


class RecordingScorer:
    """Scores with a fixed matrix and remembers the histories it was given."""

    def __init__(self, scores):
        self.scores, self.seen = scores, {}

    def score(self, users, histories):
        self.seen.update({int(u): h.tolist() for u, h in zip(users, histories, strict=True)})
        return self.scores[users]


def test_oracle_scores_perfectly():
    split = tiny_split()
    result = evaluate(MatrixScorer(one_hot(split.test_items)), split, "test")
    assert [result[k] for k in ("hr@10", "ndcg@10", "recall@20", "mrr@10")] == [1.0] * 4
    assert result["users"] == 2


def test_anti_oracle_misses_the_top_10():
    split = tiny_split()
    result = evaluate(MatrixScorer(one_hot(split.test_items, -1.0)), split, "test")
    # user 0 has 12 candidates, user 1 has 13: the target ranks last (11 and 12), inside the top 20
    assert (result["hr@10"], result["ndcg@10"], result["mrr@10"]) == (0.0, 0.0, 0.0)
    assert result["recall@20"] == 1.0


def test_test_stage_excludes_the_validation_item_and_passes_the_history():
    split = tiny_split()
    scores = np.zeros((3, N_ITEMS), np.float32)
    scores[0, [0, 1]] = 3.0  # training items
    scores[0, 2] = 2.0  # validation item
    scores[0, 3] = 1.0  # test item
    scores[1, [4, 0]] = [2.0, 1.0]  # user 1: validation item above test item
    scorer = RecordingScorer(scores)
    # were the validation items not excluded, each test target would rank second (MRR 0.5)
    assert evaluate(scorer, split, "test", batch_size=1)["mrr@10"] == 1.0
    assert scorer.seen == {0: [0, 1, 2], 1: [1, 4]}
    # at the validation stage the validation item is the target, and the test item is no history
    assert evaluate(scorer, split, "valid")["mrr@10"] == 1.0
    assert scorer.seen[0] == [0, 1]


def test_coverage_of_the_top_10_lists():
    split = tiny_split()
    result = evaluate(MatrixScorer(one_hot(split.test_items)), split, "test")
    # user 0 list: 3, then zeros by lowest index without history {0, 1, 2}: 3..12
    # user 1 list: 0, then 2, 3, 5..11 (history {1, 4}).  Union: {0} ∪ 2..12 = 12 items.
    assert result["coverage@10"] == pytest.approx(12 / 15)


TEST_KEYS = {"hr@10", "ndcg@10", "recall@20", "mrr@10", "coverage@10", "users", "ndcg@10_ci95",
             "hr@10_ci95"}
COLD_KEYS = {"cold_hr@10", "cold_ndcg@10", "cold_random_hr@10", "cold_users"}


def test_keys_and_diversity_only_with_embeddings():
    split = tiny_split()
    scorer = MatrixScorer(one_hot(split.test_items))
    assert set(evaluate(scorer, split)) == TEST_KEYS
    emb = np.ones((N_ITEMS, 4))  # all items identical: no diversity
    result = evaluate(scorer, split, item_embeddings=emb)
    assert set(result) == TEST_KEYS | {"diversity@10"}
    assert result["diversity@10"] == pytest.approx(0.0)


def test_a_sample_of_users_and_the_confidence_interval_of_the_mean():
    split = tiny_split()
    scores = one_hot(split.test_items)
    scores[1, [7, 8, 0]] = [3.0, 2.0, 1.0]  # user 1's target (0) ranks third: NDCG 1/log2(4)
    result = evaluate(MatrixScorer(scores), split, "test")
    assert result["ndcg@10"] == pytest.approx(0.75) and result["hr@10"] == 1.0
    # 1.96 × sample std of (1, 0.5) / √2
    assert result["ndcg@10_ci95"] == pytest.approx(1.96 * math.sqrt(0.125) / math.sqrt(2))
    assert result["hr@10_ci95"] == 0.0
    sampled = evaluate(MatrixScorer(scores), split, "test", users=np.array([1, 2]))
    assert sampled["users"] == 1 and sampled["ndcg@10"] == pytest.approx(0.5)
    assert math.isnan(sampled["ndcg@10_ci95"])  # one user: no interval
    # a scorer built for user 1 alone, as its row 0
    rows = RowScorer(MatrixScorer(scores[[1]]), np.array([-1, 0, -1]))
    same = evaluate(rows, split, "test", users=np.array([1]))
    assert {k: v for k, v in same.items() if v == v} == {k: v for k, v in sampled.items()
                                                         if v == v}  # NaN ≠ NaN
    with pytest.raises(ValueError, match=r"users \[0\] are not in"):
        evaluate(rows, split, "test")


def test_no_evaluable_users_gives_nan():
    split = tiny_split()
    no_targets = np.full(3, NO_ITEM)
    empty = dataclasses.replace(split, valid_items=no_targets, test_items=no_targets)
    result = evaluate(MatrixScorer(np.zeros((3, N_ITEMS))), empty)
    assert result["users"] == 0 and np.isnan(result["hr@10"]) and np.isnan(result["coverage@10"])


def test_bad_scorer_output_is_rejected():
    split = tiny_split()
    with pytest.raises(ValueError, match="expected \\(batch, n_items\\)"):
        evaluate(MatrixScorer(np.zeros((3, N_ITEMS - 1))), split)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(MatrixScorer(np.full((3, N_ITEMS), np.nan)), split)
    with pytest.raises(ValueError, match="stage"):
        evaluate(MatrixScorer(np.zeros((3, N_ITEMS))), split, "cold")


def cold_split() -> tuple[Split, np.ndarray]:
    """30 items, 10..29 cold. User 0: cold target 13, other cold item 12. User 1: target 25."""
    split = Split(
        num_users=3,
        num_items=30,
        train_sequences=[np.array([0, 1]), np.array([1]), np.array([5])],
        valid_items=np.full(3, NO_ITEM),
        test_items=np.full(3, NO_ITEM),
        cold_items=np.arange(10, 30),
        cold_targets=np.array([13, 25, NO_ITEM]),
        cold_other=[np.array([12]), np.zeros(0, np.int64), np.zeros(0, np.int64)],
    )
    scores = np.tile(-np.arange(30, dtype=np.float32), (3, 1))  # lower index scores higher
    return split, scores


def test_evaluate_cold_ranks_among_cold_candidates_only():
    split, scores = cold_split()
    scorer = RecordingScorer(scores)
    result = evaluate_cold(scorer, split)
    # user 0: candidates 10, 11, 13..29 (19): target 13 at rank 2.  Warm items 0..9 don't count.
    # user 1: candidates 10..29 (20): target 25 at rank 15, outside the top 10.
    assert result["cold_users"] == 2
    assert result["cold_hr@10"] == pytest.approx((1 + 0) / 2)
    assert result["cold_ndcg@10"] == pytest.approx((1 / math.log2(4) + 0) / 2)
    assert result["cold_random_hr@10"] == pytest.approx((10 / 19 + 10 / 20) / 2)
    assert scorer.seen == {0: [0, 1], 1: [1]}


def test_evaluate_cold_without_cold_items():
    split = tiny_split()
    result = evaluate_cold(MatrixScorer(np.zeros((3, N_ITEMS))), split)
    assert result["cold_users"] == 0
    assert all(np.isnan(result[k]) for k in ("cold_hr@10", "cold_ndcg@10", "cold_random_hr@10"))


def test_evaluate_all_merges_test_cold_and_validation():
    split = tiny_split(cold_items=[14], cold_targets=[14, NO_ITEM, NO_ITEM])
    result = evaluate_all(MatrixScorer(one_hot(split.test_items)), split)
    assert set(result) == TEST_KEYS | COLD_KEYS | {"valid_ndcg@10"}
    assert result["hr@10"] == 1.0 and result["cold_hr@10"] == 1.0 and result["cold_users"] == 1
    # validation: user 0 target 2 ties with 11 other zero-scored candidates (item 3 is above):
    # rank uniform on 1..12.  User 1 target 4: item 0 above, 12 others tied: rank uniform on 1..13.
    user0 = sum(1 / math.log2(r + 2) for r in range(1, 10)) / 12
    user1 = sum(1 / math.log2(r + 2) for r in range(1, 10)) / 13
    assert result["valid_ndcg@10"] == pytest.approx((user0 + user1) / 2)
