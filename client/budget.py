"""The device's record-level privacy account: its mechanism history, its noise multiplier and
the last charged release, kept in the device's store (`DeviceStore.read_account` /
`write_account`, one transaction per write).

Protocol of one release (crash-safe, see `PrivacyAccount.charge`):
1. `would_spend` — ε after this round's planned steps; over budget -> the client declines;
2. `charge` — append the steps and a fresh *secret* noise seed for (round, global-model digest),
   persisted before training output can leave the device;
3. train with that seed, write the ledger line, reply.
A crash after 2 and a retry of the same round with the same global model *replays* the charged
release (same seed, so the same update) instead of spending again; a retry with a different
global model is a new release and is charged again. The history is append-only: a resumed
federation never rolls a charge back.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import numpy as np

from fedrec.common import privacy


def digest(arrays: list[np.ndarray]) -> str:
    """A short fingerprint of the global model a release was trained from."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class Charge:
    """A charged release: its round, the ε after it, and the secret seed it trains with."""

    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon: float
    seed: int
    replay: bool  # True if this round was charged before (a retry): nothing new is spent


class PrivacyAccount:
    """Record-level accountant of one device, persisted in `store` (a
    `fedrec.client.store.DeviceStore`, or anything with its `read_account`/`write_account`).
    `budget`: the ε (record level, at `delta`) the device enforces, kept with the account so
    an auditor or the user can check the spend against it. A budget can only go down: the
    smaller of the recorded one and `budget` holds (None keeps the recorded one)."""

    def __init__(self, store, delta: float, accountant: str = "rdp",
                 budget: float | None = None):
        self.store = store
        self.delta, self.accountant = delta, accountant
        state = store.read_account() or {}
        recorded = state.get("epsilon_max")
        self.budget: float | None = min((b for b in (budget, recorded) if b is not None),
                                        default=None)
        self.noise_multiplier: float | None = state.get("noise_multiplier")
        self.history: list[list] = state.get("history", [])  # [σ, q, steps, round]
        self.last: dict | None = state.get("last")

    @property
    def epsilon(self) -> float:
        """ε spent so far (record-level, at this account's δ)."""
        return self.would_spend(0.0, 1.0, 0)

    def would_spend(self, sigma: float, sample_rate: float, steps: int) -> float:
        """ε after the recorded history plus `steps` steps of (σ, q)."""
        extra = [(sigma, sample_rate, steps)] if steps else []
        return privacy.epsilon([tuple(h[:3]) for h in self.history] + extra, self.delta,
                               self.accountant)

    def find(self, round_: int, model_digest: str) -> Charge | None:
        """The charge of an earlier attempt at this exact release, if any."""
        last = self.last
        if last and last["round"] == round_ and last["digest"] == model_digest:
            return Charge(round_, last["noise_multiplier"], last["sample_rate"], last["steps"],
                          last["epsilon"], last["seed"], replay=True)
        return None

    def charge(self, round_: int, model_digest: str, sigma: float, sample_rate: float,
               steps: int) -> Charge:
        """Append `steps` steps of (σ, q) for round `round_` and persist them (atomically)
        before anything is trained, with a fresh secret seed for the noise and sampling."""
        epsilon = self.would_spend(sigma, sample_rate, steps)
        seed = secrets.randbits(62)
        self.noise_multiplier = self.noise_multiplier or sigma
        self.history.append([sigma, sample_rate, steps, round_])
        self.last = {"round": round_, "digest": model_digest, "noise_multiplier": sigma,
                     "sample_rate": sample_rate, "steps": steps, "epsilon": epsilon,
                     "seed": seed, "logged": False}
        self._save()
        return Charge(round_, sigma, sample_rate, steps, epsilon, seed, replay=False)

    def mark_logged(self) -> None:
        """The ledger line of the last charge is written."""
        if self.last is not None and not self.last["logged"]:
            self.last["logged"] = True
            self._save()

    @property
    def logged(self) -> bool:
        return self.last is None or bool(self.last["logged"])

    def _save(self) -> None:
        self.store.write_account({
            "unit": "record", "delta": self.delta, "accountant": self.accountant,
            "epsilon_max": self.budget, "noise_multiplier": self.noise_multiplier,
            "history": self.history, "last": self.last})
