"""Ranking without torch: top-k against a full sort, explanations against
`Recommender.explain`, history padding."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.client.ranking import because, pad_history, top_k
from fedrec.common.recommenders import Recommender


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -3.0]), min_size=1, max_size=40),
       st.lists(st.integers(0, 39), max_size=10), st.integers(0, 45))
def test_top_k_is_the_full_sort_without_the_excluded_ties_to_the_lower_id(values, exclude, k):
    scores = np.array(values, np.float32)
    exclude = [e for e in exclude if e < len(scores)]
    before = scores.copy()
    items, top_scores = top_k(scores, np.array(exclude, np.int64), k)
    keep = [i for i in range(len(scores)) if i not in set(exclude)]
    expected = sorted(keep, key=lambda i: (-scores[i], i))[:k]
    assert items.tolist() == expected and items.dtype == np.int64
    assert top_scores.tolist() == scores[expected].tolist()
    assert np.array_equal(scores, before)  # the caller's scores are left alone


class Vectors(Recommender):
    def __init__(self, vectors):
        self.vectors = vectors

    def item_vectors(self):
        return self.vectors


def test_explanations_are_recommender_explains_for_all_items_at_once():
    vectors = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    history = np.array([4, 9, 9, 17, 30, 2])
    items = np.array([1, 5, 40])
    got = because(vectors, items, history, n=3)
    for item, answer in zip(items, got):
        expected = Vectors(vectors).explain(int(item), history, n=3)
        assert [i for i, _ in answer] == [i for i, _ in expected]
        assert np.allclose([w for _, w in answer], [w for _, w in expected], atol=1e-6)
    assert because(vectors, items, np.array([], np.int64)) == [[], [], []]


def test_a_history_is_cut_to_its_newest_items_and_left_padded():
    ids, valid = pad_history(np.array([5, 6, 7]), 5)
    assert ids.tolist() == [0, 0, 5, 6, 7] and valid.tolist() == [False, False, True, True, True]
    ids, valid = pad_history(np.arange(10), 4)
    assert ids.tolist() == [6, 7, 8, 9] and valid.all()
    ids, valid = pad_history(np.array([], np.int64), 3)
    assert not valid.any()
