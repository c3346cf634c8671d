"""Server-side optimizers over the aggregated client update (Reddi et al., "Adaptive Federated
Optimization", ICLR'21). Pure numpy; state is plain arrays so it checkpoints with the model.

The pseudo-gradient of a round is Δ = weighted mean of client models − current global model.
- fedavg / fedprox: w ← w + η·Δ            (η = server_lr, 1.0 is plain FedAvg)
- fedavgm:          v ← β·v + Δ;  w ← w + η·v
- fedadam:          m ← β1·m + (1−β1)·Δ;  v ← β2·v + (1−β2)·Δ²;  w ← w + η·m / (√v + τ)
"""

from __future__ import annotations

import numpy as np

ADAM_BETAS, ADAM_TAU = (0.9, 0.99), 1e-3


class ServerOptimizer:
    def __init__(self, kind: str, lr: float, momentum: float = 0.9):
        self.kind, self.lr, self.momentum = kind, lr, momentum
        self.state: dict[str, list[np.ndarray]] = {}

    def step(self, weights: list[np.ndarray], delta: list[np.ndarray]) -> list[np.ndarray]:
        """New global weights from the current ones and the round's pseudo-gradient."""
        if self.kind == "fedavgm":
            v = self.state.setdefault("momentum", [np.zeros_like(d) for d in delta])
            for i, d in enumerate(delta):
                v[i] = self.momentum * v[i] + d
            return [w + self.lr * vi for w, vi in zip(weights, v)]
        if self.kind == "fedadam":
            b1, b2 = ADAM_BETAS
            m = self.state.setdefault("m", [np.zeros_like(d) for d in delta])
            v = self.state.setdefault("v", [np.full_like(d, ADAM_TAU**2) for d in delta])
            for i, d in enumerate(delta):
                m[i] = b1 * m[i] + (1 - b1) * d
                v[i] = b2 * v[i] + (1 - b2) * d * d
            return [w + self.lr * mi / (np.sqrt(vi) + ADAM_TAU) for w, mi, vi in zip(weights, m, v)]
        return [w + self.lr * d for w, d in zip(weights, delta)]

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {f"{k}.{i}": a for k, arrays in self.state.items() for i, a in enumerate(arrays)}

    def load_state_arrays(self, flat: dict[str, np.ndarray]) -> None:
        state: dict[str, list[np.ndarray]] = {}
        for key in sorted(flat, key=lambda k: (k.rsplit(".", 1)[0], int(k.rsplit(".", 1)[1]))):
            state.setdefault(key.rsplit(".", 1)[0], []).append(flat[key])
        self.state = state
