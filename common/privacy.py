"""Differential-privacy settings and accounting, shared by the device and the server.

Every guarantee here is (ε, δ)-DP for one *unit*:
- `record`: one training window of a user (up to `window + 1` consecutive interactions;
  windows are disjoint; neighbouring data sets differ by one window), against everyone who
  sees a client's update. Each device keeps its own accountant and enforces its own ε budget.
- `user`: everything one user contributes, against anyone who sees the aggregated model. One
  accountant for the federation, on the server.

A mechanism history is a list of `(noise_multiplier, sample_rate, steps)` triples, the form of
Opacus' accountants; ε is composed by the accountant (RDP or PRV), never summed.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

from fedrec.common.errors import ConfigError

MODES = ("off", "record", "user")
ACCOUNTANTS = ("rdp", "prv")
# record level: who adds the noise. local: each device all of it (Opacus DP-SGD; private
# against whoever sees a device's update). distributed: each device a share, SecAgg+ sums them
# (private against the server only through SecAgg+). auto: distributed where it applies.
NOISE = ("auto", "local", "distributed")
# what DP trains and releases (fedrec.client.dp); auto: lowrank at record level, all at user level
TRAINED = ("auto", "lowrank", "encoder", "all")
# RDP orders: Opacus' defaults plus the large ones dp-accounting also uses, so small-q/large-ε
# cases are not bound by the largest order.
RDP_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64))
                   + [80, 96, 128, 192, 256, 384, 512, 1024])

History = tuple[tuple[float, float, int], ...]


@dataclass
class PrivacyConfig:
    """DP knobs of a run (`[privacy]` in config.toml). ε and δ are per unit (see module doc)."""

    mode: str = "off"  # off | record | user
    epsilon: float = 8.0  # record: each client's budget; user: the federation's target
    delta: float = 1e-5
    accountant: str = "rdp"  # rdp | prv
    noise_multiplier: float = 0.0  # σ; 0 = derive from epsilon over the planned releases
    max_grad_norm: float = 1.0  # record: per-sample clip; user: clip C of a client's update
    planned_rounds: int = 0  # record: participations σ is planned for; 0 = derive (see doc)
    window: int = 20  # record: interactions per training window (the record), disjoint
    negatives: int = 50  # record: sampled candidates per position (per-sample softmax)
    noise: str = "auto"  # record: local | distributed (needs SecAgg+) | auto (see `NOISE`)
    trained: str = "auto"  # distributed, user: auto | lowrank | encoder | all (see `released`)
    rank: int = 32  # lowrank: the catalog directions an expert's weight moves in
    sample_rate: float = 1.0  # distributed: each record's secret Poisson rate per participation
    max_records: int = 64  # distributed: a device's clipped sum is bounded by max_records · C
    shares: int = 0  # distributed: honest noise shares every sum holds (resolved from SecAgg+)
    secure_rng: bool = False  # noise shares from a cryptographic stream (`fedrec.client.noise`)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def released(self) -> str:
        """What DP trains and releases of the shared head (`fedrec.client.dp`): `trained`,
        with `auto` as measured best per unit — `lowrank` at record level, `all` at user
        level (docs/results.md)."""
        if self.trained != "auto":
            return self.trained
        return "all" if self.mode == "user" else "lowrank"

    def validate(self) -> PrivacyConfig:
        if self.mode not in MODES:
            raise ConfigError(f"privacy.mode = '{self.mode}'; expected one of {list(MODES)}")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(
                f"privacy.accountant = '{self.accountant}'; expected one of {list(ACCOUNTANTS)}")
        # `not x > 0` also refuses NaN; an infinite ε, σ or clip would promise nothing
        if not (self.epsilon > 0 and math.isfinite(self.epsilon)):
            raise ConfigError(f"privacy.epsilon = {self.epsilon}; expected a finite number > 0")
        if not 0 < self.delta < 1:
            raise ConfigError(f"privacy.delta = {self.delta}; expected 0 < δ < 1")
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ConfigError(f"privacy.noise_multiplier = {self.noise_multiplier}; expected a "
                              "finite number >= 0 (0 = derive from epsilon)")
        if not (self.max_grad_norm > 0 and math.isfinite(self.max_grad_norm)):
            raise ConfigError(f"privacy.max_grad_norm = {self.max_grad_norm}; expected a finite "
                              "number > 0")
        for name in ("planned_rounds", "window", "negatives", "rank", "max_records", "shares"):
            if getattr(self, name) < (0 if name in ("planned_rounds", "shares") else 1):
                raise ConfigError(f"privacy.{name} = {getattr(self, name)} is out of range")
        for name, allowed in (("noise", NOISE), ("trained", TRAINED)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"privacy.{name} = '{getattr(self, name)}'; expected one of "
                                  f"{list(allowed)}")
        if not 0 < self.sample_rate <= 1:
            raise ConfigError(f"privacy.sample_rate = {self.sample_rate}; expected 0 < q <= 1")
        return self


# --- accounting ------------------------------------------------------------------------------
def _accountant(kind: str, history: History):
    from opacus.accountants import PRVAccountant, RDPAccountant

    accountant = RDPAccountant() if kind == "rdp" else PRVAccountant()
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return accountant


@lru_cache(maxsize=4096)
def _epsilon(history: History, delta: float, kind: str) -> float:
    if not history:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PRV's log(0) at q=1, RDP's "largest alpha" notes
        accountant = _accountant(kind, history)
        if kind == "rdp":
            return float(accountant.get_epsilon(delta, alphas=list(RDP_ORDERS)))
        return float(accountant.get_epsilon(delta, eps_error=0.002))


def merge(history) -> list[tuple[float, float, int]]:
    """`history` with consecutive runs of one mechanism (σ, q) merged into one entry."""
    merged: list[tuple[float, float, int]] = []
    for sigma, q, steps in history:
        if merged and merged[-1][:2] == (float(sigma), float(q)):
            merged[-1] = (merged[-1][0], merged[-1][1], merged[-1][2] + int(steps))
        else:
            merged.append((float(sigma), float(q), int(steps)))
    return merged


def epsilon(history, delta: float, accountant: str = "rdp") -> float:
    """ε after the mechanisms in `history` [(σ, q, steps), ...] at `delta`, composed by
    Opacus' RDP or PRV accountant. Cached by history: a client asks once per release."""
    return _epsilon(tuple(merge(history)), float(delta), accountant)


NOISE_MULTIPLIER_MAX = 1e4  # σ searched up to this; a budget that needs more is out of reach


@lru_cache(maxsize=1024)
def noise_for_epsilon(target: float, delta: float, sample_rate: float, steps: int,
                      accountant: str = "rdp") -> float:
    """The smallest σ (to 0.1 % in ε) whose `steps` releases at `sample_rate` stay within
    (target, delta)."""
    lo, hi = 0.05, 1.0
    while epsilon([(hi, sample_rate, steps)], delta, accountant) > target:
        lo, hi = hi, hi * 2
        if hi > NOISE_MULTIPLIER_MAX:
            raise ConfigError(f"no noise multiplier up to {lo:,.0f} reaches "
                              f"ε = {target:g} at δ = {delta:g} over {steps} steps at sampling "
                              f"rate {sample_rate:g}")
    while hi - lo > 1e-3 * hi:
        mid = (lo + hi) / 2
        if epsilon([(mid, sample_rate, steps)], delta, accountant) > target:
            lo = mid
        else:
            hi = mid
    return hi


def planned_participations(rounds: int, cohort: int, num_clients: int,
                           quantile: float = 0.95) -> int:
    """How many rounds a client plans its noise for: the `quantile` of Binomial(rounds, K/N),
    the number of times uniform sampling of K of N clients per round picks it. Clients picked
    more often than that run out of budget and decline."""
    p = min(1.0, cohort / max(1, num_clients))
    total = 0.0
    for k in range(rounds + 1):
        total += math.comb(rounds, k) * p**k * (1 - p) ** (rounds - k)
        if total >= quantile:
            return max(1, k)
    return rounds


# --- ledger ----------------------------------------------------------------------------------
LEDGER_KEYS = ("unit", "client", "round", "noise_multiplier", "sample_rate", "steps",
               "max_grad_norm", "delta", "accountant", "epsilon")


@dataclass(frozen=True)
class Release:
    """One line of the privacy ledger: a release of an update (record) or aggregate (user).
    `epsilon` is cumulative for `client` after this release."""

    unit: str
    client: str
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    delta: float
    accountant: str
    epsilon: float


def append_release(path: Path, release: Release) -> None:
    """Append one ledger line with a single O_APPEND write (one line per writer call, so
    concurrent writers on one machine never interleave lines), flushed to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(asdict(release), sort_keys=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ledger(path: Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]



def resolve(cfg: PrivacyConfig, rounds: int, cohort: int, num_clients: int) -> PrivacyConfig:
    """Fill in what depends on the federation's size: a record-level run's planned
    participations per client (and with distributed noise the one σ every device uses, for
    that many participations at the records' Poisson rate), a user-level run's σ for `rounds`
    aggregates at q = K/N. `cfg.noise` must be resolved already (not "auto")."""
    if cfg.mode == "record" and cfg.planned_rounds == 0:
        cfg = replace(cfg, planned_rounds=planned_participations(rounds, cohort, num_clients))
    if cfg.mode == "record" and cfg.noise == "distributed" and cfg.noise_multiplier == 0:
        cfg = replace(cfg, noise_multiplier=noise_for_epsilon(
            cfg.epsilon, cfg.delta, cfg.sample_rate, cfg.planned_rounds, cfg.accountant))
    if cfg.mode == "record":
        return cfg
    if cfg.mode == "user" and cfg.noise_multiplier == 0:
        q = min(1.0, cohort / num_clients)
        return replace(cfg, noise_multiplier=noise_for_epsilon(
            cfg.epsilon, cfg.delta, q, rounds, cfg.accountant))
    return cfg


def noise_share_std(cfg: PrivacyConfig, cohort: int) -> float:
    """The per-coordinate noise std σC/√m each client adds, so that a sum of m shares carries
    N(0, (σC)²). User level: m = the `cohort`; distributed record level: m = `cfg.shares`, the
    honest shares every secure sum holds (`honest_shares`)."""
    shares = cfg.shares if cfg.mode == "record" else cohort
    return cfg.noise_multiplier * cfg.max_grad_norm / math.sqrt(shares)


def honest_shares(cohort: int, dropout: float, corruption: float) -> tuple[int, int]:
    """(the fewest updates a SecAgg+ sum of `cohort` clients may hold, the fewest honest noise
    shares among them): SecAgg+ is set up for at most ⌈dropout·m⌉ clients lost and at most
    ⌊corruption·m⌋ colluding with the server, and a colluder's share is known to the server."""
    summed = cohort - math.ceil(dropout * cohort)
    return summed, summed - math.floor(corruption * cohort)


def update_norm_bound(cfg: PrivacyConfig, cohort: int, num_parameters: int,
                      default: float) -> float:
    """The largest update norm an honest client sends. User-level DP: C plus the norm of its
    noise share (s per coordinate: mean s·√d, std ≈ s/√2; a 14-std margin). Otherwise
    `default` (the federation's `max_update_norm`). Distributed record level: a device's
    clipped sum (≤ max_records · C) plus its share's norm, at `local_lr` = 1."""
    margin = math.sqrt(num_parameters) + 10.0
    if cfg.mode == "record" and cfg.noise == "distributed":
        return cfg.max_records * cfg.max_grad_norm + noise_share_std(cfg, cohort) * margin
    if cfg.mode != "user":
        return default
    return cfg.max_grad_norm + noise_share_std(cfg, cohort) * margin
