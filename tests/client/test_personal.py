"""Reconstruction of the personal vector against a frozen head (fedrec.client.personal)."""

import numpy as np
import torch
import torch.nn.functional as F

from fedrec.client.device import StoreDevice
from fedrec.client.personal import PERSONAL_KEY, as_state, personalized_model, reconstruct, starting_point
from fedrec.client.store import DeviceStore
from fedrec.common.config import FederationConfig
from fedrec.common.model import FedRecModel, ModelConfig, combine, gather_padded, pad_histories

CFG = ModelConfig(input_dim=16, dim=8, num_experts=2, max_history=6, num_layers=1, dropout=0.2)
EMB = F.normalize(torch.randn(30, 16, generator=torch.Generator().manual_seed(0)))
SEQUENCES = [np.array([1, 2, 3, 4, 5, 6, 7, 8]), np.array([9, 10, 11]), np.array([12]),
             np.array([4, 4, 20, 21, 22])]


def model():
    torch.manual_seed(0)
    m = FedRecModel(CFG, len(SEQUENCES))
    m.eval()
    return m


def own_loss(m, items, sequence, vector):
    """The objective by hand: mean next-item cross-entropy over the newest max_history
    transitions of one user, with that user's vector."""
    inputs = pad_histories([sequence[:-1]], CFG.max_history)
    targets = pad_histories([sequence[1:]], CFG.max_history)
    with torch.no_grad():
        states = m.sequence_states(gather_padded(items, inputs), inputs >= 0)
    mask = (inputs >= 0) & (targets >= 0)
    logits = m.logits(combine(states[mask], vector.expand(int(mask.sum()), -1)), items)
    return F.cross_entropy(logits, targets[mask]).item()


def test_reconstruction_lowers_each_users_own_loss_and_never_touches_the_head():
    m = model()
    head = [p.detach().clone() for p in m.shared_parameters()]
    with torch.no_grad():
        items = m.item_vectors(EMB)
    start = torch.zeros(len(SEQUENCES), CFG.dim)
    fitted = reconstruct(m, items, SEQUENCES, start, steps=20, lr=0.1)
    for b, sequence in enumerate(SEQUENCES):
        if len(sequence) < 2:  # nothing to fit on: the row is kept
            assert torch.equal(fitted[b], start[b])
            continue
        assert own_loss(m, items, sequence, fitted[b]) < own_loss(m, items, sequence, start[b])
    assert all(torch.equal(a, b) for a, b in zip(head, m.shared_parameters()))


def test_users_are_independent_a_batch_gives_each_what_it_gets_alone():
    m = model()
    with torch.no_grad():
        items = m.item_vectors(EMB)
    start = torch.randn(len(SEQUENCES), CFG.dim, generator=torch.Generator().manual_seed(1))
    together = reconstruct(m, items, SEQUENCES, start, steps=5, lr=0.05)
    for b, sequence in enumerate(SEQUENCES):
        alone = reconstruct(m, items, [sequence], start[b : b + 1], steps=5, lr=0.05)
        assert torch.allclose(together[b], alone[0], atol=1e-6)
    assert torch.equal(reconstruct(m, items, SEQUENCES, start, steps=0, lr=0.05), start)


def test_a_personalized_model_starts_from_each_stored_vector_in_chunks():
    shared = model().shared_arrays()
    stored = [None, {PERSONAL_KEY: np.full((1, 8), 0.5, np.float32)}, None, None]
    as_stored = personalized_model(CFG, EMB, shared, stored, SEQUENCES, steps=0, lr=0.0)
    assert not as_stored.training
    assert torch.equal(as_stored.personal.vectors.weight[1], torch.full((8,), 0.5))
    assert torch.equal(as_stored.personal.vectors.weight[0], torch.zeros(8))
    whole = personalized_model(CFG, EMB, shared, stored, SEQUENCES, steps=3, lr=0.1)
    chunked = personalized_model(CFG, EMB, shared, stored, SEQUENCES, steps=3, lr=0.1, chunk=3)
    assert torch.allclose(whole.personal.vectors.weight, chunked.personal.vectors.weight, atol=1e-6)


def test_a_stateless_device_starts_from_zero_and_a_stateful_one_from_its_last_vector(tmp_path):
    path = tmp_path / "000003.sqlite"
    device = StoreDevice(DeviceStore(path, fsync=False))
    device.store.personal.save(4, as_state(torch.ones(CFG.dim)), keep_from=0)
    stored = starting_point(device, 5, FederationConfig(reconstruct_from="stored"))
    assert np.array_equal(stored[PERSONAL_KEY], np.ones((1, CFG.dim), np.float32))
    assert starting_point(device, 4, FederationConfig(reconstruct_from="stored")) is None

    class Unopened:  # a stateless device never opens its store
        @property
        def store(self):
            raise AssertionError("the store was opened")

    assert starting_point(Unopened(), 5, FederationConfig(reconstruct_from="zero")) is None
