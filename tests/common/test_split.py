import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.common.data.dataset import Dataset
from fedrec.common.split import NO_ITEM, leave_one_out


def make_dataset(users, items, timestamps, num_items=10, reconsumption="first"):
    num_users = max(users) + 1
    return Dataset(
        name="t",
        item_ids=np.array([f"i{i}" for i in range(num_items)]),
        item_texts=[f"item {i}" for i in range(num_items)],
        user_ids=np.array([f"u{u}" for u in range(num_users)]),
        users=np.array(users),
        items=np.array(items),
        timestamps=np.array(timestamps, dtype=np.int64),
        reconsumption=reconsumption,
    )


def test_last_is_test_previous_is_valid_rest_is_train():
    # user 0: items 3,1,4,5 at times 40,10,30,20 -> chronological 1,5,4,3
    data = make_dataset([0, 0, 0, 0], [3, 1, 4, 5], [40, 10, 30, 20])
    split = leave_one_out(data, cold_fraction=0.0)
    assert split.test_items[0] == 3
    assert split.valid_items[0] == 4
    assert split.train_sequences[0].tolist() == [1, 5]
    assert split.history(0, "test").tolist() == [1, 5, 4]
    assert split.history(0, "valid").tolist() == [1, 5]


def test_equal_timestamps_keep_file_order():
    data = make_dataset([0, 0, 0, 0], [7, 2, 9, 1], [5, 5, 5, 5])
    split = leave_one_out(data, cold_fraction=0.0)
    assert split.train_sequences[0].tolist() == [7, 2]
    assert (split.valid_items[0], split.test_items[0]) == (9, 1)


def test_users_with_fewer_than_three_interactions_are_not_evaluated():
    data = make_dataset([0, 0, 1, 1, 1], [1, 2, 3, 4, 5], [1, 2, 1, 2, 3])
    split = leave_one_out(data, cold_fraction=0.0)
    assert split.test_items[0] == NO_ITEM and split.train_sequences[0].tolist() == [1, 2]
    assert split.eval_users("test").tolist() == [1]


def test_cold_items_never_in_training_and_split_is_deterministic():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 12)
    items = np.concatenate([rng.choice(100, 12, replace=False) for _ in range(50)])
    data = make_dataset(users.tolist(), items.tolist(), list(range(len(users))), num_items=100)
    a = leave_one_out(data, cold_fraction=0.2, seed=3)
    b = leave_one_out(data, cold_fraction=0.2, seed=3)
    assert a.cold_items.tolist() == b.cold_items.tolist()
    assert len(a.cold_items) == round(0.2 * len(np.unique(items)))
    train_items = np.concatenate(a.train_sequences)
    assert not np.isin(train_items, a.cold_items).any()
    assert not np.isin(a.test_items[a.test_items >= 0], a.cold_items).any()
    cold_users = a.eval_users("cold")
    assert np.isin(a.cold_targets[cold_users], a.cold_items).all()
    for u in range(50):  # no test item in training, and time order respected
        assert a.test_items[u] not in a.train_sequences[u]
        user_items = items[users == u]
        warm = user_items[~np.isin(user_items, a.cold_items)]
        assert a.train_sequences[u].tolist() + [a.valid_items[u], a.test_items[u]] == warm.tolist()


def test_train_matrix_and_popularity_use_training_data_only():
    data = make_dataset([0, 0, 0, 1, 1, 1], [1, 2, 3, 1, 4, 5], [1, 2, 3, 1, 2, 3])
    split = leave_one_out(data, cold_fraction=0.0)
    assert split.item_popularity().tolist() == [0, 2, 0, 0, 0, 0, 0, 0, 0, 0]
    assert split.train_matrix().toarray()[:, 1].tolist() == [1, 1]


def test_cold_fraction_out_of_range():
    data = make_dataset([0, 0, 0], [1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="cold_fraction"):
        leave_one_out(data, cold_fraction=1.0)


def test_doubled_rows_split_as_the_original():
    """Issue 15: with every row doubled, the validation item was the test item of every user
    (and NDCG@10 more than doubled)."""
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(30), 8)
    items = np.concatenate([rng.choice(40, 8, replace=False) for _ in range(30)])
    times = rng.integers(0, 5, len(users))  # many equal timestamps: file order decides
    data = make_dataset(users.tolist(), items.tolist(), times.tolist(), num_items=40)
    twice = (np.repeat(x, 2).tolist() for x in (users, items, times))
    doubled = make_dataset(*twice, num_items=40)
    a, b = leave_one_out(data, 0.2, seed=1), leave_one_out(doubled, 0.2, seed=1)
    evaluated = b.eval_users("test")
    assert len(evaluated) > 20
    assert (b.valid_items[evaluated] != b.test_items[evaluated]).all()
    for name in ("valid_items", "test_items", "cold_items", "cold_targets"):
        assert getattr(a, name).tolist() == getattr(b, name).tolist(), name
    assert [s.tolist() for s in a.train_sequences] == [s.tolist() for s in b.train_sequences]


def test_rewatch_is_held_out_only_when_the_rule_keeps_it():
    # user 0 watches 1, 2, 3, 4, then 1 again
    users, items, times = [0] * 5, [1, 2, 3, 4, 1], [1, 2, 3, 4, 5]
    first = leave_one_out(make_dataset(users, items, times), cold_fraction=0.0)
    assert first.train_sequences[0].tolist() == [1, 2]
    assert (first.valid_items[0], first.test_items[0]) == (3, 4)
    keep = leave_one_out(make_dataset(users, items, times, reconsumption="keep"), 0.0)
    assert keep.train_sequences[0].tolist() == [1, 2, 3]
    assert (keep.valid_items[0], keep.test_items[0]) == (4, 1)  # 1 is also a training item
    exact = make_dataset([0] * 3, [1, 2, 2], [1, 2, 2], reconsumption="keep")
    split = leave_one_out(exact, cold_fraction=0.0)  # an exact duplicate is dropped either way
    assert split.test_items[0] == NO_ITEM and split.train_sequences[0].tolist() == [1, 2]


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 7), st.integers(0, 6)), min_size=1, max_size=60
    ),
    cold_fraction=st.sampled_from([0.0, 0.3]),
)
def test_no_held_out_item_is_a_training_item_without_reconsumption(rows, cold_fraction):
    users, items, times = (list(column) for column in zip(*rows, strict=True))
    split = leave_one_out(make_dataset(users, items, times, num_items=8), cold_fraction, seed=0)
    for u in range(split.num_users):
        train = split.train_sequences[u].tolist()
        assert len(train) == len(set(train))
        for target in (split.valid_items[u], split.test_items[u]):
            assert target == NO_ITEM or target not in train
        assert split.valid_items[u] == NO_ITEM or split.valid_items[u] != split.test_items[u]
    kept = sum(len(s) for s in split.train_sequences) + 2 * len(split.eval_users("test"))
    assert kept <= len({(u, i) for u, i, _ in rows})
