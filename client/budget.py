"""The device's record-level privacy account: its mechanism history, its noise multiplier and
every charged release it may still have to repeat, kept in the device's store
(`DeviceStore.read_account` / `write_account`, one transaction per write).

Protocol of one release (crash-safe, see `PrivacyAccount.charge`):
1. `would_spend` — ε after this round's planned steps; over budget -> the client declines;
2. `charge` — append the steps, a fresh *secret* noise seed for (run, round, inputs digest) and
   the device's ledger line, in one transaction, before training output can leave the device;
3. train with that seed and reply.
A release is charged at most once per (run, round). A retry of a charged round — a client that
crashed, or a federation resumed from an earlier checkpoint that redoes the rounds after it —
with the same inputs *replays* the charged release (same seed, so the same update) and spends
nothing; with different inputs the device declines (a second, different release for one round
would spend its budget twice). The history is append-only: a resumed federation never rolls a
charge back. Seeds are kept only while a server may still redo their round (rounds after the
run's last checkpoint), then deleted: with a seed, the noise could be regenerated.
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


def _key(run: str, round_: int) -> str:
    return f"{run}/{int(round_)}"


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


class AlreadyCharged(ValueError):
    """This device already released an update in this round of this run."""


class OverBudget(ValueError):
    """This release would take the device's ε over its budget."""


class PrivacyAccount:
    """Record-level accountant of one device, persisted in `store` (a
    `fedrec.client.store.DeviceStore`: `read_account`, `write_account`, `append_release` and
    `transaction`).
    `budget`: the ε (record level, at `delta`) the device enforces, kept with the account so
    an auditor or the user can check the spend against it. A budget can only go down: the
    smaller of the recorded one and `budget` holds (None keeps the recorded one)."""

    def __init__(self, store, delta: float, accountant: str = "rdp",
                 budget: float | None = None):
        self.store = store
        self.delta, self.accountant, self.requested_budget = delta, accountant, budget
        self._load(store.read_account() or {})

    def _load(self, state: dict) -> None:
        recorded = state.get("epsilon_max")
        self.budget: float | None = min(
            (b for b in (self.requested_budget, recorded) if b is not None), default=None)
        self.noise_multiplier: float | None = state.get("noise_multiplier")
        self.history: list[list] = state.get("history", [])  # [σ, q, steps, round]
        self.last: dict | None = state.get("last")
        # "run/round" -> the charge's digest, seed (while it may be replayed), σ, q, steps, ε
        self.charges: dict[str, dict] = state.get("charges", {})
        if self.last is not None:  # one object: marking it logged marks its entry too
            self.last = self.charges.setdefault(
                _key(self.last.get("run", ""), self.last["round"]), self.last)

    @property
    def epsilon(self) -> float:
        """ε spent so far (record-level, at this account's δ)."""
        return self.would_spend(0.0, 1.0, 0)

    def would_spend(self, sigma: float, sample_rate: float, steps: int) -> float:
        """ε after the recorded history plus `steps` steps of (σ, q)."""
        extra = [(sigma, sample_rate, steps)] if steps else []
        return privacy.epsilon([tuple(h[:3]) for h in self.history] + extra, self.delta,
                               self.accountant)

    def _charged(self, round_: int, run: str) -> dict | None:
        # a charge of a fedrec before run names (key "/round") belongs to any run
        return self.charges.get(_key(run, round_)) or self.charges.get(_key("", round_))

    def find(self, round_: int, inputs: str, run: str = "") -> Charge | None:
        """The charge of an earlier attempt at this exact release (same run, round and inputs
        digest), to replay, if any."""
        last = self._charged(round_, run)
        if last and last["digest"] == inputs and last.get("seed") is not None:
            return Charge(round_, last["noise_multiplier"], last["sample_rate"], last["steps"],
                          last["epsilon"], last["seed"], replay=True)
        return None

    def released(self, round_: int, run: str = "") -> bool:
        """Whether this device already released an update in round `round_` of `run` (and so
        must not release a different one: `find` is the only way to repeat it)."""
        return self._charged(round_, run) is not None

    def charge(self, round_: int, inputs: str, sigma: float, sample_rate: float, steps: int,
               run: str = "", line=None, keep_from: int | None = None) -> Charge:
        """Append `steps` steps of (σ, q) for round `round_` of `run` and persist them, with a
        fresh secret seed for the noise and sampling, before anything is trained. `line`: a
        function of the `Charge` giving the device's ledger line (`fedrec.common.privacy.
        Release`), written in the same transaction. `keep_from`: the server's last checkpoint
        round; the seeds of this run's rounds up to it can no longer be replayed and are
        dropped (another run's seeds stay: that run may still resume).

        The account is read again inside the write's transaction (another process — the same
        device in another federation — may have charged meanwhile): `AlreadyCharged` if this
        round is charged by then, `OverBudget` if this charge no longer fits the budget."""
        with self.store.transaction():
            self._load(self.store.read_account() or {})
            if self.released(round_, run):
                raise AlreadyCharged(f"round {round_} of run {run!r} is already charged on "
                                     "this device")
            epsilon = self.would_spend(sigma, sample_rate, steps)
            if self.budget is not None and epsilon > self.budget:
                raise OverBudget(f"ε would be {epsilon:.4g} > the budget {self.budget:g}")
            seed = secrets.randbits(62)
            charge = Charge(round_, sigma, sample_rate, steps, epsilon, seed, replay=False)
            self.noise_multiplier = self.noise_multiplier or sigma
            self.history.append([sigma, sample_rate, steps, round_])
            self.last = {"run": run, "round": round_, "digest": inputs,
                         "noise_multiplier": sigma, "sample_rate": sample_rate, "steps": steps,
                         "epsilon": epsilon, "seed": seed, "logged": line is not None}
            if keep_from is not None:  # only this run's rounds after its checkpoint can be redone
                for key, entry in self.charges.items():
                    other, _, done = key.rpartition("/")
                    if other == run and int(done) <= keep_from:
                        entry["seed"] = None
            self.charges[_key(run, round_)] = self.last
            self._save()
            if line is not None:
                self.store.append_release(line(charge))
        return charge

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
            "history": self.history, "last": self.last, "charges": self.charges})
