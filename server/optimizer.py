"""Server-side optimizers over the aggregated client update (Reddi et al., "Adaptive Federated
Optimization", ICLR'21). Pure numpy; state is plain arrays so it checkpoints with the model.

The pseudo-gradient of a round is Δ = weighted mean of client models − current global model
(for one local SGD step at rate η_l, Δ = −η_l·ḡ: minus the cohort's mean gradient).
- fedavg / fedprox: w ← w + η·Δ            (η = server_lr, 1.0 is plain FedAvg)
- fedavgm:          v ← β·v + Δ;  w ← w + η·v
- fedadam:          m ← β1·m + (1−β1)·Δ;  v ← β2·v + (1−β2)·Δ²;
                    w ← w + η·m̂ / (√v̂ + τ) − η·λ·w     (m̂, v̂ bias-corrected, as in Adam)
- fedyogi:          as fedadam, but v ← v − (1−β2)·Δ²·sign(v − Δ²)

With one local step, fedadam is AdamW on the cohort's gradient: a round is one step of
central training (β1, β2, τ, λ = server_beta1, server_beta2, server_eps,
server_weight_decay). Reddi et al. omit bias correction; it matters here because rounds start
from m = v = 0 with β2 = 0.999, which would shrink the first hundreds of steps.

With `decay_rounds` > 0, η follows a half cosine from `server_lr` to 0 over that many rounds
(`server_lr_schedule = "cosine"`): late rounds move the served head less.
"""

from __future__ import annotations

import math

import numpy as np

ADAPTIVE = ("fedadam", "fedyogi")


class ServerOptimizer:
    def __init__(self, kind: str, lr: float, momentum: float = 0.9, betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decay_rounds: int = 0):
        self.kind, self.base_lr, self.momentum = kind, lr, momentum
        self.decay_rounds = decay_rounds
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay
        self.state: dict[str, list[np.ndarray]] = {}

    @classmethod
    def for_federation(cls, fed) -> ServerOptimizer:
        """The optimizer a `FederationConfig` asks for."""
        decay = fed.rounds if fed.server_lr_schedule == "cosine" else 0
        return cls(fed.strategy, fed.server_lr, fed.server_momentum,
                   (fed.server_beta1, fed.server_beta2), fed.server_eps, fed.server_weight_decay,
                   decay)

    def lr_at(self, round_: int) -> float:
        """η of the server step of round `round_` (1-based): the schedule follows rounds, not
        steps, so a round that aggregated nothing still moves it along."""
        if not self.decay_rounds:
            return self.base_lr
        progress = min(max(round_ - 1, 0), self.decay_rounds) / self.decay_rounds
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def step(self, weights: list[np.ndarray], delta: list[np.ndarray],
             round_: int | None = None) -> list[np.ndarray]:
        """New global weights from the current ones and the pseudo-gradient of round `round_`
        (default: the next step's number, for a caller without rounds)."""
        t = self.state.setdefault("t", [np.zeros(1)])[0]
        t += 1
        self.lr = self.lr_at(int(t[0]) if round_ is None else round_)
        if self.kind == "fedavgm":
            v = self.state.setdefault("momentum", [np.zeros_like(d) for d in delta])
            for i, d in enumerate(delta):
                v[i] = self.momentum * v[i] + d
            return [w + self.lr * vi for w, vi in zip(weights, v)]
        if self.kind in ADAPTIVE:
            return self._adaptive(weights, delta)
        return [w + self.lr * d for w, d in zip(weights, delta)]

    def _adaptive(self, weights: list[np.ndarray], delta: list[np.ndarray]) -> list[np.ndarray]:
        b1, b2 = self.betas
        m = self.state.setdefault("m", [np.zeros_like(d) for d in delta])
        v = self.state.setdefault("v", [np.zeros_like(d) for d in delta])
        t = self.state["t"][0]
        out = []
        for i, (w, d) in enumerate(zip(weights, delta)):
            m[i] = b1 * m[i] + (1 - b1) * d
            d2 = d * d
            if self.kind == "fedyogi":
                v[i] = v[i] - (1 - b2) * d2 * np.sign(v[i] - d2)
            else:
                v[i] = b2 * v[i] + (1 - b2) * d2
            m_hat = m[i] / (1 - b1 ** t[0])
            v_hat = v[i] / (1 - b2 ** t[0])
            out.append(w * (1 - self.lr * self.weight_decay)
                       + self.lr * m_hat / (np.sqrt(v_hat) + self.eps))
        return out

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"{k}.{i}": a for k, arrays in self.state.items() for i, a in enumerate(arrays)}

    def load_state_arrays(self, flat: dict[str, np.ndarray]) -> None:
        state: dict[str, list[np.ndarray]] = {}
        for key in sorted(flat, key=lambda k: (k.rsplit(".", 1)[0], int(k.rsplit(".", 1)[1]))):
            state.setdefault(key.rsplit(".", 1)[0], []).append(np.array(flat[key]))  # a copy
        self.state = state
