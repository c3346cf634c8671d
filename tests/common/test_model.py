import numpy as np
import torch

from fedrec.common.model import FedRecModel, ModelConfig, pad_histories, score_catalog
from fedrec.common.train import TrainConfig, make_windows, train, window_loss

CFG = ModelConfig(input_dim=16, dim=8, num_experts=2, max_history=6, num_layers=1, num_heads=2,
                  dropout=0.0)


def test_shared_and_personal_groups_partition_the_parameters():
    model = FedRecModel(CFG, num_users=3)
    shared = {id(p) for p in model.shared_parameters()}
    personal = {id(p) for p in model.personal_parameters()}
    assert shared.isdisjoint(personal)
    assert shared | personal == {id(p) for p in model.parameters()}
    assert not any(k.startswith("personal.") for k in model.shared_state())
    # no per-item parameters anywhere: nothing has the catalog size as a dimension
    assert all(50 not in p.shape for p in model.parameters())


def test_load_shared_state_keeps_personal_and_rejects_mismatch():
    a, b = FedRecModel(CFG, 2), FedRecModel(CFG, 2)
    with torch.no_grad():
        b.personal.vectors.weight.fill_(1.0)
    b.load_shared_state(a.shared_state())
    for k, v in a.shared_state().items():
        assert torch.equal(b.state_dict()[k], v)
    assert torch.all(b.personal.vectors.weight == 1.0)
    state = a.shared_state()
    state.pop(next(iter(state)))
    try:
        b.load_shared_state(state)
        raise AssertionError("expected ValueError")
    except ValueError as exc:
        assert "missing" in str(exc)


def test_encoder_is_causal():
    torch.manual_seed(0)
    model = FedRecModel(CFG, 1).eval()
    x = torch.randn(1, 6, 8)
    valid = torch.ones(1, 6, dtype=torch.bool)
    y1 = model.sequence_states(x, valid)
    x2 = x.clone()
    x2[0, 4:] = torch.randn(2, 8)
    y2 = model.sequence_states(x2, valid)
    assert torch.allclose(y1[0, :4], y2[0, :4], atol=1e-6)
    assert not torch.allclose(y1[0, 4:], y2[0, 4:])


def test_pad_histories_keeps_the_newest_items_right_aligned():
    out = pad_histories([np.array([1, 2, 3]), np.array([], dtype=int), np.arange(10)], 4)
    assert out.tolist() == [[-1, 1, 2, 3], [-1, -1, -1, -1], [6, 7, 8, 9]]


def test_windows_cover_every_transition():
    rng = np.random.default_rng(0)
    seq = np.arange(20)
    windows, owners = make_windows([seq], np.array([7]), 6, rng)
    assert (owners == 7).all()
    pairs = {(int(w[i]), int(w[i + 1])) for w in windows for i in range(6) if w[i] >= 0}
    assert pairs == {(i, i + 1) for i in range(19)}


def test_training_learns_a_sequential_pattern():
    """Item i is always followed by item i+1: after training, the next item ranks first."""
    torch.manual_seed(0)
    n_items = 30
    emb = torch.nn.functional.normalize(torch.randn(n_items, 16), dim=-1)
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(40):
        start = int(rng.integers(0, n_items - 10))
        seqs.append(np.arange(start, start + 10))
    model = FedRecModel(CFG, num_users=40)
    losses = train(model, emb, seqs, np.arange(40), TrainConfig(epochs=60, batch_size=16, lr=1e-2))
    assert losses[-1] < 0.5 * losses[0]
    scores = score_catalog(model, emb, np.array([0]), [np.array([10, 11, 12])])
    assert int(scores.argmax()) == 13


def test_sampled_softmax_loss_is_finite_and_positive():
    torch.manual_seed(0)
    emb = torch.randn(12, 16)
    model = FedRecModel(CFG, 2)
    windows = torch.tensor([[-1, -1, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6]])
    loss = window_loss(model, emb, windows, torch.tensor([0, 1]), negatives=4)
    assert torch.isfinite(loss) and loss > 0
