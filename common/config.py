"""Run configuration: plain dataclasses, read from and written to TOML.

A run directory's `config.toml` holds everything needed to reproduce it; CLI flags override
fields and the effective config is written back.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

import tomli_w

from fedrec.common import atomic
from fedrec.common.anonymity import AnonymizationConfig
from fedrec.common.embeddings import DEFAULT_ENCODER
from fedrec.common.errors import ConfigError
from fedrec.common.hparams import MODEL_NAMES, BPRConfig, ModelConfig, TrainConfig
from fedrec.common.privacy import PrivacyConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class FederationConfig:
    """A simulated or deployed federation.

    The default recipe is FedSGD with reconstruction: each sampled client reconstructs its
    personal vector against the received head (`reconstruct_steps` Adam steps at
    `reconstruct_lr`, the head frozen), takes `local_steps` full-batch SGD steps at `local_lr`
    on the shared head, and the server applies Adam (`fedadam`) to the weighted mean update —
    one step of central training per round, with a cohort of users as the batch. The first
    recipe (`local_optimizer = "adam"`: `local_epochs` epochs of the `[train]` loop with a
    fresh Adam per visit, FedAvgM on the server) stays selectable (docs/federation.md)."""

    rounds: int = 800
    clients_per_round: int = 45
    min_clients: int = 1  # the least valid client updates a round needs to aggregate
    local_optimizer: str = "sgd"  # sgd | adam
    local_steps: int = 1  # sgd: full-batch steps per visit (1 = FedSGD)
    local_lr: float = 1.0  # sgd: step size (the server's adaptive optimizer sets the scale)
    local_epochs: int = 2  # adam: epochs of the [train] loop per visit
    reconstruct_steps: int = 5  # personal-vector steps against the frozen head, per visit/eval
    reconstruct_lr: float = 0.05
    reconstruct_from: str = "zero"  # zero: from scratch each time | stored: the device's last
    strategy: str = "fedadam"  # fedavg | fedavgm | fedadam | fedyogi | fedprox
    server_lr: float = 3e-3
    server_lr_schedule: str = "cosine"  # cosine (annealed to 0 over `rounds`) | constant
    server_momentum: float = 0.9  # fedavgm
    server_beta1: float = 0.9  # fedadam / fedyogi
    server_beta2: float = 0.999  # fedadam / fedyogi
    server_eps: float = 1e-8  # fedadam / fedyogi: τ, the adaptivity floor
    server_weight_decay: float = 1e-4  # fedadam / fedyogi: decoupled (AdamW), × server_lr
    proximal_mu: float = 0.01  # fedprox
    max_update_norm: float = 100.0  # L2 bound on a client's update; larger ones are rejected
    eval_every: int = 100
    eval_users: int = 5000  # central evaluation per eval round on a fixed seeded sample of at
    #                         most this many users (0 = every user); the served round is then
    #                         evaluated on every user at the end (see full_eval)
    full_eval: bool = True  # evaluate the served round on every user at the end (false: keep
    #                         its sample's metrics and confidence interval)
    eval_clients: int = 100  # federated-evaluation sample per eval round (0 = every client);
    #                          the last round's evaluation asks every client, up to eval_users
    checkpoint_every: int = 50
    engine: str = "auto"  # batched | ray | in-process | auto (batched where it applies, else ray)
    fail_rate: float = 0.0  # seeded share of sampled clients that fail while training
    client_cpus: float = 1.0  # CPUs per simulated client actor (2 cores -> 2 actors)
    secagg: bool = False  # aggregate with SecAgg+: the server sees only the sum
    secagg_dropout: float = 0.2  # share of a round's clients that may drop after key sharing
    secagg_corruption: float = 0.05  # share of colluding clients the key sharing withstands
    secagg_failure: float = 1e-4  # allowed probability per round that either bound fails
    secagg_max_weight: float = 1000.0  # cap on a client's weight (training positions)
    secagg_timeout: float = 0.0  # seconds per protocol stage; 0 = wait for every reply

    def validate(self) -> FederationConfig:
        for name, allowed in (("strategy", STRATEGIES), ("local_optimizer", LOCAL_OPTIMIZERS),
                              ("engine", ENGINES), ("reconstruct_from", ("stored", "zero")),
                              ("server_lr_schedule", ("constant", "cosine"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"federation.{name} = '{getattr(self, name)}'; expected one of "
                                  f"{sorted(allowed)}")
        for name in ("rounds", "clients_per_round", "local_epochs", "local_steps", "eval_every",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"federation.{name} = {getattr(self, name)}; expected >= 1")
        if self.eval_users < 0:
            raise ConfigError(f"federation.eval_users = {self.eval_users}; expected >= 0 "
                              "(0: every user)")
        if self.reconstruct_steps < 0:
            raise ConfigError(f"federation.reconstruct_steps = {self.reconstruct_steps}; "
                              "expected >= 0")
        if not 1 <= self.min_clients <= self.clients_per_round:
            raise ConfigError(f"federation.min_clients = {self.min_clients}; expected 1 to "
                              f"clients_per_round ({self.clients_per_round})")
        if not 0.0 <= self.fail_rate < 1.0:
            raise ConfigError(f"federation.fail_rate = {self.fail_rate}; expected 0 <= x < 1")
        for name in ("max_update_norm", "server_lr", "local_lr", "server_eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"federation.{name} = {getattr(self, name)}; expected > 0")
        if self.reconstruct_steps and not self.reconstruct_lr > 0:
            raise ConfigError(f"federation.reconstruct_lr = {self.reconstruct_lr}; expected > 0")
        for name in ("server_beta1", "server_beta2", "server_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"federation.{name} = {getattr(self, name)}; expected 0 <= x < 1")
        if self.server_weight_decay < 0:
            raise ConfigError(f"federation.server_weight_decay = {self.server_weight_decay}; "
                              "expected >= 0")
        if self.secagg:
            from fedrec.common.secagg import neighbourhood

            neighbourhood(self.clients_per_round, self.secagg_dropout, self.secagg_corruption,
                          self.secagg_failure)  # raises if they cannot be met
            if self.secagg_max_weight < 1 or self.secagg_timeout < 0:
                raise ConfigError(f"federation.secagg_max_weight = {self.secagg_max_weight} "
                                  f"(expected >= 1) / secagg_timeout = {self.secagg_timeout} "
                                  "(expected >= 0)")
        return self

    def check_population(self, num_clients: int, option: str, population: str) -> None:
        """Refuse a cohort larger than the population it is sampled from (the plan would
        sample everyone while config.toml recorded the larger number). `option`: how the user
        set `clients_per_round` (a flag or the config key), `population`: what the
        `num_clients` clients are, for the message."""
        if self.clients_per_round > num_clients:
            raise ConfigError(f"{option}: more clients per round than the {num_clients:,} "
                              f"{population}; expected at most {num_clients:,}")


STRATEGIES = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedprox")
LOCAL_OPTIMIZERS = ("sgd", "adam")
# in-process: every client message through the real ClientApp, one after another in this
# process (no Ray; every feature; slower than ray on several cores, easiest to debug)
ENGINES = ("auto", "batched", "ray", "in-process")


@dataclass
class RunConfig:
    """One experiment. `seed` drives the split, initialization and sampling."""

    dataset: str = "synthetic"
    model: str = "fedrec"
    seed: int = 0
    cold_fraction: float = 0.1
    encoder: str = DEFAULT_ENCODER
    fedrec: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    bpr: BPRConfig = field(default_factory=BPRConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    anonymization: AnonymizationConfig = field(default_factory=AnonymizationConfig)

    def validate(self) -> RunConfig:
        if self.model not in MODEL_NAMES:
            raise ConfigError(f"model '{self.model}' is unknown; expected one of {sorted(MODEL_NAMES)}")
        if not 0.0 <= self.cold_fraction < 1.0:
            raise ConfigError(f"cold_fraction = {self.cold_fraction}; expected 0 <= x < 1")
        for name, value in [("train.epochs", self.train.epochs), ("bpr.epochs", self.bpr.epochs),
                            ("train.batch_size", self.train.batch_size),
                            ("fedrec.max_history", self.fedrec.max_history)]:
            if value < 1:
                raise ConfigError(f"{name} = {value}; expected a positive integer")
        if self.fedrec.dim % self.fedrec.num_heads:
            raise ConfigError(
                f"fedrec.dim = {self.fedrec.dim} must be divisible by fedrec.num_heads = "
                f"{self.fedrec.num_heads}"
            )
        self.federation.validate()
        self.privacy.validate()
        self.engine()  # an explicit engine must be able to run this configuration
        self.anonymization.validate()
        if self.privacy.mode == "record" and self.privacy.window > self.fedrec.max_history:
            raise ConfigError(f"privacy.window = {self.privacy.window} exceeds fedrec.max_history"
                              f" = {self.fedrec.max_history}")
        if self.privacy.mode == "record" and self.privacy.noise == "distributed":
            why = self._distributed_unsupported()
            if why:
                raise ConfigError(f"privacy.noise = 'distributed' {why}")
        if self.privacy.secure_rng and self.record_noise() == "local":
            raise ConfigError("privacy.secure_rng with local record-level noise needs Opacus' "
                              "secure_mode, whose CSPRNG (torchcsprng) has no build for this "
                              "torch; use distributed noise (--secagg) or user-level DP")
        return self

    def _distributed_unsupported(self) -> str | None:
        fed = self.federation
        if not fed.secagg:
            return ("needs federation.secagg = true (--secagg): without SecAgg+ the server "
                    "would see each device's update with only its share of the noise")
        if fed.local_optimizer != "sgd" or fed.local_steps != 1:
            return ("needs one local SGD step per round (local_optimizer = 'sgd', local_steps "
                    "= 1): the sum of the shares is one DP-SGD step")
        return None

    def record_noise(self) -> str | None:
        """Who adds a record-level run's noise: 'distributed' (each device a share, summed by
        SecAgg+) or 'local' (each device all of it); `privacy.noise = "auto"` chooses
        distributed where it applies. None without record-level DP."""
        if self.privacy.mode != "record":
            return None
        if self.privacy.noise == "auto":
            return "local" if self._distributed_unsupported() else "distributed"
        return self.privacy.noise


    def engine(self, egress_log: bool = False) -> str:
        """The simulation engine of this run: 'batched', 'ray' or 'in-process'
        (`federation.engine`, with 'auto' choosing batched where it applies, see
        `fedrec.simulation.batched`).
        `egress_log`: every client message is to be logged, which needs one per client."""
        reason = self.batched_unsupported(egress_log)
        if self.federation.engine == "batched" and reason:
            raise ConfigError(f"federation.engine = 'batched' cannot run this configuration: "
                              f"{reason}; use engine = 'ray' or 'auto'")
        if self.federation.engine == "auto":
            return "ray" if reason else "batched"
        return self.federation.engine

    def batched_unsupported(self, egress_log: bool = False) -> str | None:
        """Why the batched engine cannot run this configuration (None: it can)."""
        fed = self.federation
        if self.record_noise() == "distributed":
            pass  # the engine sums the devices' clipped sums and noise shares: SecAgg+'s sum
        elif self.privacy.mode == "user":
            pass  # each device's own update, clip and noise share; SecAgg+'s mean
        elif fed.secagg:
            return "secure aggregation needs one training message per client"
        elif self.privacy.enabled:
            return "local record-level DP trains each device with Opacus: one message per client"
        if egress_log:
            return "an egress log records every client's training message, one per client"
        if fed.local_optimizer != "sgd" or fed.local_steps != 1:
            return "only one local SGD step (local_optimizer = 'sgd', local_steps = 1) is batched"
        return None


def to_dict(cfg) -> dict:
    return asdict(cfg)


def from_dict(cls, data: dict, source: str = "config"):
    """Build dataclass `cls` from nested `data`, rejecting unknown keys and wrong types."""
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{key}'; expected one of {sorted(known)}")
        default = getattr(cls(), key)
        if is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{key}' must be a table")
            kwargs[key] = from_dict(type(default), value, f"{source}.{key}")
        else:
            kwargs[key] = _coerce(value, default, f"{source}.{key}")
    return cls(**kwargs)


def _coerce(value, default, where: str):
    if isinstance(default, bool) or default is None:
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
        raise ConfigError(f"{where} = {value!r}: expected {type(default).__name__}")
    return value


def save(cfg, path: Path) -> None:
    atomic.write_text(path, tomli_w.dumps(to_dict(cfg)))


def load(path: Path, cls=RunConfig):
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return from_dict(cls, data, str(path))
