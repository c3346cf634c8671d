"""The device store: round-trips, order, forgetting, versions, corruption, atomicity, and
several store objects on one file. Personal-state semantics are checked on the SQLite store
and on the legacy directory store alike."""

import sqlite3
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrec.client.budget import PrivacyAccount, digest
from fedrec.client.store import SCHEMA_VERSION, DeviceStore, StoreError, StoreVersionError
from fedrec.common import privacy


@pytest.fixture
def store(tmp_path):
    with DeviceStore(tmp_path / "device.sqlite", fsync=False) as s:
        yield s


def release(round_, epsilon=1.0, client="c-0000000000000000"):
    return privacy.Release("record", client, round_, 1.1, 0.5, 4, 1.0, 1e-5, "rdp", epsilon)


# --- interactions ----------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from([0.0, 1.5, 2.0, 1e9])),
                max_size=30))
def test_interactions_come_back_in_time_order_with_ties_in_insertion_order(tmp_path_factory, rows):
    with DeviceStore(tmp_path_factory.mktemp("s") / "d.sqlite", fsync=False) as s:
        for item, t in rows:
            s.add_interaction(item, t)
        items, stamps = s.interactions()
    expected = sorted(rows, key=lambda r: r[1])  # Python's sort is stable
    assert items.dtype == np.int64 and stamps.dtype == np.float64
    assert items.tolist() == [i for i, _ in expected]
    assert stamps.tolist() == [t for _, t in expected]


def test_bad_interactions_are_refused(store):
    for item in (-1, 2.0, "3", True):
        with pytest.raises(ValueError, match="item id"):
            store.add_interaction(item, 0.0)
    with pytest.raises(ValueError, match="timestamp"):
        store.add_interaction(1, float("nan"))
    assert len(store.interactions()[0]) == 0


def test_forget_deletes_one_item_and_what_was_fitted_to_it(store):
    store.add_interactions([3, 4, 3, 5], [1.0, 2.0, 3.0, 4.0])
    store.personal.save(1, {"personal_vector": np.ones((1, 4), np.float32)})
    store.put_cached("user_vector", "k", {"v": np.ones(4, np.float32)}, personal=True)
    store.put_cached("item_vectors", "h", {"v": np.ones(4, np.float32)}, personal=False)
    assert store.forget(7) == 0
    assert store.personal.versions() == [1]  # nothing forgotten, nothing dropped
    assert store.forget(3) == 2
    assert store.interactions()[0].tolist() == [4, 5]
    assert store.personal.versions() == [] and store.cached("user_vector", "k") is None
    assert store.cached("item_vectors", "h") is not None  # public: stays


def test_forget_all_keeps_the_spent_budget_the_ledger_and_the_public_state(store):
    store.set_catalog(np.ones((6, 3), np.float32), "cat")
    store.save_head(4, [np.zeros(2, np.float32)], {"dim": 2})
    store.add_interactions([1, 2, 3], [1.0, 2.0, 3.0])
    store.personal.save(4, {"personal_vector": np.ones((1, 4), np.float32)})
    store.put_cached("user_vector", "k", {"v": np.ones(4, np.float32)}, personal=True)
    account = PrivacyAccount(store, 1e-5)
    account.charge(4, "inputs", 1.0, 0.5, 4)
    store.append_release(release(4, account.epsilon))
    name = store.pseudonym()

    store.forget_all()
    assert len(store.interactions()[0]) == 0 and store.personal.versions() == []
    assert store.cached("user_vector", "k") is None
    assert PrivacyAccount(store, 1e-5).epsilon == account.epsilon > 0
    assert len(store.releases()) == 1 and store.pseudonym() == name
    assert store.catalog_size == 6 and store.head().round == 4


def test_user_data_splits_the_devices_own_sequence_by_time(store):
    store.add_interactions([10, 11, 12, 13, 14], [5.0, 1.0, 3.0, 3.0, 9.0])  # 12, 13 tie
    data = store.user_data()
    assert data.train_items.tolist() == [11, 12, 13] and data.train_items.dtype == np.int64
    assert (data.valid_item, data.test_item, data.profile) == (10, 14, {})


@pytest.mark.parametrize("n", [0, 1, 2])
def test_a_short_history_is_all_training_as_in_the_evaluation_split(store, n):
    store.add_interactions([7, 8][:n], [2.0, 1.0][:n])
    data = store.user_data()
    assert data.train_items.tolist() == {0: [], 1: [7], 2: [8, 7]}[n]
    assert (data.valid_item, data.test_item) == (-1, -1)


# --- catalog, head, caches --------------------------------------------------------------------
def test_catalog_round_trip(store):
    assert store.catalog() is None and store.catalog_size is None
    emb = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    store.set_catalog(emb, "movies")
    assert np.array_equal(store.catalog(), emb) and store.catalog().dtype == np.float32
    assert (store.catalog_name, store.catalog_size, store.catalog_digest) == ("movies", 5,
                                                                             digest([emb]))
    with pytest.raises(ValueError, match="finite"):
        store.set_catalog(np.full((2, 2), np.nan), "bad")


def test_only_the_newest_head_is_kept_with_its_arrays_in_wire_order(store):
    assert store.head() is None and store.head_digest is None
    arrays = [np.full((i + 1,), i, np.float32) for i in range(12)]  # more than 10: order
    store.save_head(3, arrays[::-1], {"dim": 8})
    store.save_head(5, arrays, {"dim": 4})
    head = store.head()
    assert head.round == 5 and head.model_config == {"dim": 4}
    assert [a.tolist() for a in head.arrays] == [a.tolist() for a in arrays]
    assert head.digest == store.head_digest
    store.save_head(5, arrays, {"dim": 4, "temperature": 0.5})  # same arrays, other model
    assert store.head_digest != head.digest


def test_a_cache_entry_answers_only_for_its_key(store):
    store.put_cached("x", "a", {"v": np.arange(3)}, personal=False)
    assert store.cached("x", "b") is None
    assert store.cached("x", "a")["v"].tolist() == [0, 1, 2]
    store.put_cached("x", "b", {"v": np.arange(2)}, personal=False)  # replaces "a"
    assert store.cached("x", "a") is None


# --- account, ledger, identity ---------------------------------------------------------------
def test_account_and_ledger_round_trip(store):
    assert store.read_account() is None and store.releases() == []
    store.write_account({"history": [[1.0, 0.5, 4, 1]]})
    assert store.read_account() == {"history": [[1.0, 0.5, 4, 1]]}
    store.append_release(release(1))
    store.append_release(vars(release(2)) | {"extra": "kept"})
    assert [r["round"] for r in store.releases()] == [1, 2]
    assert set(store.releases()[0]) == set(privacy.LEDGER_KEYS)
    with pytest.raises(ValueError, match="missing"):
        store.append_release({"round": 3})


def test_pseudonyms_are_random_per_store_stable_and_rotation_leaves_nothing(tmp_path):
    a, b = DeviceStore(tmp_path / "a.sqlite"), DeviceStore(tmp_path / "b.sqlite")
    first = a.pseudonym()
    assert first != b.pseudonym() and first == a.pseudonym()
    assert first.startswith("c-") and len(first) == 18
    rotated = a.rotate_pseudonym()
    assert rotated != first and DeviceStore(tmp_path / "a.sqlite").pseudonym() == rotated
    a.close()
    for f in tmp_path.glob("a.sqlite*"):  # neither the file nor its journal keeps the old one
        assert first.encode() not in f.read_bytes(), f.name


def test_rotation_keeps_the_devices_budget(store):
    PrivacyAccount(store, 1e-5).charge(1, "inputs", 1.0, 0.5, 4)
    spent = PrivacyAccount(store, 1e-5).epsilon
    store.rotate_pseudonym()
    assert PrivacyAccount(store, 1e-5).epsilon == spent > 0


# --- personal state ----------------------------------------------------------------------------
@pytest.fixture
def personal(tmp_path):
    return DeviceStore(tmp_path / "d.sqlite", fsync=False).personal


def state(x):
    return {"personal_vector": np.full((1, 4), x, np.float32)}


def test_a_new_client_has_no_state(personal):
    assert personal.load(before_round=5) is None and personal.versions() == []


def test_load_returns_the_newest_version_before_the_round(personal):
    for r in (2, 5, 9):
        personal.save(r, state(r), keep_from=0)
    assert personal.load(before_round=9)["personal_vector"][0, 0] == 5
    assert personal.load(before_round=10)["personal_vector"][0, 0] == 9
    assert personal.load(before_round=10)["personal_vector"].dtype == np.float32
    assert personal.load(before_round=2) is None


def test_pruning_keeps_what_a_resume_from_the_checkpoint_needs(personal):
    personal.save(3, state(3), keep_from=0)
    personal.save(7, state(7), keep_from=5)   # checkpoint at 5 needs version 3
    personal.save(12, state(12), keep_from=10)  # checkpoint at 10 needs version 7; 3 goes
    assert personal.versions() == [7, 12]
    assert personal.load(before_round=11)["personal_vector"][0, 0] == 7


def test_discard_after_drops_versions_of_rounds_being_redone(personal):
    for r in (2, 5, 9):
        personal.save(r, state(r), keep_from=0)
    personal.discard_after(5)
    assert personal.versions() == [2, 5]


def test_a_resumed_client_overwrites_stale_versions_from_the_crashed_run(personal):
    for r in (4, 6, 8):
        personal.save(r, state(r), keep_from=0)
    # the server resumed from its checkpoint at round 5; this client trains again in round 6
    assert personal.load(before_round=6)["personal_vector"][0, 0] == 4
    personal.save(6, state(60), keep_from=5)
    assert personal.versions() == [4, 6]
    assert personal.load(before_round=7)["personal_vector"][0, 0] == 60


# --- the file ---------------------------------------------------------------------------------
def test_a_new_store_is_versioned_wal_and_durable_unless_told(tmp_path):
    durable, fast = DeviceStore(tmp_path / "a.sqlite"), DeviceStore(tmp_path / "b.sqlite",
                                                                    fsync=False)
    for s, sync in ((durable, 2), (fast, 0)):
        assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s._db.execute("PRAGMA synchronous").fetchone()[0] == sync


def test_the_default_path_is_in_the_users_app_data(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.setattr(platformdirs, "user_data_dir", lambda app: str(tmp_path / app))
    with DeviceStore() as s:
        assert s.path == tmp_path / "fedrec" / "device.sqlite" and s.path.exists()


def test_a_newer_schema_is_refused_naming_the_file_and_both_versions(tmp_path):
    path = tmp_path / "future.sqlite"
    DeviceStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreVersionError) as err:
        DeviceStore(path)
    assert str(path) in str(err.value)
    assert f"version {SCHEMA_VERSION + 1}" in str(err.value)
    assert f"(version {SCHEMA_VERSION})" in str(err.value)


def test_a_file_that_is_no_store_is_refused_naming_it(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=f"{junk}: not a fedrec device store"):
        DeviceStore(junk)
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    with pytest.raises(StoreError, match=str(damaged)):
        DeviceStore(damaged)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not a fedrec device store"):
        DeviceStore(other)
    with pytest.raises(StoreError, match="no device store there"):
        DeviceStore(tmp_path / "missing.sqlite", create=False)
    assert not (tmp_path / "missing.sqlite").exists()


def test_an_interrupted_transaction_leaves_the_previous_state(store):
    store.add_interaction(1, 1.0)
    store.write_account({"history": []})
    with pytest.raises(RuntimeError), store.transaction():
        store.add_interaction(2, 2.0)
        store.write_account({"history": [[1.0, 0.5, 4, 1]]})
        raise RuntimeError("killed mid-write")
    assert store.interactions()[0].tolist() == [1]
    assert store.read_account() == {"history": []}


def test_an_operation_failing_half_way_changes_nothing(store, monkeypatch):
    store.add_interactions([1, 2], [1.0, 2.0])
    store.personal.save(1, state(1))

    def half(db):
        db.execute("DELETE FROM personal")
        raise OSError("disk full")

    monkeypatch.setattr(store, "_drop_personal", half)
    with pytest.raises(OSError):
        store.forget_all()
    assert store.interactions()[0].tolist() == [1, 2] and store.personal.versions() == [1]


def test_two_store_objects_on_one_file_see_each_other_and_never_lose_a_write(tmp_path):
    path = tmp_path / "shared.sqlite"
    stores = [None, None]

    def open_and_write(k):
        stores[k] = DeviceStore(path, fsync=False)  # both may create the file at once
        for i in range(100):
            stores[k].add_interaction(i, float(k))

    threads = [threading.Thread(target=open_and_write, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = stores
    assert len(a.interactions()[0]) == len(b.interactions()[0]) == 200
    assert a.pseudonym() == b.pseudonym()
    a.write_account({"by": "a"})
    assert b.read_account() == {"by": "a"}
    assert a._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
