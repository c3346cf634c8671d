import numpy as np

from fedrec.client.store import PersonalStore


def state(x):
    return {"personal_vector": np.full((1, 4), x, np.float32)}


def test_a_new_client_has_no_state(tmp_path):
    assert PersonalStore(tmp_path / "c").load(before_round=5) is None


def test_load_returns_the_newest_version_before_the_round(tmp_path):
    store = PersonalStore(tmp_path)
    for r in (2, 5, 9):
        store.save(r, state(r), keep_from=0)
    assert store.load(before_round=9)["personal_vector"][0, 0] == 5
    assert store.load(before_round=10)["personal_vector"][0, 0] == 9
    assert store.load(before_round=2) is None


def test_pruning_keeps_what_a_resume_from_the_checkpoint_needs(tmp_path):
    store = PersonalStore(tmp_path)
    store.save(3, state(3), keep_from=0)
    store.save(7, state(7), keep_from=5)   # checkpoint at 5 needs version 3
    store.save(12, state(12), keep_from=10)  # checkpoint at 10 needs version 7; 3 goes
    assert store.versions() == [7, 12]
    assert store.load(before_round=11)["personal_vector"][0, 0] == 7


def test_discard_after_drops_versions_of_rounds_being_redone(tmp_path):
    store = PersonalStore(tmp_path)
    for r in (2, 5, 9):
        store.save(r, state(r), keep_from=0)
    store.discard_after(5)
    assert store.versions() == [2, 5]


def test_a_resumed_client_overwrites_stale_versions_from_the_crashed_run(tmp_path):
    store = PersonalStore(tmp_path)
    for r in (4, 6, 8):
        store.save(r, state(r), keep_from=0)
    # the server resumed from its checkpoint at round 5; this client trains again in round 6
    assert store.load(before_round=6)["personal_vector"][0, 0] == 4
    store.save(6, state(60), keep_from=5)
    assert store.versions() == [4, 6]
    assert store.load(before_round=7)["personal_vector"][0, 0] == 60
