"""The app-facing SDK: install, record, recommend, forget, privacy status — offline, with
errors that say what was wrong."""

import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from fedrec.client.budget import PrivacyAccount
from fedrec.client.sdk import FedrecClient, NoHead, Recommendation, UnknownItem
from fedrec.common import privacy
from fedrec.common.hparams import ModelConfig
from fedrec.common.model import FedRecModel

MODEL = ModelConfig(input_dim=16, dim=8, num_experts=2, max_history=5, num_layers=1)
CATALOG = np.random.default_rng(0).normal(size=(30, 16)).astype(np.float32)


def head(seed=0):
    torch.manual_seed(seed)
    return FedRecModel(MODEL, 1).shared_arrays()


@pytest.fixture
def client(tmp_path):
    with FedrecClient(tmp_path / "device.sqlite", fsync=False) as c:
        c.install(CATALOG, head(), MODEL)
        yield c


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("fedrec.client tried to open a network connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_an_app_installs_records_and_gets_explained_recommendations_offline(tmp_path, offline):
    with FedrecClient(tmp_path / "app" / "device.sqlite") as c:
        c.install(CATALOG, head(), MODEL, catalog_name="shop")
        for t, item in enumerate([4, 8, 15, 16, 23]):
            c.add_interaction(item, timestamp=float(t))
        c.add_interaction(np.int64(29))  # now
        recs = c.recommend(k=5)
    assert len(recs) == 5 and all(isinstance(r, Recommendation) for r in recs)
    assert not {r.item for r in recs} & {4, 8, 15, 16, 23, 29}
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    assert all(len(r.because) == 3 and {i for i, _ in r.because} <= {4, 8, 15, 16, 23, 29}
               for r in recs)
    with FedrecClient(tmp_path / "app" / "device.sqlite") as again:  # the app restarts
        assert [r.item for r in again.recommend(k=5, explain=False)] == [r.item for r in recs]
        assert again.store.catalog_name == "shop"


def test_forgetting_an_item_or_everything(client):
    for t, item in enumerate([1, 2, 1, 3]):
        client.add_interaction(item, float(t))
    assert client.forget(1) == 2 and client.forget(5) == 0
    assert 1 in {r.item for r in client.recommend(k=29)}  # forgotten: may be recommended again
    client.forget_all()
    assert len(client.store.interactions()[0]) == 0
    assert len(client.recommend(k=30)) == 30


def test_unknown_items_and_a_missing_head_are_clear_errors(tmp_path, client):
    for item in (30, -1, 2.5):
        with pytest.raises(UnknownItem, match=rf"item {item!r} is not in the catalog: its 30 "
                                              r"items have ids 0\.\.29"):
            client.add_interaction(item)
    with pytest.raises(UnknownItem, match="item 99"):
        client.forget(99)
    with FedrecClient(tmp_path / "new.sqlite") as fresh:
        with pytest.raises(NoHead, match="no recommendation head yet"):
            fresh.recommend()
        with pytest.raises(NoHead, match="no catalog yet, so item 3 cannot be checked"):
            fresh.add_interaction(3)
        with pytest.raises(ValueError, match=r"expects \(n_items, 16\)"):
            fresh.install(CATALOG[:, :8], head(), MODEL)
        with pytest.raises(ValueError, match="shared arrays"):
            fresh.install(CATALOG, head()[:-1], MODEL)


def test_installing_never_replaces_a_newer_head(client):
    client.store.save_head(12, head(seed=1), vars(MODEL))  # a federation round replaced it
    client.install(CATALOG, head(), MODEL, round_=0)
    assert client.store.head().round == 12
    client.install(CATALOG, head(seed=2), MODEL, round_=20)
    assert client.store.head().round == 20


def test_privacy_status_of_a_new_device_and_after_releases(client):
    status = client.privacy_status()
    assert (status.unit, status.epsilon_spent, status.releases) == ("record", 0.0, 0)
    assert status.epsilon_remaining == status.epsilon_budget == 8.0
    assert status.pseudonym == client.store.pseudonym() and status.delta == 1e-5

    account = PrivacyAccount(client.store, 1e-6, "rdp")  # the federation's δ differs
    for round_ in (1, 2):
        charge = account.charge(round_, "inputs", 2.0, 0.1, 10)
        client.store.append_release(privacy.Release(
            "record", client.store.pseudonym(), round_, 2.0, 0.1, 10, 1.0, 1e-6, "rdp",
            charge.epsilon))
    status = client.privacy_status()
    expected = privacy.epsilon([(2.0, 0.1, 20)], 1e-6, "rdp")
    assert status.delta == 1e-6 and status.epsilon_spent == pytest.approx(expected) and expected < 8
    assert status.epsilon_remaining == pytest.approx(8.0 - expected) and status.releases == 2


def test_importing_fedrec_client_is_light_and_resolves_the_sdk_on_use():
    code = ("import sys, fedrec.client as c; heavy = {'torch', 'flwr', 'pandas'} & set(sys.modules);"
            " assert not heavy, heavy; assert c.FedrecClient.__name__ == 'FedrecClient'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
