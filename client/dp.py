"""Differentially private local training on a device.

Record-level (`fit_private`): DP-SGD with Opacus over the user's disjoint training windows
(`fedrec.common.train.disjoint_windows`), Poisson sampling, per-sample clipping to
`max_grad_norm` and Gaussian noise σ·max_grad_norm per step. The whole model trains through the
DP optimizer, the personal vector included: it is never released, but it feeds every later
gradient, so training it without DP would leak each record into every released update.

User-level (`clip_and_noise`): the update θ_local − θ_global, restricted to the released
subspace (`Subspace`, `privacy.trained`), is clipped to norm C and each of the m sampled
clients adds N(0, (σC)²/m) to each of its coordinates, so the sum of the m updates carries
N(0, (σC)²).

All noise and sampling come from generators seeded with a secret seed (`secrets`), never from
the run's public seed: a server that could regenerate the noise could subtract it.
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedrec.client import noise as noise_module
from fedrec.client.local import UserData, build_model
from fedrec.client.personal import as_state
from fedrec.common.model import DropoutMasks, FedRecModel, ModelConfig
from fedrec.common.privacy import PrivacyConfig, noise_share_std
from fedrec.common.train import TrainConfig, disjoint_windows, make_optimizer, window_loss


@dataclass(frozen=True)
class DPPlan:
    """The mechanism of one local round: `steps` DP-SGD steps at Poisson rate `sample_rate`
    over `records` windows (q = 1 / ceil(records / batch_size), Opacus' convention)."""

    records: int
    sample_rate: float
    steps: int


def plan(data: UserData, train_cfg: TrainConfig, privacy: PrivacyConfig, epochs: int) -> DPPlan:
    records = len(disjoint_windows(data.train_items, privacy.window))
    sample_rate = 1.0 / max(1, math.ceil(records / train_cfg.batch_size))
    # Opacus' Poisson sampler takes int(1 / q) steps per epoch (int(1 / (1/93)) == 92)
    return DPPlan(records, sample_rate, epochs * int(1 / sample_rate))


class WindowLoss(nn.Module):
    """The model as Opacus sees it: (windows (B, W+1), users (B,)) -> per-window losses (B,),
    every term computed from its own window and its own sampled candidates only."""

    def __init__(self, model: FedRecModel, item_embeddings: torch.Tensor, negatives: int,
                 generator: torch.Generator):
        super().__init__()
        self.model, self.negatives, self.generator = model, negatives, generator
        self.register_buffer("item_embeddings", item_embeddings, persistent=False)

    def forward(self, windows: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return window_loss(self.model, self.item_embeddings, windows, users, self.negatives,
                           self.generator, reduction="none")


def fit_private(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    privacy: PrivacyConfig,
    item_embeddings: torch.Tensor,
    shared: list[np.ndarray],
    personal: dict | None,
    data: UserData,
    epochs: int,
    noise_multiplier: float,
    secret_seed: int,
) -> tuple[list[np.ndarray], dict[str, np.ndarray], list[tuple[float, float, int]]]:
    """One round of record-level DP-SGD. Returns (new shared arrays, new personal state, the
    mechanism history Opacus' accountant recorded: [(σ, q, steps)])."""
    from opacus import PrivacyEngine

    torch.manual_seed(secret_seed)  # dropout and negatives: private randomness too
    model = build_model(model_cfg, shared, personal)
    cfg = replace(train_cfg, epochs=epochs)
    windows = torch.from_numpy(disjoint_windows(data.train_items, privacy.window))
    dataset = TensorDataset(windows, torch.zeros(len(windows), dtype=torch.long))
    sampling = torch.Generator().manual_seed(secret_seed + 1)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, generator=sampling)
    module = WindowLoss(model, item_embeddings, privacy.negatives,
                        torch.Generator().manual_seed(secret_seed + 2))
    engine = PrivacyEngine(accountant=privacy.accountant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus' notes on secure RNG and full backward hooks
        dp_module, optimizer, dp_loader = engine.make_private(
            module=module, optimizer=make_optimizer(model, cfg), data_loader=loader,
            noise_multiplier=noise_multiplier, max_grad_norm=privacy.max_grad_norm,
            poisson_sampling=True, noise_generator=torch.Generator().manual_seed(secret_seed + 3),
        )
    dp_module.train()
    with warnings.catch_warnings():
        # the inputs are frozen embeddings, so module-level backward hooks see no input grads
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(epochs):
            for batch_windows, batch_users in dp_loader:
                losses = dp_module(batch_windows, batch_users)
                loss = losses.sum() / max(1, len(losses))  # Poisson batches can be empty
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    history = [(float(s), float(q), int(n)) for s, q, n in engine.accountant.history]
    dp_module.to_standard_module()  # remove Opacus' hooks: nothing of the wrapper survives
    new_personal = as_state(model.personal.vectors.weight)
    return model.shared_arrays(), new_personal, history


def _norm(arrays: list[np.ndarray]) -> float:
    """The L2 norm of several arrays together."""
    return math.sqrt(sum(float(np.sum(a * a)) for a in arrays))


def _update(local: list[np.ndarray], global_: list[np.ndarray]) -> tuple[list, float]:
    """(θ_local − θ_global in float64, its L2 norm)."""
    delta = [loc.astype(np.float64) - glo for loc, glo in zip(local, global_)]
    return delta, _norm(delta)


def clip_update(local: list[np.ndarray], global_: list[np.ndarray], bound: float
                ) -> list[np.ndarray]:
    """θ_global + clip_bound(θ_local − θ_global) in float64 (rounding to float32 could push the
    norm a hair over `bound`); the update's L2 norm is ≤ `bound`."""
    delta, norm = _update(local, global_)
    scale = min(1.0, bound / norm) if norm > 0 else 1.0
    return [glo.astype(np.float64) + d * scale for glo, d in zip(global_, delta)]


class Subspace:
    """What user-level DP releases of the shared head (`privacy.trained`), as a subspace of
    the wire arrays: per array, every coordinate (`all`), none (the array stays as received),
    or — an expert's weight under `lowrank` — the moves within the public catalog basis B
    (rank, input_dim; orthonormal rows): ΔW·BᵀB, whose coordinates are ΔW·Bᵀ. B is an
    isometry, so a norm in coordinates is the norm of the arrays; noise is drawn in
    coordinates (rank per row instead of input_dim)."""

    def __init__(self, names: list[str], trained: str, basis: np.ndarray | None = None):
        experts = [n.startswith("adapter.experts.") and n.endswith(".weight") for n in names]
        encoder = [n.startswith("encoder.") for n in names]
        if trained == "all":
            self.kinds = ["all"] * len(names)
        elif trained == "encoder":
            self.kinds = ["all" if e else "none" for e in encoder]
        elif trained == "lowrank":
            self.kinds = ["basis" if x else "all" for x in experts]
        else:
            raise ValueError(f"privacy.trained = {trained!r}; expected lowrank, encoder or all")
        self.basis = None if basis is None else np.asarray(basis, np.float64)
        if "basis" in self.kinds and self.basis is None:
            raise ValueError("privacy.trained = 'lowrank' needs the catalog basis")

    def project(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Each array's component in the subspace (float64)."""
        b = self.basis
        return [a if k == "all" else np.zeros_like(a) if k == "none" else (a @ b.T) @ b
                for a, k in zip(arrays, self.kinds)]

    def noise(self, shapes: list[tuple], std: float, seed: int, secure: bool
              ) -> list[np.ndarray]:
        """N(0, std²) on every coordinate of the subspace, as arrays of `shapes` (float64);
        stream i for array i (a function of the secret seed, like every noise share)."""
        out = []
        for i, (shape, kind) in enumerate(zip(shapes, self.kinds)):
            if kind == "all":
                out.append(noise_module.gaussian(shape, std, seed, i, secure))
            elif kind == "none":
                out.append(np.zeros(shape))
            else:
                rows = noise_module.gaussian((shape[0], len(self.basis)), std, seed, i, secure)
                out.append(rows @ self.basis)
        return out


def clip_and_noise(
    local: list[np.ndarray], global_: list[np.ndarray], clip: float, noise_std: float,
    secret_seed: int, secure: bool = False, subspace: Subspace | None = None,
) -> tuple[list[np.ndarray], float]:
    """User-level DP on the device: θ_global + clip_C(P(θ_local − θ_global)) + N(0, noise_std²)
    per coordinate of the released subspace P (`subspace`; None: every coordinate), with
    noise_std = σC/√m for m clients per round (`secure`: the cryptographic sampler of
    `fedrec.client.noise`). Returns (the arrays to send, the released update's norm before
    clipping — for local diagnostics only, never sent)."""
    subspace = subspace or Subspace([""] * len(local), "all")
    delta = subspace.project([loc.astype(np.float64) - glo for loc, glo in zip(local, global_)])
    norm = _norm(delta)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    noise = subspace.noise([d.shape for d in delta], noise_std, secret_seed, secure)
    out = [(glo + d * scale + n).astype(np.float32)
           for glo, d, n in zip(global_, delta, noise)]
    return out, norm


def user_subspace(privacy: PrivacyConfig, names: list[str],
                  item_embeddings: torch.Tensor) -> Subspace:
    """The subspace user-level DP releases (`privacy.released`; the catalog basis cached per
    catalog tensor and rank: an SVD of the catalog is ≈ 50 ms)."""
    basis = None
    if privacy.released == "lowrank":
        key = (id(item_embeddings), privacy.rank)
        catalog, basis = _BASES.get(key, (lambda: None, None))
        if catalog() is not item_embeddings:  # not cached, or another tensor at that id
            basis = catalog_basis(item_embeddings, privacy.rank).numpy()
            if len(_BASES) >= 4:
                _BASES.pop(next(iter(_BASES)))
            _BASES[key] = (weakref.ref(item_embeddings), basis)
    return Subspace(names, privacy.released, basis)


# (id of a catalog tensor, rank) -> (a weak reference to that tensor, its basis); a few at most
_BASES: dict = {}


# --- distributed DP-FedSGD: per-record clipped gradient sums ---------------------------------
RECORD_CHUNK = 128  # records whose per-record gradients are held at once (memory bound)


def _row_norms(tensors) -> torch.Tensor:
    """(R,) the L2 norm of each row over several (R, ...) tensors together."""
    return torch.sqrt(sum(t.flatten(1).pow(2).sum(1) for t in tensors))


def _scale_rows(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(R, ...) `t` with row r multiplied by `scale[r]`."""
    return t * scale.view(-1, *[1] * (t.dim() - 1))


def catalog_basis(item_embeddings: torch.Tensor, rank: int) -> torch.Tensor:
    """(rank, input_dim) orthonormal rows: the catalog embeddings' top principal directions.
    A function of the public catalog only, so every device and the server compute the same
    subspace without seeing anyone's data."""
    centered = item_embeddings.double() - item_embeddings.double().mean(0)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    return vh[:rank].float()


class TrainedPart:
    """What DP-SGD trains of the shared head, as the coordinates per-record gradients are
    clipped and noised in (`privacy.trained`):

    - `all`: every shared parameter (exact, but each record's adapter gradient passes through
      the whole catalog: ≈ 2 s per round of 45 clients on this machine);
    - `lowrank` (default): the sequence encoder, the adapter's gate, norm and expert biases,
      and each expert's weight moved only within the catalog's top-`rank` principal input
      directions B: W_e ← W_e + A_e·B with A_e (dim, rank) the DP-trained coordinates;
    - `encoder`: the sequence encoder alone.

    The rest of the head stays as received. Coordinates map back to the shared arrays'
    shapes by a public linear map (post-processing)."""

    def __init__(self, model: FedRecModel, trained: str, basis: torch.Tensor | None = None):
        self.kind, self.basis = trained, basis
        names = [n for n, _ in model.named_parameters() if not n.startswith("personal.")]
        if trained == "all":
            self.names = names
        elif trained == "encoder":
            self.names = [n for n in names if n.startswith("encoder.")]
        else:
            self.names = [n for n in names if not (n.startswith("adapter.experts.")
                                                   and n.endswith(".weight"))]
        self.lowrank = [f"lowrank.{e}" for e in range(len(model.adapter.experts))
                        ] if trained == "lowrank" else []

    def coordinates(self, model: FedRecModel) -> dict[str, torch.Tensor]:
        """The trained coordinates at the received head (A_e = 0)."""
        params = {n: p.detach() for n, p in model.named_parameters() if n in self.names}
        for name in self.lowrank:
            params[name] = torch.zeros(model.cfg.dim, len(self.basis))
        return params

    def to_arrays(self, model: FedRecModel, coords: dict[str, torch.Tensor]) -> list[np.ndarray]:
        """A direction in coordinates -> one array per shared array (wire order), zeros for
        what is not trained."""
        out = []
        for name, value in model.shared_state().items():
            if name in coords:
                out.append(coords[name].numpy())
            elif self.lowrank and name.startswith("adapter.experts.") and name.endswith(".weight"):
                a = coords[f"lowrank.{name.split('.')[2]}"]
                out.append((a @ self.basis.to(a.dtype)).numpy())
            else:
                out.append(np.zeros(tuple(value.shape), np.float32))
        return out


def adapter_items(model: FedRecModel, catalog: torch.Tensor, part: TrainedPart):
    """The item vectors (n, dim) of `catalog` at the received head, and a function from the
    per-record gradients w.r.t. them (R, n, dim) to the per-record gradients of the adapter's
    trained coordinates ({name: (R, *shape)})."""
    from torch.func import functional_call, vjp, vmap
    from torch.nn import functional as F

    adapter = model.adapter
    if part.lowrank:
        return _lowrank_adapter(adapter, catalog, part.basis)
    coords = {n.removeprefix("adapter."): v for n, v in part.coordinates(model).items()
              if n.startswith("adapter.")}
    keep = torch.ones(()).expand_as(catalog)  # `catalog` carries the round's dropout already
    items, pullback = vjp(
        lambda c: F.normalize(functional_call(adapter, c, (catalog, keep)), dim=-1), coords)

    def gradients(d_items):
        return {f"adapter.{n}": g for n, g in vmap(pullback)(d_items)[0].items()}
    return items.detach(), gradients


def _lowrank_adapter(adapter, catalog: torch.Tensor, basis: torch.Tensor):
    """`adapter_items` for `lowrank`, with the backward pass written out: one catalog pass,
    then per record only (n, dim)-sized products (the generic vector-Jacobian product over the
    mixture of experts costs ≈ 5× more per record). Verified against autograd in the tests."""
    with torch.no_grad():
        weights = torch.softmax(adapter.gate(catalog), dim=-1)  # (n, E)
        outputs = torch.stack([ex(catalog) for ex in adapter.experts], dim=-1)  # (n, dim, E)
        mixed = (outputs * weights.unsqueeze(-2)).sum(-1)
        mean, var = mixed.mean(-1, keepdim=True), mixed.var(-1, unbiased=False, keepdim=True)
        inv_std = torch.rsqrt(var + adapter.norm.eps)
        normalized = (mixed - mean) * inv_std  # x̂
        layer = normalized * adapter.norm.weight + adapter.norm.bias
        length = layer.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        items = layer / length
    experts, rank = weights.shape[1], basis.shape[0]
    weighted_basis = (weights.unsqueeze(-1) * (catalog @ basis.T).unsqueeze(1)
                      ).reshape(len(catalog), experts * rank)  # (n, E·rank): w_ie · (B e_i)

    def gradients(d_items):  # (R, n, dim)
        d_layer = (d_items - items * (d_items * items).sum(-1, keepdim=True)) / length
        out = {"adapter.norm.weight": torch.einsum("rnd,nd->rd", d_layer, normalized),
               "adapter.norm.bias": d_layer.sum(1)}
        d_hat = d_layer * adapter.norm.weight.detach()
        d_mixed = inv_std * (d_hat - d_hat.mean(-1, keepdim=True)
                             - normalized * (d_hat * normalized).mean(-1, keepdim=True))
        lowrank = torch.einsum("rnd,nq->rdq", d_mixed, weighted_basis
                               ).reshape(len(d_items), -1, experts, rank)
        biases = torch.einsum("rnd,ne->rde", d_mixed, weights)
        for e in range(experts):
            out[f"lowrank.{e}"] = lowrank[:, :, e]
            out[f"adapter.experts.{e}.bias"] = biases[:, :, e]
        d_weights = torch.einsum("rnd,nde->rne", d_mixed, outputs)
        d_logits = weights * (d_weights - (d_weights * weights).sum(-1, keepdim=True))
        out["adapter.gate.weight"] = torch.einsum("rne,nk->rek", d_logits, catalog)
        out["adapter.gate.bias"] = d_logits.sum(1)
        return out
    return items, gradients


class _RecordLoss(nn.Module):
    """One record's loss for `torch.func`: the mean full-catalog next-item cross-entropy over
    the valid positions of one window (L+1,) given the item vectors (n, dim), with the
    personal vector at zero — so the gradient is a function of this record and public inputs
    only."""

    def __init__(self, model: FedRecModel):
        super().__init__()
        self.model = model

    def forward(self, items: torch.Tensor, window: torch.Tensor, keep: torch.Tensor):
        from torch.nn import functional as F

        from fedrec.common.model import gather_padded

        model = self.model
        inputs, targets = window[None, :-1], window[None, 1:]
        valid_in = inputs >= 0
        mask = (valid_in & (targets >= 0)).reshape(-1).float()
        states = model.sequence_states(gather_padded(items, inputs), valid_in, keep[:, None])
        logits = model.logits(F.normalize(states, dim=-1), items).reshape(-1, items.shape[0])
        losses = F.cross_entropy(logits, targets.clamp_min(0).reshape(-1), reduction="none")
        return (losses * mask).sum() / mask.sum().clamp_min(1.0)


def clipped_gradient_sums(
    model: FedRecModel,
    item_embeddings: torch.Tensor,
    windows: torch.Tensor,
    owners: torch.Tensor,
    clients: int,
    clip: float,
    part: TrainedPart,
    keep: torch.Tensor,
    catalog_keep: torch.Tensor | None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per client b, Σ over its records r of clip_C(∇ ℓ_r): every record's gradient in the
    trained coordinates (`part`) scaled to L2 norm ≤ `clip` and summed with its owner's.
    `windows` (R, L+1) records, `owners` (R,) their client rows, `keep`
    (1 + 2·num_layers, R, L, dim) encoder dropout masks, `catalog_keep` the round's adapter
    input mask. Removing or changing one record changes its client's sum by at most `clip`.

    A record's gradient has two parts: the encoder's, and the adapter's through the item
    vectors V. The catalog pass is done once: per record only ∂ℓ_r/∂V (n, dim) is taken, and
    the adapter's part is its vector-Jacobian product with the one catalog pass.
    Returns ({coordinate: (clients, *shape)}, (R,) each record's norm before clipping)."""
    from torch.func import functional_call, grad, vmap

    coords = part.coordinates(model)
    encoder = {n: v for n, v in coords.items() if n.startswith("encoder.")}
    frozen = {f"model.{n}": p.detach() for n, p in model.named_parameters()
              if n not in encoder}
    if catalog_keep is None:  # no dropout (the module's own would draw unseeded masks)
        catalog_keep = torch.ones_like(item_embeddings)
    catalog = item_embeddings * catalog_keep
    if part.kind == "encoder":
        pullback = None
        with torch.no_grad():
            items = model.item_vectors(item_embeddings, catalog_keep)
    else:
        items, pullback = adapter_items(model, catalog, part)
    loss = _RecordLoss(model)

    def one(enc, v, window, k):
        named = {f"model.{n}": t for n, t in enc.items()} | frozen
        return functional_call(loss, named, (v, window, k))

    per_record = vmap(grad(one, argnums=(0, 1)), in_dims=(None, None, 0, 1))
    sums = {n: torch.zeros((clients, *p.shape)) for n, p in coords.items()}
    norms = []
    for lo in range(0, len(windows), RECORD_CHUNK):
        grads, d_items = per_record(encoder, items, windows[lo:lo + RECORD_CHUNK],
                                    keep[:, lo:lo + RECORD_CHUNK])
        if pullback is not None:
            grads = grads | pullback(d_items)
        norm = _row_norms(grads.values())
        scale = (clip / norm.clamp_min(1e-12)).clamp(max=1.0)
        rows = owners[lo:lo + RECORD_CHUNK]
        for n, g in grads.items():
            sums[n].index_add_(0, rows, _scale_rows(g, scale))
        norms.append(norm)
    return sums, torch.cat(norms) if norms else torch.zeros(0)


def distributed_update(
    model_cfg: ModelConfig,
    privacy: PrivacyConfig,
    item_embeddings: torch.Tensor,
    shared: list[np.ndarray],
    data: list[UserData],
    seeds: list[int],
    shared_seed: int,
    train: list[bool],
) -> list[np.ndarray]:
    """Distributed DP-FedSGD for B clients that received the head `shared`: the mean over
    clients b of θ − (S_b + N_b), float64 in wire order.

    S_b: client b's records (disjoint windows of `privacy.window` + 1 items), each kept with
    probability `privacy.sample_rate` (Poisson, from its secret `seeds[b]`), each record's
    gradient in the `privacy.trained` coordinates clipped to C = `max_grad_norm`
    (`clipped_gradient_sums`), summed, and the sum scaled into the ball of radius
    `max_records`·C (a projection: one record still moves it by ≤ C). A client with
    `train[b]` False (no budget left) sends S_b = 0. N_b ~ N(0, (σC)²/shares) per coordinate
    from the same secret seed: the sum of `shares` honest shares carries the noise of one
    central DP-SGD step, N(0, (σC)²). The personal vector is zero in every record's gradient
    (it never enters a release, so it needs neither clipping nor noise). B = 1 is what a
    device sends; B > 1 is what SecAgg+ reveals to the server for those clients."""
    model = FedRecModel(model_cfg, num_users=1)
    model.load_shared_arrays(shared)
    model.train()
    part = TrainedPart(model, privacy.released,
                       catalog_basis(item_embeddings, privacy.rank)
                       if privacy.released == "lowrank" else None)
    windows, owners, keeps = [], [], []
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    for b, (user, generator, trains) in enumerate(zip(data, generators, train)):
        records = torch.from_numpy(disjoint_windows(user.train_items, privacy.window))
        if trains and len(records):
            chosen = torch.rand(len(records), generator=generator) < privacy.sample_rate
            records = records[chosen]
        else:
            records = records[:0]
        windows.append(records)
        owners.append(torch.full((len(records),), b, dtype=torch.long))
        keeps.append(DropoutMasks.encoder_masks(model_cfg, len(records), privacy.window,
                                                generator))
    catalog = DropoutMasks.catalog_mask(model_cfg, len(item_embeddings),
                                        torch.Generator().manual_seed(shared_seed))
    sums, _ = clipped_gradient_sums(model, item_embeddings, torch.cat(windows),
                                    torch.cat(owners), len(data), privacy.max_grad_norm, part,
                                    torch.cat(keeps, dim=1), catalog)
    bound = privacy.max_records * privacy.max_grad_norm
    scale = (bound / _row_norms(sums.values()).clamp_min(1e-12)).clamp(max=1.0).double()
    std = noise_share_std(privacy, privacy.shares)
    total = {}
    for stream, (name, s) in enumerate(sums.items()):
        noise = np.zeros(tuple(s.shape[1:]))  # the shares' sum, one share at a time in memory
        for seed in seeds:
            noise += noise_module.gaussian(tuple(s.shape[1:]), std, seed, stream,
                                           privacy.secure_rng)
        total[name] = -(_scale_rows(s.double(), scale).sum(0) + torch.from_numpy(noise)
                        ) / len(data)
    step = part.to_arrays(model, total)
    return [np.asarray(a, np.float64) + d for a, d in zip(shared, step)]
