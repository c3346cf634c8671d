"""The personal vector p_u: computed on the device (kept there between visits only with
`reconstruct_from = "stored"`), never sent, and reconstructed against the current global head
before it is used (Federated Reconstruction, Singhal et al., NeurIPS 2021): a few local steps
with the shared head frozen, at each training visit before the shared update and before every
evaluation or recommendation. A stale p_u (the head moved
since the user's last visit) or a missing one (a user never sampled) is thus never served.

The reconstruction fits p_u to the user's own newest `max_history` transitions (next-item
cross-entropy over the full catalog, as in training). With the head frozen the sequence
states are fixed, so a step costs one (positions × catalog) product per user. Users are
independent: the objective is a sum of per-user means, so reconstructing a batch of users
(the simulation) gives each the vector it would get alone (a device: a batch of one).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedrec.common.model import FedRecModel, combine, gather_padded, pad_histories
from fedrec.common.train import per_owner_means

PERSONAL_KEY = "personal_vector"


def kept(fed) -> bool:
    """Whether a device keeps its personal vector between visits (`reconstruct_from =
    "stored"`). With "zero" the vector is rebuilt from the device's own data whenever it is
    needed (Federated Reconstruction's stateless clients), so nothing is stored."""
    return fed.reconstruct_from == "stored"


def starting_point(device, before_round: int, fed) -> dict | None:
    """Where a reconstruction starts: the state `device` (a `fedrec.client.device.Device`)
    holds in its store from before round `before_round`, or nothing (zeros) with
    `federation.reconstruct_from = "zero"`, in which case the store is not opened."""
    return device.store.personal.load(before_round=before_round) if kept(fed) else None


def initial(personal: dict | None, dim: int) -> torch.Tensor:
    """(dim,) the stored personal vector, or zeros for a device that has none yet."""
    if personal is None:
        return torch.zeros(dim)
    return torch.as_tensor(personal[PERSONAL_KEY], dtype=torch.float32).reshape(dim).clone()


def as_state(vector: torch.Tensor) -> dict[str, np.ndarray]:
    """What the device stores: {PERSONAL_KEY: (1, dim) float32}."""
    return {PERSONAL_KEY: vector.detach().reshape(1, -1).numpy().astype(np.float32).copy()}


@torch.no_grad()
def _fixed_states(model: FedRecModel, item_vectors: torch.Tensor, sequences: list[np.ndarray]):
    """Sequence states (P, dim), targets (P,) and owner rows (P,) of every user's newest
    `max_history` transitions, with the shared head frozen and in eval mode."""
    length = model.cfg.max_history
    inputs = pad_histories([np.asarray(s)[:-1] for s in sequences], length)
    targets = pad_histories([np.asarray(s)[1:] for s in sequences], length)
    was_training = model.training
    model.eval()
    states = model.sequence_states(gather_padded(item_vectors, inputs), inputs >= 0)
    model.train(was_training)
    mask = (inputs >= 0) & (targets >= 0)
    return states[mask], targets[mask], mask.nonzero()[:, 0]


def reconstruct(
    model: FedRecModel,
    item_vectors: torch.Tensor,
    sequences: list[np.ndarray],
    init: torch.Tensor,
    steps: int,
    lr: float,
) -> torch.Tensor:
    """Personal vectors fitted against the frozen shared head: `steps` Adam steps at `lr`
    from `init` (B, dim), one row per user. `item_vectors`: (n_items, dim) of the current head
    (`model.item_vectors(embeddings)` in eval mode); `sequences[b]`: user b's chronological
    training items. A user with fewer than 2 items keeps its row. Returns (B, dim)."""
    if steps == 0:
        return init.detach().clone()
    states, targets, owners = _fixed_states(model, item_vectors, sequences)
    personal = init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([personal], lr=lr)
    items = item_vectors.detach()
    for _ in range(steps):
        user_vectors = combine(states, personal[owners])
        losses = F.cross_entropy(model.logits(user_vectors, items), targets, reduction="none")
        per_user, _ = per_owner_means(losses, owners, len(sequences))
        optimizer.zero_grad(set_to_none=True)
        per_user.sum().backward()
        optimizer.step()
    return personal.detach()


CHUNK = 256  # users reconstructed together (memory is bounded by it)


def personalized_model(
    model_cfg,
    item_embeddings: torch.Tensor,
    shared: list[np.ndarray],
    states: list[dict | None],
    sequences: list[np.ndarray],
    steps: int,
    lr: float,
    chunk: int = CHUNK,
    progress=None,
) -> FedRecModel:
    """The global head `shared` with each user's personal vector reconstructed against it
    (row b for user b: from its stored state `states[b]` and training items `sequences[b]`),
    in eval mode, ready to score. What a device does before it evaluates or recommends; the
    simulation does it for every user at once, `chunk` users at a time (memory is bounded by
    the chunk; users are independent, so chunking changes nothing). `progress(n)`: called
    with the number of users of each chunk done."""
    model = FedRecModel(model_cfg, num_users=len(states))
    model.load_shared_arrays(shared)
    model.eval()
    with torch.no_grad():
        items = model.item_vectors(item_embeddings)
    for lo in range(0, len(states), chunk):
        start = torch.stack([initial(s, model_cfg.dim) for s in states[lo : lo + chunk]])
        vectors = reconstruct(model, items, sequences[lo : lo + chunk], start, steps, lr)
        with torch.no_grad():
            model.personal.vectors.weight[lo : lo + chunk] = vectors
        if progress:
            progress(len(vectors))
    return model
