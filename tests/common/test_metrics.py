"""Metrics against hand-computed examples, plus a few properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedrec.common.metrics import (
    coverage,
    hit_rate,
    intra_list_diversity,
    mrr,
    ndcg,
    random_hit_rate,
    recall,
    target_ranks,
    top_k,
)


def test_target_ranks_counts_greater_and_other_ties():
    scores = np.array([[0.9, 0.5, 0.7, 0.1, 0.5]])
    greater, ties = target_ranks(scores, np.array([1]), None)
    assert greater.tolist() == [2]  # 0.9 and 0.7
    assert ties.tolist() == [1]  # item 4; the target is not its own tie


def test_excluded_items_that_outscore_the_target_do_not_count():
    scores = np.array([[0.9, 0.5, 0.7, 0.1, 0.5]])
    exclude = np.array([[True, False, False, False, True]])
    greater, ties = target_ranks(scores, np.array([1]), exclude)
    assert (greater.tolist(), ties.tolist()) == ([1], [0])
    assert hit_rate(greater, ties, 1).tolist() == [0.0]
    assert mrr(greater, ties, 10).tolist() == [0.5]


def test_user_with_everything_but_the_target_excluded_ranks_first():
    scores = np.array([[5.0, 4.0, 0.0, 3.0]])
    exclude = np.array([[True, True, False, True]])
    greater, ties = target_ranks(scores, np.array([2]), exclude)
    assert (greater.tolist(), ties.tolist()) == ([0], [0])
    assert hit_rate(greater, ties, 1)[0] == 1.0
    assert ndcg(greater, ties, 1)[0] == 1.0


def test_target_marked_excluded_is_still_ranked():
    scores = np.array([[0.2, 0.9, 0.1]])
    exclude = np.array([[False, True, False]])  # e.g. a repeat consumption of item 1
    greater, ties = target_ranks(scores, np.array([1]), exclude)
    assert (greater.tolist(), ties.tolist()) == ([0], [0])


def test_ties_straddling_the_cutoff_give_expected_values():
    # 8 items above the target, target tied with 3 others: rank uniform on 8, 9, 10, 11.
    scores = np.array([[1.0] * 8 + [0.5] * 4 + [0.0] * 3])
    greater, ties = target_ranks(scores, np.array([9]), None)
    assert (greater.tolist(), ties.tolist()) == ([8], [3])
    assert hit_rate(greater, ties, 10)[0] == pytest.approx(2 / 4)
    assert recall(greater, ties, 10)[0] == pytest.approx(2 / 4)
    assert ndcg(greater, ties, 10)[0] == pytest.approx((1 / math.log2(10) + 1 / math.log2(11)) / 4)
    assert mrr(greater, ties, 10)[0] == pytest.approx((1 / 9 + 1 / 10) / 4)
    assert hit_rate(greater, ties, 20)[0] == 1.0
    assert hit_rate(greater, ties, 8)[0] == 0.0


def test_constant_scorer_gets_the_random_guess_value():
    n, k = 50, 10
    scores = np.zeros((1, n))
    greater, ties = target_ranks(scores, np.array([7]), None)
    assert hit_rate(greater, ties, k)[0] == pytest.approx(10 / 50)
    expected_ndcg = sum(1 / math.log2(r + 2) for r in range(10)) / 50
    assert ndcg(greater, ties, k)[0] == pytest.approx(expected_ndcg)
    assert mrr(greater, ties, k)[0] == pytest.approx(sum(1 / (r + 1) for r in range(10)) / 50)
    # with 20 items excluded, 30 candidates remain
    exclude = np.zeros((1, n), bool)
    exclude[0, 20:40] = True
    greater, ties = target_ranks(scores, np.array([7]), exclude)
    assert hit_rate(greater, ties, k)[0] == pytest.approx(10 / 30)
    assert hit_rate(greater, ties, k)[0] == pytest.approx(random_hit_rate(np.array([30]), k)[0])


def test_random_hit_rate():
    assert random_hit_rate(np.array([5, 10, 20]), 10).tolist() == [1.0, 1.0, 0.5]
    assert np.isnan(random_hit_rate(np.array([0]), 10)[0])


@pytest.mark.parametrize("metric", [hit_rate, ndcg, mrr, recall])
def test_k_must_be_positive(metric):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metric(np.array([0]), np.array([0]), 0)


def test_top_k_orders_ties_by_lower_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.5]])
    assert top_k(scores, None, 3).tolist() == [[1, 0, 2]]


def test_top_k_never_returns_excluded_items_and_pads():
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.5]])
    exclude = np.array([[True, False, False, False, False]])
    assert top_k(scores, exclude, 3).tolist() == [[1, 2, 4]]
    assert top_k(scores, exclude, 6).tolist() == [[1, 2, 4, 3, -1, -1]]


def test_top_k_keeps_minus_infinity_candidates_apart_from_excluded_items():
    scores = np.array([[1.0, -np.inf, 2.0], [0.0, 0.0, 0.0]])
    exclude = np.array([[True, False, False], [True, True, True]])
    assert top_k(scores, exclude, 3).tolist() == [[2, 1, -1], [-1, -1, -1]]


def _reference_top_k(scores, exclude, k):
    out = []
    for row, ex in zip(scores, exclude, strict=True):
        ranked = sorted((i for i in range(len(row)) if not ex[i]), key=lambda i: (-row[i], i))[:k]
        out.append(ranked + [-1] * (k - len(ranked)))
    return out


@settings(max_examples=200, deadline=None)
@given(
    scores=hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.integers(1, 12)),
        elements=st.integers(-3, 3).map(float),
    ),
    data=st.data(),
    k=st.integers(1, 15),
)
def test_top_k_matches_a_plain_sort(scores, data, k):
    exclude = data.draw(hnp.arrays(bool, scores.shape))
    assert top_k(scores, exclude, k).tolist() == _reference_top_k(scores, exclude, k)


@settings(max_examples=200, deadline=None)
@given(greater=st.integers(0, 30), ties=st.integers(0, 30), k=st.integers(1, 40))
def test_closed_forms_equal_averaging_over_every_tie_order(greater, ties, k):
    ranks = range(greater, greater + ties + 1)
    g, t = np.array([greater]), np.array([ties])
    assert hit_rate(g, t, k)[0] == pytest.approx(np.mean([r < k for r in ranks]))
    assert ndcg(g, t, k)[0] == pytest.approx(np.mean([(r < k) / math.log2(r + 2) for r in ranks]))
    assert mrr(g, t, k)[0] == pytest.approx(np.mean([(r < k) / (r + 1) for r in ranks]))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 30), data=st.data())
def test_metrics_bounded_monotone_and_permutation_invariant_without_ties(n, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    scores = rng.permutation(n).astype(float)[None, :]  # distinct: no ties
    exclude = data.draw(hnp.arrays(bool, (1, n)))
    target = np.array([data.draw(st.integers(0, n - 1))])
    greater, ties = target_ranks(scores, target, exclude)
    perm = rng.permutation(n)  # new column j holds old item perm[j]
    inverse = np.argsort(perm)
    permuted = target_ranks(scores[:, perm], inverse[target], exclude[:, perm])
    assert (permuted[0].tolist(), permuted[1].tolist()) == (greater.tolist(), ties.tolist())
    for metric in (hit_rate, ndcg, mrr, recall):
        values = [metric(greater, ties, k)[0] for k in range(1, n + 2)]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert values == sorted(values)


def test_coverage_counts_distinct_items_and_ignores_padding():
    lists = np.array([[0, 1, -1], [1, 2, -1]])
    assert coverage(lists, 5) == pytest.approx(3 / 5)


def test_intra_list_diversity_on_a_known_example():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [-1.0, 0.0]])
    # list 1 pairs: (0,1) -> 1, (0,2) -> 0, (1,2) -> 1: mean 2/3.  list 2: (0,3) -> 2.
    # list 3 has one item: skipped.
    lists = np.array([[0, 1, 2], [0, 3, -1], [1, -1, -1]])
    assert intra_list_diversity(lists, emb) == pytest.approx((2 / 3 + 2) / 2)
    assert np.isnan(intra_list_diversity(np.array([[1, -1]]), emb))
