"""The server's user-level DP accountant (`privacy.mode = "user"`).

Each round the m sampled clients each send θ + clip_C(Δ) + N(0, (σC)²/m); the server averages
with the fixed denominator m. If only m' ≤ m updates arrive, the sum carries noise of standard
deviation σC·√(m'/m): the round is accounted with that *effective* noise multiplier (dropouts
cost privacy, they are never hidden). Client sampling is accounted as Poisson with q = m / N,
the usual approximation for sampling m of N without replacement.

The ledger (`privacy/ledger.jsonl`, lines with `client = "server"`) is the accountant's history:
a resumed run reads it back, and rounds that are redone after a crash are charged again (their
first aggregate was released to the clients of the next round).
"""

from __future__ import annotations

import math
from pathlib import Path

from fedrec.common import privacy


class UserLevelAccountant:
    def __init__(self, cfg: privacy.PrivacyConfig, cohort: int, num_clients: int, ledger: Path):
        self.cfg, self.cohort, self.ledger = cfg, cohort, Path(ledger)
        self.sample_rate = min(1.0, cohort / num_clients)
        self.history = [(r["noise_multiplier"], r["sample_rate"], r["steps"])
                        for r in privacy.read_ledger(self.ledger) if r["client"] == "server"]

    def effective_noise(self, contributors: int) -> float:
        return self.cfg.noise_multiplier * math.sqrt(contributors / self.cohort)

    @property
    def epsilon(self) -> float:
        """User-level ε spent so far at δ = cfg.delta."""
        return privacy.epsilon(self.history, self.cfg.delta, self.cfg.accountant)

    def would_exceed(self, contributors: int) -> bool:
        after = self.history + [(self.effective_noise(contributors), self.sample_rate, 1)]
        return privacy.epsilon(after, self.cfg.delta, self.cfg.accountant) > self.cfg.epsilon

    def charge(self, round_: int, contributors: int) -> privacy.Release:
        """Account one aggregate of `contributors` noised updates and write its ledger line."""
        sigma = self.effective_noise(contributors)
        self.history.append((sigma, self.sample_rate, 1))
        release = privacy.Release(
            "user", "server", round_, sigma, self.sample_rate, 1, self.cfg.max_grad_norm,
            self.cfg.delta, self.cfg.accountant, self.epsilon)
        privacy.append_release(self.ledger, release)
        return release
