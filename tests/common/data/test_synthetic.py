import numpy as np
import pytest

from fedrec.common.data import synthetic
from fedrec.common.data.synthetic_text import LABELS, PROTAGONISTS, TOPIC_NAMES
from fedrec.common.errors import ConfigError

ARRAYS = ("item_ids", "user_ids", "users", "items", "timestamps", "ratings")


@pytest.fixture(scope="module")
def default():
    """The generator at its own defaults (1000 x 1000): statistics are checked at this size."""
    return synthetic.generate()


def _user_slices(dataset):
    starts = np.r_[0, np.cumsum(np.bincount(dataset.users, minlength=dataset.num_users))]
    return [slice(starts[u], starts[u + 1]) for u in range(dataset.num_users)]


def test_same_seed_gives_identical_data(default):
    again = synthetic.generate()
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(default, name), getattr(again, name))
    assert default.item_texts == again.item_texts
    assert default.item_titles == again.item_titles
    assert default.profiles.equals(again.profiles)


def test_different_seed_differs(default):
    other = synthetic.generate(seed=1)
    assert other.item_texts != default.item_texts
    assert not np.array_equal(other.items[:500], default.items[:500])
    assert not other.profiles.equals(default.profiles)


@pytest.mark.parametrize("num_users", [100, 20_000])
def test_sizes(num_users):
    dataset = synthetic.generate(num_users=num_users, interactions_per_user=20 + num_users % 7)
    assert dataset.num_users == num_users == len(dataset.profiles)
    assert dataset.num_items == 1000
    per_user = np.bincount(dataset.users, minlength=num_users)
    assert per_user.min() >= 5 and per_user.max() <= 500
    assert abs(np.median(per_user) - (20 + num_users % 7)) <= 3


def test_default_shape_and_types(default):
    assert default.name == "synthetic"
    assert (default.num_users, default.num_items) == (1000, 1000)
    assert default.user_ids[0] == "u000001" and default.item_ids[-1] == "i01000"
    built_in = synthetic.default()
    assert (built_in.num_users, built_in.num_items) == (600, 500)
    assert built_in.name == "synthetic"
    assert default.users.dtype == default.items.dtype == default.timestamps.dtype == np.int64
    assert default.ratings.dtype == np.float32
    assert set(np.unique(default.ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 2019 <= np.datetime64(int(default.timestamps.min()), "s").astype(object).year
    assert np.datetime64(int(default.timestamps.max()), "s").astype(object).year <= 2024


def test_profile_columns(default):
    profiles = default.profiles
    assert list(profiles.columns) == ["name", "email", "zip", "age", "gender", "occupation"]
    assert profiles["zip"].str.fullmatch(r"\d{5}").all()
    assert profiles["zip"].str[:3].nunique() <= 20  # a few regions: structure to strip
    assert profiles["age"].between(13, 80).all()
    assert set(profiles["gender"]) == {"F", "M", "X"}
    assert (profiles["gender"] == "X").mean() < 0.1
    assert profiles["email"].str.fullmatch(r"[a-z0-9._]+@[a-z.]+\.(com|org)").all()
    assert profiles["occupation"].nunique() == 21
    last_names = profiles["name"].str.split().str[-1].str.lower().str.replace("ü", "ue")
    assert all(last in email for last, email in zip(last_names, profiles["email"], strict=True))


def test_each_user_item_pair_at_most_once(default):
    pairs = default.users * default.num_items + default.items
    assert len(np.unique(pairs)) == len(pairs)


def test_interactions_grouped_by_user_and_time_ordered(default):
    assert (np.diff(default.users) >= 0).all()
    for user_slice in _user_slices(default):
        assert (np.diff(default.timestamps[user_slice]) >= 0).all()


def test_popularity_skew(default):
    per_item = np.sort(np.bincount(default.items, minlength=default.num_items))[::-1]
    top_share = per_item[: default.num_items // 10].sum() / per_item.sum()
    assert top_share >= 0.40


def test_later_items_share_topics_with_earlier_ones(default):
    """A user-topic model is learnable: first and second halves of a timeline agree on topics."""
    mixtures = synthetic.item_topic_mixtures(default.num_items, seed=0)
    first, second = [], []
    for user_slice in _user_slices(default):
        items = default.items[user_slice]
        half = len(items) // 2
        first.append(mixtures[items[:half]].sum(axis=0))
        second.append(mixtures[items[half:]].sum(axis=0))
    first, second = (
        np.array(x) / np.linalg.norm(x, axis=1, keepdims=True) for x in (first, second)
    )
    same_user = (first * second).sum(axis=1).mean()
    shuffled = np.random.default_rng(0).permutation(default.num_users)
    random_pair = (first * second[shuffled]).sum(axis=1).mean()
    assert same_user > 2 * random_pair


def test_topic_aware_ranking_beats_popularity(default):
    """Leave-one-out HR@10: popularity × the user's recent topic profile vs popularity alone."""
    mixtures = synthetic.item_topic_mixtures(default.num_items, seed=0)
    slices = _user_slices(default)
    popularity = np.zeros(default.num_items)
    for user_slice in slices:
        np.add.at(popularity, default.items[user_slice][:-1], 1)
    hits = {"popularity": 0, "topic": 0}
    for user_slice in slices:
        history, target = default.items[user_slice][:-1], default.items[user_slice][-1]
        recency = 0.93 ** np.arange(len(history))[::-1]
        profile = recency @ mixtures[history]
        scores = {"popularity": popularity, "topic": popularity * (mixtures @ profile)}
        for name, score in scores.items():
            score = score.copy()
            score[history] = -np.inf
            hits[name] += target in np.argsort(-score)[:10]
    assert hits["topic"] > 1.5 * hits["popularity"]


def test_ratings_rise_with_affinity(default):
    mixtures = synthetic.item_topic_mixtures(default.num_items, seed=0)
    main_topic = np.array(
        [
            np.bincount(mixtures[default.items[s]].argmax(axis=1)).argmax()
            for s in _user_slices(default)
        ]
    )
    on_topic = mixtures[default.items, main_topic[default.users]] > 0.5
    assert default.ratings[on_topic].mean() > default.ratings[~on_topic].mean() + 0.5


def test_texts_carry_their_topics(default):
    mixtures = synthetic.item_topic_mixtures(default.num_items, seed=0)
    for text, mixture in zip(default.item_texts, mixtures, strict=True):
        topics = [TOPIC_NAMES[k] for k in np.argsort(-mixture) if mixture[k] > 0]
        assert any(label in text for label in LABELS[topics[0]])
        for topic in topics[1:]:
            assert any(person in text for person in PROTAGONISTS[topic])


def test_titles_mostly_unique(default):
    assert len(set(default.item_titles)) == default.num_items  # repeats become sequels
    assert len({title.removesuffix(" II") for title in default.item_titles}) > 0.9 * 1000
    assert all(
        text.startswith(title)
        for title, text in zip(default.item_titles, default.item_texts, strict=True)
    )
    descriptions = {text.split(". ", 1)[1] for text in default.item_texts}
    assert len(descriptions) > 0.95 * default.num_items


def test_small_catalog_caps_interactions():
    dataset = synthetic.generate(num_users=50, num_items=40, interactions_per_user=100)
    assert np.bincount(dataset.users).max() <= 20


@pytest.mark.parametrize(
    "kwargs", [{"num_users": 0}, {"num_items": 5}, {"interactions_per_user": 0}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        synthetic.generate(**kwargs)
