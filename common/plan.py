"""The run plan: everything a run's `ServerApp` and `ClientApp`s derive from the config, worked
out once, frozen, and handed to both through Flower's `context.run_config`.

A plan is built from a validated `RunConfig` and the federation's facts (how many clients, the
encoder's width, the shared head's array shapes, the anonymization levels devices apply). From
those it fixes the cohort, the resolved privacy (σ for the planned releases), the bound on an
update's norm, the SecAgg+ neighbourhood and the wire schema. Nothing downstream derives them
again: the strategy, the client, the egress guard and the audit read them from here.

Who builds it: `fedrec simulate` (the data set gives the facts) or `fedrec plan` (for `flwr
run` and a deployment: the operator states the population). It travels as one JSON string under
the run-config key `plan` (`to_run_config` / `from_run_config`); importing this module does not
import torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

from fedrec.common import config as config_module
from fedrec.common.anonymity import Levels
from fedrec.common.errors import ConfigError
from fedrec.common.hparams import ModelConfig
from fedrec.common.privacy import (
    PrivacyConfig,
    epsilon,
    honest_shares,
    noise_for_epsilon,
    resolve,
    update_norm_bound,
)
from fedrec.common.wire import WireSchema

PLAN_KEY = "plan"  # run-config key holding the plan's JSON
RUN_DIR_KEY = "run-dir"  # run-config key: the ServerApp's run directory
DEVICES_KEY = "devices"  # run-config key: "module:function" opening a virtual device (simulation)
ENGINE_KEY = "engine"  # run-config key: the simulation engine ("batched" or "ray"), "" deployed
EGRESS_LOG_KEY = "egress-log"  # run-config key: a file logging every client message ("" = off)
SERVER_HOOKS_KEY = "server-hooks"  # run-config key: "module:function" adding simulation hooks
FORMAT_VERSION = 1
# every run-config key the apps read, with its default: pyproject.toml's [tool.flwr.app.config]
RUN_CONFIG_DEFAULTS = {PLAN_KEY: "", RUN_DIR_KEY: "runs/flwr", DEVICES_KEY: "", ENGINE_KEY: "",
                       EGRESS_LOG_KEY: "", SERVER_HOOKS_KEY: ""}
SERVER_APP, CLIENT_APP = "fedrec.server.app:server_app", "fedrec.client.app:client_app"


def app_description() -> str:
    """A Flower app's pyproject.toml for the fedrec apps (what Flower reads the declared
    run-config keys from)."""
    config = "\n".join(f"{k} = {json.dumps(v)}" for k, v in RUN_CONFIG_DEFAULTS.items())
    return ('[project]\nname = "fedrec-app"\nversion = "0.1.0"\n\n[tool.flwr.app]\n'
            'publisher = "fedrec"\n\n[tool.flwr.app.components]\n'
            f'serverapp = "{SERVER_APP}"\nclientapp = "{CLIENT_APP}"\n\n'
            f'[tool.flwr.app.config]\n{config}\n')


@dataclass(frozen=True)
class SecAggPlan:
    """SecAgg+ for a cohort: shares per client, the reconstruction threshold, the
    quantization range (cohort · range < 2³², so sums never wrap), the weight cap, and the
    seconds each protocol stage waits (None: for every reply)."""

    num_shares: int
    reconstruction_threshold: int
    quantization_range: int
    max_weight: float
    timeout: float | None


@dataclass(frozen=True)
class RunPlan:
    """A run, resolved. `num_clients`: the registered population (simulation: the data set's
    users); `cohort`: clients sampled per round; `privacy`: the config's `[privacy]` with σ
    and the planned participations filled in (ε, δ per unit: record or user);
    `update_bound`: the L2 norm above which the server rejects an update (and, under SecAgg+,
    to which clients clip); `shapes`: the shared head's arrays in wire order."""

    config: config_module.RunConfig
    num_clients: int
    cohort: int
    model: ModelConfig
    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    privacy: PrivacyConfig
    update_bound: float
    schema: WireSchema
    secagg: SecAggPlan | None = None
    levels: Levels = field(default_factory=Levels)

    @property
    def federation(self) -> config_module.FederationConfig:
        return self.config.federation

    @property
    def min_contributions(self) -> int:
        """The fewest client updates a round aggregates: `federation.min_clients`, and with
        distributed noise at least what SecAgg+ is set up to sum (fewer would carry less
        noise than the devices' accountants were charged for)."""
        fed = self.federation
        if self.privacy.noise != "distributed":
            return max(1, fed.min_clients)
        return max(fed.min_clients, honest_shares(self.cohort, fed.secagg_dropout,
                                                  fed.secagg_corruption)[0])

    @classmethod
    def build(cls, cfg: config_module.RunConfig, num_clients: int, input_dim: int,
              shared: dict[str, tuple[int, ...]], levels: Levels | None = None) -> RunPlan:
        """The plan of `cfg` for `num_clients` clients, an encoder of width `input_dim` and a
        shared head with arrays `shared` (name -> shape, in wire order)."""
        cfg.validate()
        if num_clients < 1:
            raise ConfigError(f"a federation needs at least one client; got {num_clients}")
        fed = cfg.federation
        cohort = min(fed.clients_per_round, num_clients)
        privacy = resolve_privacy(cfg, cohort, num_clients)
        shapes = tuple(tuple(int(d) for d in s) for s in shared.values())
        bound = update_norm_bound(privacy, cohort, sum(math.prod(s) for s in shapes),
                                  fed.max_update_norm)
        secagg = None
        if fed.secagg:
            from fedrec.common.secagg import neighbourhood, quantization_range

            shares, threshold = neighbourhood(cohort, fed.secagg_dropout, fed.secagg_corruption,
                                              fed.secagg_failure)
            secagg = SecAggPlan(shares, threshold, quantization_range(cohort),
                                1.0 if privacy.enabled else fed.secagg_max_weight,  # DP: weight 1
                                fed.secagg_timeout or None)
        schema = WireSchema.for_run(shapes, bound, fed.secagg, privacy.enabled,
                                    fed.secagg_max_weight)
        return cls(cfg, num_clients, cohort, replace(cfg.fedrec, input_dim=int(input_dim)),
                   tuple(shared), shapes, privacy, bound, schema, secagg, levels or Levels())

    # --- serialization ---------------------------------------------------------------------
    def to_json(self) -> str:
        data = {
            "format": FORMAT_VERSION,
            "config": config_module.to_dict(self.config),
            "num_clients": self.num_clients, "cohort": self.cohort,
            "model": asdict(self.model), "keys": list(self.keys),
            "shapes": [list(s) for s in self.shapes],
            "privacy": asdict(self.privacy), "update_bound": _finite(self.update_bound),
            "schema": json.loads(self.schema.to_json()),
            "secagg": asdict(self.secagg) if self.secagg else None,
            "levels": asdict(self.levels),
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, source: str = "run plan") -> RunPlan:
        return _parse(text, source)

    def to_run_config(self, **extra) -> dict:
        """The run-config entries that carry this plan (plus `extra` keys, e.g. run-dir)."""
        return {PLAN_KEY: self.to_json(), **extra}

    @classmethod
    def from_run_config(cls, run_config) -> RunPlan:
        """The plan in a Flower `context.run_config` (parsed once per process)."""
        text = str(run_config.get(PLAN_KEY, "") or "")
        if not text:
            raise ConfigError(
                "this run has no fedrec plan (run-config key 'plan' is empty): make one with "
                "`fedrec plan --out run.toml` and submit it with `flwr run . --run-config "
                "run.toml`")
        return _parse(text, "run-config key 'plan'")


def resolve_privacy(cfg: config_module.RunConfig, cohort: int,
                    num_clients: int) -> PrivacyConfig:
    """`cfg.privacy` resolved for a federation of `num_clients` sampled `cohort` at a time
    (`fedrec.common.privacy.resolve`: σ, planned participations), refused when its budget is
    out of reach: user level, when not even the first aggregate could be released (no σ is
    found, or the given σ overspends at once); record level, when a device whose training
    windows fit one batch (q = 1: nearly every device) could never train. Raises
    `ConfigError` naming `privacy.epsilon`. Needs Opacus (torch) for DP runs."""
    p, fed = cfg.privacy, cfg.federation
    if not p.enabled:
        return p
    if p.mode == "record":
        p = replace(p, noise=cfg.record_noise())
    if p.noise == "distributed" and p.shares == 0:
        p = replace(p, shares=honest_shares(cohort, fed.secagg_dropout,
                                            fed.secagg_corruption)[1])
    try:
        resolved = resolve(p, fed.rounds, cohort, num_clients)
        if p.mode == "user":
            first = [(resolved.noise_multiplier, min(1.0, cohort / num_clients), 1)]
        elif p.noise == "distributed":  # one participation of a device
            first = [(resolved.noise_multiplier, p.sample_rate, 1)]
        else:  # one visit of a device at q = 1: `local_epochs` DP-SGD steps
            sigma = resolved.noise_multiplier or noise_for_epsilon(
                p.epsilon, p.delta, 1.0, resolved.planned_rounds * fed.local_epochs,
                p.accountant)
            first = [(sigma, 1.0, fed.local_epochs)]
        spent = epsilon(first, p.delta, p.accountant)
        if spent > p.epsilon:
            raise ConfigError(f"its first release alone spends ε = {spent:.3g}")
    except ConfigError as exc:
        who = ("no aggregate could ever be released" if p.mode == "user" else
               "no device could ever take part" if p.noise == "distributed" else
               f"a device whose training windows fit one batch (up to {cfg.train.batch_size} "
               f"windows of {p.window + 1} interactions: nearly every device) could never train")
        fix = "raise the budget (--epsilon)" + (" or the noise multiplier (--noise-multiplier)"
                                                 if p.noise_multiplier else "")
        raise ConfigError(f"privacy.epsilon = {p.epsilon:g} ({p.mode} level, δ = {p.delta:g}) is "
                          f"out of reach: {who} ({exc}); {fix}") from None
    return resolved


@lru_cache(maxsize=4)
def _parse(text: str, source: str) -> RunPlan:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not a fedrec plan (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{source}: plan format {found!r}; this fedrec reads format "
                          f"{FORMAT_VERSION} (rebuild the plan with this version's `fedrec plan`)")
    try:
        cfg = config_module.from_dict(config_module.RunConfig, data["config"], f"{source}.config")
        secagg = data["secagg"]
        return RunPlan(
            config=cfg.validate(), num_clients=int(data["num_clients"]),
            cohort=int(data["cohort"]), model=ModelConfig(**data["model"]),
            keys=tuple(data["keys"]), shapes=tuple(tuple(s) for s in data["shapes"]),
            privacy=PrivacyConfig(**data["privacy"]).validate(),
            update_bound=math.inf if data["update_bound"] is None else data["update_bound"],
            schema=WireSchema.from_json(json.dumps(data["schema"])),
            secagg=SecAggPlan(**secagg) if secagg else None, levels=Levels(**data["levels"]))
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{source}: incomplete or malformed plan ({exc!r})") from None


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x
