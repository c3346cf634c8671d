"""A device's own accountant: budget enforcement, decline, and crash safety of the charge —
unit tests of `PrivacyAccount` on a `DeviceStore`, and the ClientApp on a real device's store."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from fedrec.client import app, dp
from fedrec.client.budget import PrivacyAccount, digest
from fedrec.client.device import StoreDevice
from fedrec.client.store import DeviceStore
from fedrec.common import privacy
from fedrec.common.config import RunConfig
from fedrec.common.model import FedRecModel, ModelConfig
from fedrec.common.plan import RunPlan
from fedrec.common.train import TrainConfig

MODEL = ModelConfig(input_dim=384, dim=8, num_experts=2, max_history=10, num_layers=1,
                    dropout=0.0)


@pytest.fixture
def store(tmp_path):
    with DeviceStore(tmp_path / "device.sqlite", fsync=False) as s:
        yield s


def test_charges_persist_and_compose(store):
    account = PrivacyAccount(store, delta=1e-5)
    first = account.charge(1, "aa", 1.0, 0.5, 4)
    second = PrivacyAccount(store, delta=1e-5).charge(2, "bb", 1.0, 0.5, 4)
    again = PrivacyAccount(store, delta=1e-5)
    assert again.history == [[1.0, 0.5, 4, 1], [1.0, 0.5, 4, 2]]
    assert second.epsilon == pytest.approx(privacy.epsilon([(1.0, 0.5, 8)], 1e-5))
    assert first.epsilon < second.epsilon < 2 * first.epsilon
    assert again.epsilon == pytest.approx(second.epsilon)
    assert again.find(2, "bb").replay and again.find(2, "bb").seed == second.seed
    assert again.find(2, "cc") is None and again.find(1, "aa") is None  # only the last one
    assert first.seed != second.seed  # fresh secret randomness per release


def test_a_charge_is_one_write_to_the_store(store):
    account = PrivacyAccount(store, delta=1e-5)
    account.charge(1, "aa", 1.0, 0.5, 4)
    state = store.read_account()
    assert state["unit"] == "record" and state["delta"] == 1e-5
    assert state["history"] == [[1.0, 0.5, 4, 1]] and state["last"]["logged"] is False
    account.mark_logged()
    assert store.read_account()["last"]["logged"] is True


def device(tmp_path, **dp_settings):
    """The ClientApp on a real device: its store holds a random catalog and 25 interactions."""
    cfg = RunConfig(fedrec=MODEL, train=TrainConfig(batch_size=2))
    cfg.privacy = privacy.PrivacyConfig(**{"mode": "record", "window": 5, "negatives": 5,
                                           "planned_rounds": 1, **dp_settings})
    cfg.federation = replace(cfg.federation, clients_per_round=2)
    shapes = {k: tuple(v.shape) for k, v in FedRecModel(MODEL, 1).shared_state().items()}
    plan = RunPlan.build(cfg, num_clients=6, input_dim=MODEL.input_dim, shared=shapes)
    store = DeviceStore(tmp_path / "device.sqlite", fsync=False)
    rng = np.random.default_rng(0)
    store.set_catalog(rng.normal(size=(40, MODEL.input_dim)).astype(np.float32), "random")
    store.add_interactions(rng.integers(0, 40, 25), np.arange(25, dtype=float))
    return app.FedRecClient(plan, StoreDevice(store))


def global_model(seed=0):
    torch.manual_seed(seed)
    return FedRecModel(MODEL, 1).shared_arrays()


def fit(client, round_, params):
    return client.fit(params, {"server_round": round_, "seed": 0, "checkpoint_round": 0})


def ledger(client):
    return client.device.store.releases()


def account_of(client):
    return PrivacyAccount(DeviceStore(client.device.store.path), 1e-5)


def test_a_client_out_of_budget_declines_with_a_well_formed_reply(tmp_path):
    client = device(tmp_path, epsilon=4.0)  # σ planned for exactly one release
    params = global_model()
    sent, weight, metrics = fit(client, 1, params)
    assert weight == 1 and metrics == {}  # no count, no loss: they are not private
    assert not all(np.array_equal(a, b) for a, b in zip(sent, params))
    lines = ledger(client)
    assert len(lines) == 1 and lines[0]["epsilon"] <= 4.0 and lines[0]["unit"] == "record"
    assert lines[0]["client"].startswith("c-") and lines[0]["client"] != "0"

    again, weight, metrics = fit(client, 2, sent)
    assert (weight, metrics) == (0, {"declined": 1})
    assert all(np.array_equal(a, b) for a, b in zip(again, sent))  # nothing trained, no update
    assert len(ledger(client)) == 1  # nothing released, nothing charged
    account = account_of(client)
    assert len(account.history) == 1 and account.epsilon <= 4.0


def test_a_crash_after_the_charge_never_double_spends_nor_loses_it(tmp_path, monkeypatch):
    client = device(tmp_path, epsilon=50.0, planned_rounds=5)
    params = global_model()
    real_fit = dp.fit_private

    def crash(*args, **kwargs):
        raise SystemExit("killed mid-round")

    monkeypatch.setattr(dp, "fit_private", crash)
    with pytest.raises(SystemExit):
        fit(client, 1, params)
    account = account_of(client)
    assert len(account.history) == 1  # charged before anything could leave
    assert not account.logged and ledger(client) == []

    monkeypatch.setattr(dp, "fit_private", real_fit)
    retried = fit(client, 1, params)[0]  # the same round again: a replay, not a new spend
    replayed = fit(client, 1, params)[0]
    assert all(np.array_equal(a, b) for a, b in zip(retried, replayed))
    account = account_of(client)
    assert len(account.history) == 1
    assert [line["round"] for line in ledger(client)] == [1]  # logged once, on the retry

    fit(client, 1, global_model(seed=1))  # a different global model: a new release
    assert len(account_of(client).history) == 2
    epsilons = [line["epsilon"] for line in ledger(client)]
    assert len(epsilons) == 2 and epsilons[0] < epsilons[1]


def test_every_ledger_epsilon_is_reproducible_from_the_logged_parameters(tmp_path):
    client = device(tmp_path, epsilon=50.0, planned_rounds=5)
    params = global_model()
    for round_ in (1, 2, 3):
        params = fit(client, round_, params)[0]
    history = []
    for line in ledger(client):
        history.append((line["noise_multiplier"], line["sample_rate"], line["steps"]))
        assert line["epsilon"] == pytest.approx(
            privacy.epsilon(history, line["delta"], "rdp"), rel=1e-9)
    state = client.device.store.read_account()
    assert [h[:3] for h in state["history"]] == [list(h) for h in history]
    assert digest(params) != digest(global_model())


def test_a_retry_on_changed_inputs_is_a_new_release_with_fresh_noise(tmp_path, monkeypatch):
    client = device(tmp_path, epsilon=50.0, planned_rounds=5)
    params = global_model()
    monkeypatch.setattr(dp, "fit_private", lambda *a, **k: (_ for _ in ()).throw(SystemExit()))
    with pytest.raises(SystemExit):
        fit(client, 1, params)
    monkeypatch.undo()
    # the device's personal state changed in between: replaying the same noise on different
    # inputs would let anyone cancel it by subtracting the two updates
    client.device.store.personal.save(0, {"personal_vector": np.ones((1, 8), np.float32)})
    fit(client, 1, params)
    account = account_of(client)
    assert len(account.history) == 2
    assert [line["round"] for line in ledger(client)] == [1, 1]  # both charges logged
