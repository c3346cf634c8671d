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
    assert again.find(2, "cc") is None  # other inputs: not the same release
    assert again.find(1, "aa").seed == first.seed  # every round a resumed run may redo
    assert again.released(1) and not again.released(3)
    assert first.seed != second.seed  # fresh secret randomness per release
    with pytest.raises(ValueError, match="already charged"):
        again.charge(1, "zz", 1.0, 0.5, 4)


def test_a_charge_rereads_the_account_so_a_concurrent_charge_is_never_overwritten(store):
    """Two federations on one device read the account, then both charge: the second sees the
    first (inside its transaction) and neither loses the other's charge nor its budget."""
    from fedrec.client.budget import AlreadyCharged, OverBudget

    a = PrivacyAccount(store, delta=1e-5, budget=100.0)
    b = PrivacyAccount(store, delta=1e-5, budget=100.0)
    a.charge(1, "aa", 1.0, 0.5, 4, run="A")
    b.charge(1, "bb", 1.0, 0.5, 4, run="B")  # stale view of the account: re-read, kept both
    assert [h[3] for h in PrivacyAccount(store, delta=1e-5).history] == [1, 1]
    stale = PrivacyAccount(store, delta=1e-5, budget=100.0)
    PrivacyAccount(store, delta=1e-5).charge(2, "cc", 1.0, 0.5, 4, run="A")
    with pytest.raises(AlreadyCharged):
        stale.charge(2, "dd", 1.0, 0.5, 4, run="A")
    fits_one_more = PrivacyAccount(store, delta=1e-5).would_spend(1.0, 0.5, 4) + 1e-9
    tight = PrivacyAccount(store, delta=1e-5, budget=fits_one_more)
    PrivacyAccount(store, delta=1e-5).charge(3, "ee", 1.0, 0.5, 4, run="B")
    with pytest.raises(OverBudget):
        tight.charge(3, "ff", 1.0, 0.5, 4, run="A")
    assert len(PrivacyAccount(store, delta=1e-5).history) == 4


def test_a_charge_of_a_fedrec_without_run_names_is_replayed_by_the_resumed_run(store):
    store.write_account({"unit": "record", "delta": 1e-5, "accountant": "rdp",
                         "epsilon_max": None, "noise_multiplier": 1.0,
                         "history": [[1.0, 0.5, 4, 6]],
                         "last": {"round": 6, "digest": "in6", "noise_multiplier": 1.0,
                                  "sample_rate": 0.5, "steps": 4, "epsilon": 1.0, "seed": 7,
                                  "logged": True}})
    account = PrivacyAccount(store, delta=1e-5)
    assert account.find(6, "in6", run="0123abcd").seed == 7  # the upgraded server's run name
    assert account.released(6, run="0123abcd")


def test_a_resumed_run_replays_every_redone_round_and_seeds_are_dropped_when_done(store):
    """Charged in rounds 6 and 7, then the server resumes from its checkpoint of round 5:
    round 6 replays (the account kept more than its last charge)."""
    account = PrivacyAccount(store, delta=1e-5)
    six = account.charge(6, "in6", 1.0, 0.5, 4, run="r1", keep_from=5)
    seven = account.charge(7, "in7", 1.0, 0.5, 4, run="r1", keep_from=5)
    again = PrivacyAccount(store, delta=1e-5)
    assert again.find(6, "in6", "r1").seed == six.seed
    assert again.find(7, "in7", "r1").seed == seven.seed
    assert again.find(6, "in6", "r2") is None and not again.released(6, "r2")  # another run
    again.charge(3, "in3", 1.0, 0.5, 4, run="r2", keep_from=0)  # another run's charge
    again.charge(9, "in9", 1.0, 0.5, 4, run="r1", keep_from=7)  # the server checkpointed 7
    assert again.find(6, "in6", "r1") is None and again.released(6, "r1")  # seed deleted
    charges = store.read_account()["charges"]
    assert charges["r1/9"]["seed"] is not None and charges["r2/3"]["seed"] is not None
    assert charges["r1/6"]["seed"] is None and charges["r1/7"]["seed"] is None


def test_a_charge_and_its_ledger_line_are_one_write_to_the_store(store, monkeypatch):
    account = PrivacyAccount(store, delta=1e-5)
    line = {"unit": "record", "client": "c-1", "round": 1, "noise_multiplier": 1.0,
            "sample_rate": 0.5, "steps": 4, "max_grad_norm": 1.0, "delta": 1e-5,
            "accountant": "rdp", "epsilon": 0.0}
    account.charge(1, "aa", 1.0, 0.5, 4, line=lambda c: {**line, "epsilon": c.epsilon})
    state = store.read_account()
    assert state["unit"] == "record" and state["delta"] == 1e-5
    assert state["history"] == [[1.0, 0.5, 4, 1]] and state["last"]["logged"] is True
    assert [r["round"] for r in store.releases()] == [1]
    assert store.releases()[0]["epsilon"] == pytest.approx(account.epsilon)

    def torn(*args):  # the ledger write fails: the charge must not be there without it
        raise OSError("disk full")

    monkeypatch.setattr(store, "append_release", torn)
    with pytest.raises(OSError):
        PrivacyAccount(store, delta=1e-5).charge(2, "bb", 1.0, 0.5, 4, line=lambda c: line)
    assert len(PrivacyAccount(store, delta=1e-5).history) == 1 and len(store.releases()) == 1


def test_a_charge_of_an_older_store_without_its_line_is_marked_when_logged(store):
    account = PrivacyAccount(store, delta=1e-5)
    account.charge(1, "aa", 1.0, 0.5, 4)
    assert store.read_account()["last"]["logged"] is False
    account.mark_logged()
    assert store.read_account()["last"]["logged"] is True
    assert store.read_account()["charges"]["/1"]["logged"] is True


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
    assert account.logged and [line["round"] for line in ledger(client)] == [1]  # with its line

    monkeypatch.setattr(dp, "fit_private", real_fit)
    retried = fit(client, 1, params)[0]  # the same round again: a replay, not a new spend
    replayed = fit(client, 1, params)[0]
    assert all(np.array_equal(a, b) for a, b in zip(retried, replayed))
    account = account_of(client)
    assert len(account.history) == 1
    assert [line["round"] for line in ledger(client)] == [1]  # logged once, with the charge

    # a different global model for the same round: a second release would spend twice
    sent, weight, metrics = fit(client, 1, global_model(seed=1))
    assert (weight, metrics) == (0, {"declined": 1})
    assert len(account_of(client).history) == 1 and len(ledger(client)) == 1
    fit(client, 2, retried)  # the next round is a new release
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


def test_a_retry_on_changed_inputs_is_declined_not_released_twice(tmp_path, monkeypatch):
    client = device(tmp_path, epsilon=50.0, planned_rounds=5)
    params = global_model()
    monkeypatch.setattr(dp, "fit_private", lambda *a, **k: (_ for _ in ()).throw(SystemExit()))
    with pytest.raises(SystemExit):
        fit(client, 1, params)
    monkeypatch.undo()
    # the device's personal state changed in between: replaying the same noise on different
    # inputs would let anyone cancel it by subtracting the two updates
    client.device.store.personal.save(0, {"personal_vector": np.ones((1, 8), np.float32)})
    sent, weight, metrics = fit(client, 1, params)
    assert (weight, metrics) == (0, {"declined": 1})
    assert all(np.array_equal(a, b) for a, b in zip(sent, params))  # nothing new leaves
    assert len(account_of(client).history) == 1
    assert [line["round"] for line in ledger(client)] == [1]
