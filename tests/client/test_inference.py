"""On-device inference: the federation's own scores, exclusion, and caches that recompute only
when the head, the catalog or the data change."""

import numpy as np
import pytest
import torch

from fedrec.client import personal
from fedrec.client.inference import OnDeviceRecommender
from fedrec.client.store import DeviceStore, NoHead
from fedrec.common.config import FederationConfig
from fedrec.common.hparams import ModelConfig
from fedrec.common.model import FedRecModel, score_catalog

MODEL = ModelConfig(input_dim=24, dim=8, num_experts=2, max_history=6, num_layers=1,
                    num_heads=2, dropout=0.2)
HISTORY = [3, 17, 5, 3, 40, 22, 9, 31, 12]  # longer than max_history, with a repeat


def head(seed=0):
    torch.manual_seed(seed)
    return FedRecModel(MODEL, 1).shared_arrays()


@pytest.fixture
def store(tmp_path):
    s = DeviceStore(tmp_path / "device.sqlite", fsync=False)
    s.set_catalog(np.random.default_rng(0).normal(size=(60, 24)).astype(np.float32), "cat")
    s.save_head(3, head(), vars(MODEL))
    s.add_interactions(HISTORY, np.arange(len(HISTORY), dtype=float))
    yield s
    s.close()


class Calls:
    """Counts calls of a function while passing them through."""

    def __init__(self, monkeypatch, owner, name):
        self.n, real = 0, getattr(owner, name)

        def counted(*args, **kwargs):
            self.n += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


def test_scores_are_the_federations_for_this_device(store):
    fed = FederationConfig(reconstruct_steps=7, reconstruct_lr=0.1)
    got = OnDeviceRecommender(store, fed).scores()
    embeddings = torch.as_tensor(store.catalog())
    # the simulation's path: reconstruct against the head, then score the catalog
    model = personal.personalized_model(MODEL, embeddings, head(), [None], [np.array(HISTORY)],
                                        fed.reconstruct_steps, fed.reconstruct_lr)
    expected = score_catalog(model, embeddings, np.zeros(1, np.int64), [np.array(HISTORY)])[0]
    assert np.allclose(got, expected.numpy(), atol=1e-5)
    assert model.personal.vectors.weight.abs().sum() > 0  # reconstruction did something


def test_a_device_without_history_scores_with_its_personal_vector_alone(tmp_path, store):
    store.forget_all()
    got = OnDeviceRecommender(store).scores()
    embeddings = torch.as_tensor(store.catalog())
    model = personal.personalized_model(MODEL, embeddings, head(), [None], [np.array([])], 5,
                                        0.05)
    expected = score_catalog(model, embeddings, np.zeros(1, np.int64), [np.array([])])[0]
    assert np.allclose(got, expected.numpy(), atol=1e-6)


def test_recommendations_exclude_what_was_consumed_and_explain_from_the_history(store):
    ranked = OnDeviceRecommender(store).recommend(k=10, explain=True)
    scores = OnDeviceRecommender(store).scores()
    assert not set(ranked.items.tolist()) & set(HISTORY)
    candidates = [i for i in range(60) if i not in HISTORY]
    assert ranked.items.tolist() == sorted(candidates, key=lambda i: (-scores[i], i))[:10]
    assert np.allclose(ranked.scores, scores[ranked.items])
    assert all(len(b) == 3 and {i for i, _ in b} <= set(HISTORY) for b in ranked.because)
    assert OnDeviceRecommender(store).recommend(k=10, explain=False).because is None


def test_item_vectors_are_computed_once_per_head(store, monkeypatch):
    computed = Calls(monkeypatch, OnDeviceRecommender, "_compute_item_vectors")
    rec = OnDeviceRecommender(store)
    first = rec.recommend(5).items
    rec.recommend(5)
    OnDeviceRecommender(DeviceStore(store.path)).recommend(5)  # another process: from the store
    assert computed.n == 1
    store.save_head(4, head(seed=1), vars(MODEL))
    assert rec.recommend(5).items.tolist() != first.tolist()  # the new head's vectors
    assert computed.n == 2


def test_the_personal_vector_is_reconstructed_only_when_data_or_head_change(store, monkeypatch):
    reconstructed = Calls(monkeypatch, personal, "reconstruct")
    rec = OnDeviceRecommender(store)
    rec.recommend(5)
    rec.recommend(5)
    OnDeviceRecommender(DeviceStore(store.path)).recommend(5)
    assert reconstructed.n == 1
    store.add_interaction(50, 100.0)
    assert 50 not in rec.recommend(5).items
    assert reconstructed.n == 2
    store.save_head(4, head(seed=1), vars(MODEL))
    rec.recommend(5)
    assert reconstructed.n == 3
    store.forget_all()  # drops the cached vectors: nothing derived from the data survives
    assert store.cached_key("user_vector") is None
    rec.recommend(5)
    assert reconstructed.n == 4


def test_a_stored_personal_state_is_where_reconstruction_starts(store):
    stored = FederationConfig(reconstruct_from="stored", reconstruct_steps=0)
    rec = OnDeviceRecommender(store, stored)
    assert not rec.user_vector()[0].any()  # nothing stored yet: zeros
    p = np.random.default_rng(1).normal(size=(1, 8)).astype(np.float32)
    store.personal.save(3, {"personal_vector": p})  # a federation round saved a new state
    assert np.allclose(rec.user_vector()[0], p[0])
    store.personal.save(9, {"personal_vector": 2 * p})  # from after this head's round: unused
    assert np.allclose(rec.user_vector()[0], p[0])


def test_without_a_head_or_catalog_it_says_what_is_missing(tmp_path):
    s = DeviceStore(tmp_path / "empty.sqlite", fsync=False)
    with pytest.raises(NoHead, match="no recommendation head"):
        OnDeviceRecommender(s).recommend()
    s.save_head(1, head(), vars(MODEL))
    with pytest.raises(NoHead, match="no catalog"):
        OnDeviceRecommender(s).recommend()
    s.set_catalog(np.ones((5, 7), np.float32), "narrow")
    with pytest.raises(ValueError, match="width 7, the head expects 24"):
        OnDeviceRecommender(s).recommend()
