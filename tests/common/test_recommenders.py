"""One contract every model passes, on data with a known right answer: four item clusters,
each user consumes items of one cluster only, so the next item is in the user's cluster."""

import numpy as np
import pytest

from fedrec.common.data.dataset import Dataset
from fedrec.common.evaluate import evaluate
from fedrec.common.model import ModelConfig
from fedrec.common.recommenders import (
    BPRMF,
    BPRConfig,
    FedRecCentral,
    Popular,
    load_recommender,
)
from fedrec.common.split import leave_one_out
from fedrec.common.train import TrainConfig

CLUSTERS, PER_CLUSTER, USERS = 4, 15, 120


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(0)
    n_items = CLUSTERS * PER_CLUSTER
    centers = rng.normal(size=(CLUSTERS, 32))
    emb = np.repeat(centers, PER_CLUSTER, axis=0) + 0.3 * rng.normal(size=(n_items, 32))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    users, items = [], []
    for u in range(USERS):
        c = u % CLUSTERS
        chosen = rng.choice(PER_CLUSTER, 9, replace=False) + c * PER_CLUSTER
        users += [u] * 9
        items += chosen.tolist()
    data = Dataset(
        name="clusters",
        item_ids=np.array([str(i) for i in range(n_items)]),
        item_texts=[f"item {i}" for i in range(n_items)],
        user_ids=np.array([str(u) for u in range(USERS)]),
        users=np.array(users),
        items=np.array(items),
        timestamps=np.arange(len(users)),
    )
    return leave_one_out(data, cold_fraction=0.0), emb


MODELS = {
    "popular": lambda: Popular(),
    "bpr": lambda: BPRMF(BPRConfig(dim=16, epochs=40, lr=2e-2, eval_every=10)),
    "fedrec": lambda: FedRecCentral(
        ModelConfig(dim=16, num_experts=2, max_history=8, num_layers=1, dropout=0.0),
        TrainConfig(epochs=30, batch_size=32, lr=5e-3),
        eval_every=10,
    ),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, clustered):
    split, emb = clustered
    return request.param, MODELS[request.param]().fit(split, emb), split, emb


def test_scores_have_catalog_shape(fitted):
    _, model, split, _ = fitted
    users = np.array([0, 1, 2])
    scores = model.score(users, split.histories(users, "test"))
    assert scores.shape == (3, split.num_items)
    assert np.isfinite(scores).all()


def test_recommend_excludes_history_and_is_sorted(fitted):
    _, model, split, _ = fitted
    history = split.history(5, "test")
    recs = model.recommend(5, history, k=10)
    assert len(recs) == 10
    assert not set(i for i, _ in recs) & set(history.tolist())
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)


def test_save_load_round_trip_gives_identical_scores(fitted, tmp_path):
    _, model, split, emb = fitted
    model.save(tmp_path)
    again = load_recommender(tmp_path, emb)
    users = np.arange(10)
    hist = split.histories(users, "test")
    np.testing.assert_allclose(model.score(users, hist), again.score(users, hist), rtol=1e-6)


def test_learned_models_find_the_users_cluster(fitted):
    name, model, split, emb = fitted
    hr = evaluate(model, split, "test")["hr@10"]
    if name == "popular":
        assert hr < 0.5
    else:  # 15 items per cluster, 8 seen: the target is among the 7 unseen of the cluster
        assert hr > 0.8, (name, hr)


def test_explanations_point_to_the_same_cluster(fitted):
    name, model, split, _ = fitted
    if name == "popular":
        assert model.explain(3, split.history(0, "test")) == []
        return
    history = split.history(0, "test")  # user 0 is in cluster 0
    item, _ = model.recommend(0, history, k=1)[0]
    because = model.explain(item, history, n=2)
    assert len(because) == 2
    assert all(j in history for j, _ in because)


def test_bpr_negatives_are_never_items_the_user_has_seen():
    import scipy.sparse as sp

    from fedrec.common.recommenders import unseen_items

    rng = np.random.default_rng(0)
    dense = (rng.random((50, 12)) < 0.7).astype(np.float32)  # long histories: many redraws
    dense[np.arange(50), np.arange(50) % 12] = 0.0  # ... but every user has an unseen item
    dense[0, :] = 1.0  # except user 0, who has seen everything and keeps its last draw
    seen = sp.csr_matrix(dense)
    users = np.repeat(np.arange(1, 50), 40)
    items = unseen_items(seen, users, rng)
    assert not np.asarray(seen[users, items]).ravel().any()
    # uniform over the unseen items: each of user 1's unseen items is drawn about equally
    counts = np.bincount(items[users == 1], minlength=12)[np.asarray(seen[1].todense()).ravel() == 0]
    assert counts.min() > 0
    assert unseen_items(seen, np.zeros(3, np.int64), rng).shape == (3,)
