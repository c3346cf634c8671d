"""What a client does with its own data, without Flower: train the shared head and its
personal vector locally, and rank the full catalog for its own held-out item.

Two local recipes (`federation.local_optimizer`):
- `sgd` (the default): reconstruct the personal vector against the received head
  (`fedrec.client.personal`), then `local_steps` full-batch SGD steps on the shared head over
  all of the user's training windows. With one step this is FedSGD: the server's weighted
  mean of the updates is one step of central training on the cohort's windows, and an
  adaptive server optimizer (FedAdam) makes it central training's Adam step.
  `sgd_update` computes it for a cohort of clients at once: a device calls it for itself, the
  simulation's batched engine for a whole round (the same computation, the same result).
- `adam`: `local_epochs` epochs of the central training loop (`fedrec.common.train`) with a
  fresh Adam per visit, training the personal vector jointly (the first recipe; see
  docs/federation.md for why it is no longer the default).

The model, loss and metrics are the ones central training uses (fedrec.common).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from fedrec.client import personal as personal_state
from fedrec.client.personal import PERSONAL_KEY
from fedrec.common import metrics
from fedrec.common.config import FederationConfig
from fedrec.common.evaluate import history_mask
from fedrec.common.model import DropoutMasks, FedRecModel, ModelConfig, score_catalog
from fedrec.common.train import TrainConfig, make_optimizer, make_windows, next_item_losses, per_owner_means, train

__all__ = ["PERSONAL_KEY", "UserData", "CohortUpdate", "build_model", "sgd_update", "fit_local",
           "evaluate_local", "training_seed", "round_seed"]


@dataclass(frozen=True)
class UserData:
    """One user's private data: chronological training items, held-out items (-1 if none),
    and the generalized profile (`fedrec.client.scrub`; no model uses it yet)."""

    train_items: np.ndarray
    valid_item: int
    test_item: int
    profile: dict = field(default_factory=dict)

    def history(self, stage: str) -> np.ndarray:
        if stage == "test" and self.valid_item >= 0:
            return np.append(self.train_items, self.valid_item)
        return self.train_items


def build_model(model_cfg: ModelConfig, shared: list[np.ndarray], personal: dict | None):
    """A one-user model with the received shared arrays and this device's personal vector."""
    model = FedRecModel(model_cfg, num_users=1)
    model.load_shared_arrays(shared)
    if personal is not None:
        with torch.no_grad():
            model.personal.vectors.weight.copy_(torch.as_tensor(personal[PERSONAL_KEY]))
    return model


def training_seed(seed: int, round_: int, user: int) -> int:
    """The seed of a client's local randomness in a round (windows, dropout): a function of
    the run's seed, the round and the client, so any engine reproduces it."""
    return int(np.random.default_rng([seed, round_, 1, user, 1]).integers(2**31))


def round_seed(seed: int, round_: int) -> int:
    """The seed of what the clients of a round share: the dropout mask of the catalog pass."""
    return int(np.random.default_rng([seed, round_, 2]).integers(2**31))


@dataclass(frozen=True)
class CohortUpdate:
    """The result of `sgd_update` for B clients: `shared`, the weighted mean of their new
    shared arrays (float32, wire order; a single client's own arrays when B = 1); per client
    its new personal state, its training transitions and its mean loss before the update (0.0
    without training data); with `per_client`, each client's own new shared arrays
    (`clients[b]`, float32, wire order), else None."""

    shared: list[np.ndarray]
    personal: list[dict[str, np.ndarray]]
    num_examples: list[int]
    losses: list[float]
    clients: list[list[np.ndarray]] | None = None


def sgd_update(
    model_cfg: ModelConfig,
    fed: FederationConfig,
    item_embeddings: torch.Tensor,
    shared: list[np.ndarray],
    personal: list[dict | None],
    data: list[UserData],
    weights: list[float],
    seeds: list[int],
    shared_seed: int,
    per_client: bool = False,
) -> CohortUpdate:
    """The `sgd` recipe for a cohort of B clients that all received the head `shared`.

    Each client b reconstructs its personal vector (`fed.reconstruct_steps` steps at
    `fed.reconstruct_lr`, from `personal[b]`), cuts its training windows and draws its dropout
    masks from `seeds[b]` (the catalog's mask from `shared_seed`, as every client of the round
    does), and takes `fed.local_steps` SGD steps at `fed.local_lr` on the mean next-item loss
    of its own positions. The result's `shared` is Σ_b w_b·θ_b / Σ_b w_b with `weights` w
    (clients without positions weigh 0): for one step that is one backward pass over the
    cohort's windows, which is what makes a batched round cheap. Several steps change every
    client's head differently, so they need B = 1.

    `per_client` (one local step): also each client's own new head θ − η·∇L_b, what that
    client computes alone (what user-level DP clips per client): one catalog pass, a forward
    and backward pass per client over its own windows, and the adapter's part as a batched
    vector-Jacobian product (`_client_heads`); memory grows with B × the head's size.
    """
    if fed.local_steps > 1 and len(data) > 1:
        raise ValueError("several local steps per client have no batched form; pass one client")
    if per_client and fed.local_steps != 1:
        raise ValueError("per-client heads are computed for one local step only")
    model = FedRecModel(model_cfg, num_users=len(data))
    model.load_shared_arrays(shared)
    start = torch.stack([personal_state.initial(p, model_cfg.dim) for p in personal])
    sequences = [d.train_items for d in data]
    model.eval()
    with torch.no_grad():
        items = model.item_vectors(item_embeddings)
    vectors = personal_state.reconstruct(model, items, sequences, start,
                                         fed.reconstruct_steps, fed.reconstruct_lr)
    with torch.no_grad():
        model.personal.vectors.weight.copy_(vectors)
    windows, owners, generators = _windows(model_cfg, sequences, seeds)
    window_counts = torch.bincount(owners, minlength=len(data)).tolist()
    catalog = torch.Generator().manual_seed(shared_seed)

    def masks() -> DropoutMasks:  # one step's: each client's from its own generator
        return DropoutMasks(
            DropoutMasks.catalog_mask(model_cfg, len(item_embeddings), catalog),
            torch.cat([DropoutMasks.encoder_masks(model_cfg, n, model_cfg.max_history, g)
                       for n, g in zip(window_counts, generators)], dim=1))

    params = model.shared_parameters()
    model.train()
    personal_out = [personal_state.as_state(v) for v in vectors]
    num_examples = [max(0, len(s) - 1) for s in sequences]
    if per_client:
        heads, losses = _client_heads(model, item_embeddings, windows, window_counts,
                                      masks() if len(windows) else None, fed.local_lr, shared)
        w = np.asarray(weights, np.float64) * (np.asarray(window_counts) > 0)
        mean = ([np.average([h[i] for h in heads], axis=0, weights=w).astype(np.float32)
                 for i in range(len(shared))] if w.sum() > 0 else heads[0])
        return CohortUpdate(mean, personal_out, num_examples, losses, heads)
    losses = [0.0] * len(data)
    for step in range(fed.local_steps if len(windows) else 0):
        position_losses, rows = next_item_losses(model, item_embeddings, windows, owners,
                                                 masks())
        per_client_loss, counts = per_owner_means(position_losses, owners[rows], len(data))
        w = torch.tensor(weights, dtype=torch.float32) * (counts > 0)
        if step == 0:
            losses = [x if c > 0 else 0.0
                      for x, c in zip(per_client_loss.tolist(), counts.tolist())]
        if w.sum() == 0:
            break
        objective = (per_client_loss * w).sum() / w.sum()
        grads = torch.autograd.grad(objective, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(fed.local_lr * g)
    return CohortUpdate(model.shared_arrays(), personal_out, num_examples, losses)


CLIENT_CHUNK = 64  # clients whose gradients w.r.t. the catalog's item vectors are held at once


def _client_heads(model: FedRecModel, item_embeddings: torch.Tensor, windows: torch.Tensor,
                  window_counts: list[int], masks: DropoutMasks | None, lr: float,
                  shared: list[np.ndarray]) -> tuple[list[list[np.ndarray]], list[float]]:
    """Per client b, its head after one SGD step on its own mean loss, θ − lr·∇L_b (float32
    arrays, wire order), and L_b (0.0 for a client without positions, which keeps `shared`).
    `windows` are grouped by client, `window_counts[b]` of them for client b.

    One catalog pass V = adapter(catalog) serves every client: per client, a backward pass
    over its own windows gives the encoder's gradient and ∂L_b/∂V (n, dim); the adapter's
    gradients of `CLIENT_CHUNK` clients at a time are one batched vector-Jacobian product
    with that pass (`fedrec.client.dp.adapter_items`)."""
    from fedrec.client.dp import TrainedPart, adapter_items

    received = [np.array(a, np.float32) for a in shared]  # copies: never the caller's arrays
    heads, losses = [received] * len(window_counts), [0.0] * len(window_counts)
    if masks is None:
        return heads, losses
    items, pullback = adapter_items(model, item_embeddings * masks.catalog,
                                    TrainedPart(model, "all"))
    items.requires_grad_(True)
    encoder = {n: p for n, p in model.named_parameters() if n.startswith("encoder.")}
    names = list(model.shared_state())
    pending: list[tuple[int, dict, torch.Tensor]] = []  # (client, encoder grads, ∂L_b/∂V)

    def finish_pending() -> None:
        adapter = pullback(torch.stack([d_v for _, _, d_v in pending]))
        for k, (b, grads, _) in enumerate(pending):
            grads = grads | {n: g[k] for n, g in adapter.items()}
            heads[b] = [theta - lr * grads[n].numpy() for theta, n in zip(received, names)]
        pending.clear()

    lo = 0
    for b, n in enumerate(window_counts):
        rows = slice(lo, lo + n)
        lo += n
        if n == 0:
            continue
        position_losses, _ = next_item_losses(
            model, item_embeddings, windows[rows], torch.full((n,), b),
            DropoutMasks(masks.catalog, masks.encoder[:, rows]), items=items)
        if len(position_losses) == 0:
            continue
        loss = position_losses.mean()
        *grads, d_v = torch.autograd.grad(loss, [*encoder.values(), items])
        pending.append((b, dict(zip(encoder, grads)), d_v))
        losses[b] = loss.item()
        if len(pending) == CLIENT_CHUNK:
            finish_pending()
    if pending:
        finish_pending()
    return heads, losses


def _windows(model_cfg: ModelConfig, sequences: list[np.ndarray], seeds: list[int]):
    """Every client's training windows, cut with its own generator as central training cuts
    them (the newest window and a grid from a random offset); the owner row of each window
    (W,); and each client's torch generator for its dropout masks."""
    length = model_cfg.max_history
    rows, owners = [np.zeros((0, length + 1), np.int64)], [np.zeros(0, np.int64)]
    for b, (sequence, seed) in enumerate(zip(sequences, seeds)):
        w, _ = make_windows([sequence], np.zeros(1, np.int64), length, np.random.default_rng(seed))
        rows.append(w)
        owners.append(np.full(len(w), b, np.int64))
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    return torch.from_numpy(np.concatenate(rows)), torch.from_numpy(np.concatenate(owners)), generators


def fit_local(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    item_embeddings: torch.Tensor,
    shared: list[np.ndarray],
    personal: dict | None,
    data: UserData,
    epochs: int,
    seed: int,
    proximal_mu: float = 0.0,
) -> tuple[list[np.ndarray], dict[str, np.ndarray], int, float]:
    """Train on this user's sequence for `epochs` local epochs.

    Returns (new shared arrays, new personal state, number of training positions, mean loss).
    With `proximal_mu` > 0 adds FedProx's (mu/2)·||θ − θ_global||² on the shared parameters.
    """
    torch.manual_seed(seed)
    model = build_model(model_cfg, shared, personal)
    regularizer = None
    if proximal_mu > 0:
        anchor = [p.detach().clone() for p in model.shared_parameters()]

        def regularizer():
            return 0.5 * proximal_mu * sum(
                (p - a).pow(2).sum() for p, a in zip(model.shared_parameters(), anchor))

    cfg = replace(train_cfg, epochs=epochs, seed=seed)
    losses = train(model, item_embeddings, [data.train_items], np.zeros(1, np.int64), cfg,
                   make_optimizer(model, cfg), regularizer=regularizer)
    num_examples = max(0, len(data.train_items) - 1)
    new_personal = personal_state.as_state(model.personal.vectors.weight)
    return model.shared_arrays(), new_personal, num_examples, float(np.mean(losses or [0.0]))


def evaluate_local(
    model_cfg: ModelConfig,
    item_embeddings: torch.Tensor,
    shared: list[np.ndarray],
    personal: dict | None,
    data: UserData,
    reconstruct_steps: int = 0,
    reconstruct_lr: float = 0.0,
) -> dict[str, float] | None:
    """Rank the whole catalog on the device for the user's test item (excluding the user's
    earlier items), with the same metric code as central evaluation, after reconstructing the
    personal vector against `shared` (`reconstruct_steps` steps; 0: as stored). None if the
    user has no test item."""
    if data.test_item < 0:
        return None
    model = personal_state.personalized_model(model_cfg, item_embeddings, shared, [personal],
                                              [data.train_items], reconstruct_steps,
                                              reconstruct_lr)
    history = data.history("test")
    scores = score_catalog(model, item_embeddings, np.zeros(1, np.int64), [history]).numpy()
    exclude = history_mask([history], scores.shape[1])
    greater, ties = metrics.target_ranks(scores, np.array([data.test_item]), exclude)
    return {name: float(v[0]) for name, v in metrics.rank_metrics(greater, ties).items()}
