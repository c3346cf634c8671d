"""The fedrec model: frozen text embeddings -> shared adapter -> item vectors; a shared causal
sequence encoder over the user's recent item vectors; a personal vector per user.

    v_i            = adapter(e_i)                          item vectors, (n_items, dim)
    user_vector(u) = encoder(v_j1 .. v_jL)[last] + p_u     (dim,)
    score(u, i)    = <normalize(user_vector(u)), normalize(v_i)> / temperature

Only `shared` parameters (adapter + encoder) are ever federated or released; `personal` ones
(p_u) stay where they were trained. Every layer is nn.Linear / nn.LayerNorm / nn.Embedding, so
Opacus computes per-sample gradients for all of them without custom grad samplers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedrec.common.hparams import ModelConfig

PERSONAL_PREFIX = "personal."



class Adapter(nn.Module):
    """Mixture of linear experts over frozen embeddings (UniSRec's MoE adapter, KDD'22).

    (..., input_dim) -> (..., dim). Dense: no per-item parameters.
    """

    def __init__(self, input_dim: int, dim: int, num_experts: int, dropout: float):
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(input_dim, dim) for _ in range(num_experts))
        self.gate = nn.Linear(input_dim, num_experts)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, e: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """`keep`: an explicit dropout mask for `e` (see `DropoutMasks`); None: nn.Dropout."""
        e = self.dropout(e) if keep is None else e * keep
        weights = torch.softmax(self.gate(e), dim=-1)  # (..., E)
        experts = torch.stack([expert(e) for expert in self.experts], dim=-1)  # (..., dim, E)
        return self.norm((experts * weights.unsqueeze(-2)).sum(-1))


class CausalBlock(nn.Module):
    """Pre-norm transformer block with causal self-attention (nanoGPT-style, from Linear layers)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 2 * dim)
        self.ff2 = nn.Linear(2 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """`keep`: explicit dropout masks (2, B, L, dim) for the two residual branches."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        heads = lambda t: t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.num_heads)
        att = att.masked_fill(~attn_mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self._drop(self.proj(y), keep, 0)
        return x + self._drop(self.ff2(F.gelu(self.ff1(self.norm2(x)))), keep, 1)

    def _drop(self, t: torch.Tensor, keep: torch.Tensor | None, site: int) -> torch.Tensor:
        return self.dropout(t) if keep is None else t * keep[site]


class SequenceEncoder(nn.Module):
    """Causal attention over a left-padded history of item vectors: (B, L, dim) -> (B, L, dim)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.positions = nn.Embedding(cfg.max_history, cfg.dim)
        self.blocks = nn.ModuleList(
            CausalBlock(cfg.dim, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """`valid`: (B, L) bool, False at padding. Padded positions attend only to themselves.
        Positions count from the newest item (right-aligned), so a window shorter than
        `max_history` uses the same position of the newest item as a full-length history.
        `keep`: explicit dropout masks (1 + 2·num_layers, B, L, dim); None: nn.Dropout."""
        length = x.shape[1]
        offset = self.positions.num_embeddings - length
        pos = torch.arange(offset, offset + length, device=x.device).expand(x.shape[0], -1)
        x = x + self.positions(pos)
        x = self.dropout(x) if keep is None else x * keep[0]
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=x.device)
        mask = (causal & valid[:, None, None, :]) | eye  # (B, 1, L, L)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, None if keep is None else keep[1 + 2 * i : 3 + 2 * i])
        return self.norm(x)


class PersonalVectors(nn.Module):
    """p_u for `num_users` users (all users centrally; one on a device). Starts at zero."""

    def __init__(self, num_users: int, dim: int):
        super().__init__()
        self.vectors = nn.Embedding(num_users, dim)
        nn.init.zeros_(self.vectors.weight)

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.vectors(users)


class FedRecModel(nn.Module):
    """Shared adapter + sequence encoder, and personal vectors (`personal.*` parameters)."""

    def __init__(self, cfg: ModelConfig, num_users: int):
        super().__init__()
        self.cfg = cfg
        self.adapter = Adapter(cfg.input_dim, cfg.dim, cfg.num_experts, cfg.dropout)
        self.encoder = SequenceEncoder(cfg)
        self.personal = PersonalVectors(num_users, cfg.dim)

    # --- parameter groups -------------------------------------------------------------------
    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith(PERSONAL_PREFIX)]

    def personal_parameters(self) -> list[nn.Parameter]:
        return list(self.personal.parameters())

    def shared_state(self) -> dict[str, torch.Tensor]:
        """The federated part: adapter + encoder tensors, keyed by parameter name."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(PERSONAL_PREFIX)}

    def load_shared_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = set(self.shared_state())
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"shared state mismatch: missing {missing}, unexpected {extra}")
        self.load_state_dict(state, strict=False)

    def shared_arrays(self) -> list:
        """The shared state as float32 numpy arrays, in `shared_state()` key order (the wire
        order of every federated message)."""
        return [v.detach().cpu().numpy().astype("float32") for v in self.shared_state().values()]

    def load_shared_arrays(self, arrays: list) -> None:
        keys = list(self.shared_state())
        if len(arrays) != len(keys):
            raise ValueError(f"expected {len(keys)} shared arrays, got {len(arrays)}")
        self.load_shared_state({k: torch.as_tensor(a) for k, a in zip(keys, arrays)})

    # --- forward ----------------------------------------------------------------------------
    def item_vectors(self, item_embeddings: torch.Tensor,
                     keep: torch.Tensor | None = None) -> torch.Tensor:
        """(..., input_dim) frozen embeddings -> (..., dim) unit-norm item vectors. `keep`: an
        explicit dropout mask shaped like `item_embeddings` (None: the module's dropout)."""
        return F.normalize(self.adapter(item_embeddings, keep), dim=-1)

    def sequence_states(self, history_vectors: torch.Tensor, valid: torch.Tensor,
                        keep: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, dim) item vectors of a left-padded history -> (B, L, dim) states. `keep`:
        explicit dropout masks (`DropoutMasks.encoder`), or None for the modules' dropout."""
        return self.encoder(history_vectors, valid, keep)

    def user_vectors(self, states: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """Add the users' personal vectors to sequence states (B, [L,] dim) and normalize."""
        return combine(states, self.personal(users))

    def logits(self, user_vectors: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        """Scores user (…, dim) x items: (n, dim) -> (…, n); or (…, C, dim) -> (…, C)."""
        user_vectors = user_vectors / self.cfg.temperature  # scale the smaller operand
        if item_vectors.dim() == 2:
            return user_vectors @ item_vectors.T
        return (user_vectors.unsqueeze(-2) * item_vectors).sum(-1)


@dataclass(frozen=True)
class DropoutMasks:
    """Dropout drawn ahead of time, so that a computation batched over many clients uses
    exactly the masks each client would draw alone. Inverted-dropout keep masks (0 or
    1 / (1 − p)): `catalog` (n_items, input_dim) for the adapter's input, `encoder`
    (1 + 2·num_layers, B, L, dim) for the sequence encoder's sites, one row per window."""

    catalog: torch.Tensor
    encoder: torch.Tensor

    @staticmethod
    def catalog_mask(cfg: ModelConfig, num_items: int, generator: torch.Generator) -> torch.Tensor:
        return _keep((num_items, cfg.input_dim), cfg.dropout, generator)

    @staticmethod
    def encoder_masks(cfg: ModelConfig, windows: int, length: int,
                      generator: torch.Generator) -> torch.Tensor:
        """(1 + 2·num_layers, windows, length, dim) keep masks for `windows` windows."""
        return _keep((1 + 2 * cfg.num_layers, windows, length, cfg.dim), cfg.dropout, generator)


def _keep(shape: tuple, p: float, generator: torch.Generator) -> torch.Tensor:
    if p == 0:
        return torch.ones(shape)
    return torch.rand(shape, generator=generator).ge_(p).mul_(1.0 / (1.0 - p))


def combine(states: torch.Tensor, personal: torch.Tensor) -> torch.Tensor:
    """user_vector = normalize(state + p): states (B, [L,] dim), personal vectors (B, dim)."""
    if states.dim() == 3:
        personal = personal.unsqueeze(1)
    return F.normalize(states + personal, dim=-1)


def pad_histories(histories: list, length: int) -> torch.Tensor:
    """Keep the last `length` items of each history, left-padded with -1: (B, length) int64."""
    out = torch.full((len(histories), length), -1, dtype=torch.long)
    for row, h in enumerate(histories):
        tail = torch.as_tensor(h[-length:] if len(h) else [], dtype=torch.long)
        if len(tail):
            out[row, length - len(tail) :] = tail
    return out


def gather_padded(vectors: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of `vectors` (n, d) at `index` (any shape), with zeros where index == -1."""
    padded = torch.cat([vectors, vectors.new_zeros(1, vectors.shape[-1])])
    return padded[torch.where(index < 0, vectors.shape[0], index)]


@torch.no_grad()
def score_catalog(
    model: FedRecModel, item_embeddings: torch.Tensor, users, histories: list
) -> torch.Tensor:
    """Scores of every catalog item for each user: (B, n_items). `histories`: chronological
    item indices before the target; `users`: personal-vector rows (B,)."""
    was_training = model.training
    model.eval()
    items = model.item_vectors(item_embeddings)
    index = pad_histories(histories, model.cfg.max_history)
    states = model.sequence_states(gather_padded(items, index), index >= 0)[:, -1]
    empty = torch.tensor([len(h) == 0 for h in histories])
    states = states.masked_fill(empty[:, None], 0.0)  # no history: personal vector alone
    scores = model.logits(model.user_vectors(states, torch.as_tensor(users)), items)
    model.train(was_training)
    return scores
