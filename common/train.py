"""The one training loop for the fedrec model: central training and every client use it.

Samples are windows of a user's chronological training sequence; the model predicts each next
item from the items before it (causal), with a softmax over the full catalog (`negatives=0`) or
over per-sample candidate sets of 1 positive + `negatives` sampled items (the form DP-SGD needs:
every sample then has its own adapter inputs, so per-sample gradients are exact).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedrec.common.hparams import TrainConfig
from fedrec.common.model import DropoutMasks, FedRecModel, gather_padded


def make_windows(
    sequences: list[np.ndarray], users: np.ndarray, length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cut each sequence into windows of `length + 1` items (inputs + next-item targets): one
    ending at the newest item, and a grid stepping back by `length` from a random offset.

    Returns windows (N, length + 1) int64 left-padded with -1, and their users (N,).
    """
    rows, owners = [], []
    for user, seq in zip(users, sequences):
        if len(seq) < 2:
            continue
        offset = int(rng.integers(0, length))
        for end in sorted({len(seq), *range(len(seq) - offset, 1, -length)}):
            chunk = seq[max(0, end - length - 1) : end]
            row = np.full(length + 1, -1, np.int64)
            row[length + 1 - len(chunk) :] = chunk
            rows.append(row)
            owners.append(user)
    if not rows:
        return np.zeros((0, length + 1), np.int64), np.zeros(0, np.int64)
    return np.stack(rows), np.asarray(owners, np.int64)


def disjoint_windows(sequence: np.ndarray, length: int) -> np.ndarray:
    """Cut one chronological sequence into disjoint chunks of up to `length + 1` items, newest
    first, so every interaction belongs to exactly one window (a DP "record"); chunks shorter
    than 2 items are dropped. Returns (N, length + 1) int64, left-padded with -1."""
    rows = []
    for end in range(len(sequence), 1, -(length + 1)):
        chunk = sequence[max(0, end - length - 1) : end]
        if len(chunk) < 2:
            break
        row = np.full(length + 1, -1, np.int64)
        row[length + 1 - len(chunk) :] = chunk
        rows.append(row)
    return np.stack(rows[::-1]) if rows else np.zeros((0, length + 1), np.int64)


def sample_candidates(
    targets: torch.Tensor, n_items: int, negatives: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample candidate sets for `targets` (B, L): (B, L, 1 + negatives) item indices,
    the positive first (clamped to 0 at padding), then uniformly sampled negatives."""
    neg = torch.randint(0, n_items, (*targets.shape, negatives), generator=generator)
    return torch.cat([targets.clamp_min(0).unsqueeze(-1), neg], dim=-1)


def next_item_losses(
    model: FedRecModel,
    item_embeddings: torch.Tensor,
    windows: torch.Tensor,
    users: torch.Tensor,
    masks: DropoutMasks | None = None,
    items: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-catalog next-item cross-entropy at every valid position of `windows` (B, L+1),
    with one adapter pass over the catalog shared by the batch. `users`: (B,) personal-vector
    rows; `masks`: explicit dropout (None: the model's own); `items`: that catalog pass, when
    several calls share one (else computed here). Returns (losses (P,), the window of each
    loss (P,)), P = the number of valid positions."""
    inputs, targets = windows[:, :-1], windows[:, 1:]
    valid_in = inputs >= 0
    mask = valid_in & (targets >= 0)
    if items is None:
        items = model.item_vectors(item_embeddings, None if masks is None else masks.catalog)
    states = model.sequence_states(gather_padded(items, inputs), valid_in,
                                   None if masks is None else masks.encoder)
    user_vectors = model.user_vectors(states, users)[mask]  # (P, dim): real positions only
    losses = F.cross_entropy(model.logits(user_vectors, items), targets[mask], reduction="none")
    return losses, mask.nonzero()[:, 0]


def window_loss(
    model: FedRecModel,
    item_embeddings: torch.Tensor,
    windows: torch.Tensor,
    users: torch.Tensor,
    negatives: int = 0,
    generator: torch.Generator | None = None,
    reduction: str = "position",
    candidates: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-item cross-entropy over the valid positions of `windows` (B, L+1).

    `reduction="position"`: the mean over all valid positions of the batch. `"sample"`: each
    window's own mean over its positions, then the mean over windows, so every window's
    gradient depends on that window alone (what per-sample clipping needs); `"none"`: those
    per-window means, (B,). Sampled candidates (`negatives` > 0, or given `candidates`
    (B, L, C)) keep every computation per sample; the full-catalog softmax shares one adapter
    pass over the catalog across the batch, so it has no per-sample form.
    """
    inputs, targets = windows[:, :-1], windows[:, 1:]
    valid_in = inputs >= 0
    mask = valid_in & (targets >= 0)
    if candidates is None and negatives == 0:
        if reduction != "position":
            raise ValueError("the full-catalog softmax only supports reduction='position'")
        return next_item_losses(model, item_embeddings, windows, users)[0].mean()
    if candidates is None:
        candidates = sample_candidates(targets, item_embeddings.shape[0], negatives, generator)
    history_vectors = model.item_vectors(gather_padded(item_embeddings, inputs))
    history_vectors = history_vectors * valid_in.unsqueeze(-1)
    states = model.sequence_states(history_vectors, valid_in)
    cand_vectors = model.item_vectors(item_embeddings[candidates])  # (B, L, C, dim)
    logits = model.logits(model.user_vectors(states, users), cand_vectors)  # (B, L, C)
    accidental = torch.zeros_like(candidates, dtype=torch.bool)
    accidental[..., 1:] = candidates[..., 1:].eq(targets.unsqueeze(-1))  # a negative == positive
    logits = logits.masked_fill(accidental, float("-inf"))
    per_position = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        torch.zeros(logits.shape[0] * logits.shape[1], dtype=torch.long),
        reduction="none",
    ).view(mask.shape) * mask
    if reduction == "position":
        return per_position.sum() / mask.sum().clamp_min(1)
    per_sample = per_position.sum(1) / mask.sum(1).clamp_min(1)
    if reduction == "none":
        return per_sample
    return per_sample.sum() / max(1, len(per_sample))


def make_optimizer(model: FedRecModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        [
            {"params": model.shared_parameters(), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"params": model.personal_parameters(), "lr": cfg.personal_lr, "weight_decay": 0.0},
        ]
    )


def train(
    model: FedRecModel,
    item_embeddings: torch.Tensor,
    sequences: list[np.ndarray],
    users: np.ndarray,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer | None = None,
    progress=None,
    regularizer=None,
) -> list[float]:
    """Train `model` in place for `cfg.epochs` epochs over `sequences` (one per entry of `users`,
    the personal-vector row of its owner). Returns the mean loss per epoch.

    `progress`: optional callable(epoch, loss) called after every epoch. `regularizer`: optional
    callable() -> scalar tensor added to every batch's loss (e.g. FedProx's proximal term).
    """
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    optimizer = optimizer or make_optimizer(model, cfg)
    model.train()
    losses = []
    for epoch in range(cfg.epochs):
        windows, owners = make_windows(sequences, users, model.cfg.max_history, rng)
        order = rng.permutation(len(windows))
        total, count = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            loss = window_loss(
                model,
                item_embeddings,
                torch.from_numpy(windows[batch]),
                torch.from_numpy(owners[batch]),
                cfg.negatives,
                gen,
            )
            if regularizer is not None:
                loss = loss + regularizer()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(batch), count + len(batch)
        losses.append(total / max(1, count))
        if progress is not None:
            progress(epoch, losses[-1])
    return losses


def per_owner_means(losses: torch.Tensor, owners: torch.Tensor, n: int):
    """(n,) mean of `losses` (P,) per owner index in `owners` (P,) (0 where an owner has
    none), and (n,) counts: a sum of per-user (or per-client) means, each user weighted alike."""
    counts = torch.bincount(owners, minlength=n)
    sums = torch.zeros(n).index_add(0, owners, losses)
    return sums / counts.clamp_min(1), counts
