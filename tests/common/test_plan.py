"""The run plan: built once, the same after a trip through Flower's run config, torch-free."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from fedrec.common import config, privacy
from fedrec.common.errors import ConfigError
from fedrec.common.plan import PLAN_KEY, RUN_CONFIG_DEFAULTS, RunPlan, app_description

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHAPES = {"adapter.w": (4, 8), "encoder.b": (8,)}


def plan(**sections) -> RunPlan:
    cfg = config.RunConfig(**sections)
    return RunPlan.build(cfg, num_clients=20, input_dim=8, shared=SHAPES)


def test_the_plan_resolves_what_the_server_and_clients_share():
    p = plan(federation=config.FederationConfig(clients_per_round=50, secagg=True,
                                                secagg_dropout=0.1),
             privacy=privacy.PrivacyConfig(mode="user", epsilon=3.0, noise_multiplier=1.5))
    assert p.cohort == 20  # never more than the population
    assert p.model.input_dim == 8 and p.shapes == ((4, 8), (8,)) and p.keys == tuple(SHAPES)
    # user level: the bound covers C plus the noise share of one client (14-std margin)
    assert p.update_bound == pytest.approx(privacy.update_norm_bound(p.privacy, 20, 40, 100.0))
    assert p.secagg.max_weight == 1.0  # DP: every update has weight 1
    assert p.schema.secagg and p.schema.dtype == "float64" and not p.schema.send_loss
    record = plan(privacy=privacy.PrivacyConfig(mode="record"))
    assert record.privacy.planned_rounds == privacy.planned_participations(800, 20, 20)
    plain = plan()
    assert plain.secagg is None and plain.update_bound == 100.0 and plain.schema.send_loss


@pytest.mark.parametrize("sections", [
    {}, {"privacy": privacy.PrivacyConfig(mode="record", epsilon=4.0)},
    {"federation": config.FederationConfig(secagg=True, clients_per_round=10, rounds=7)},
])
def test_the_plan_survives_the_run_config(sections):
    p = plan(**sections)
    again = RunPlan.from_run_config(p.to_run_config(**{"run-dir": "x"}))
    assert again == p
    assert again.to_json() == p.to_json()


def test_a_missing_or_foreign_plan_is_a_clear_error():
    with pytest.raises(ConfigError, match="fedrec plan"):
        RunPlan.from_run_config({PLAN_KEY: ""})
    with pytest.raises(ConfigError, match="invalid JSON"):
        RunPlan.from_run_config({PLAN_KEY: "{nope"})
    with pytest.raises(ConfigError, match="format 99"):
        RunPlan.from_run_config({PLAN_KEY: '{"format": 99}'})
    broken = plan().to_json().replace('"num_clients":20,', "")
    with pytest.raises(ConfigError, match="num_clients"):
        RunPlan.from_json(broken)
    with pytest.raises(ConfigError, match="at least one client"):
        RunPlan.build(config.RunConfig(), 0, 8, SHAPES)


def test_an_infinite_update_bound_round_trips():
    p = plan()
    object.__setattr__(p, "update_bound", math.inf)
    assert RunPlan.from_json(p.to_json()).update_bound == math.inf


def test_pyproject_declares_exactly_the_run_config_keys_the_apps_read():
    root = Path(__file__).resolve().parents[2]
    app = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["config"] == RUN_CONFIG_DEFAULTS
    generated = tomllib.loads(app_description())["tool"]["flwr"]["app"]
    assert generated["config"] == RUN_CONFIG_DEFAULTS
    assert generated["components"] == app["components"] == {
        "serverapp": "fedrec.server.app:server_app", "clientapp": "fedrec.client.app:client_app"}


def test_reading_the_config_or_the_plan_does_not_import_torch():
    code = ("import sys; import fedrec.common.plan, fedrec.common.config; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("settings", [
    {"mode": "record", "epsilon": 1e-9},                          # σ not found for a device
    {"mode": "user", "epsilon": 1e-9},                            # σ not found for the server
    {"mode": "record", "epsilon": 0.01, "noise_multiplier": 0.5},  # a first release overspends
    {"mode": "user", "epsilon": 0.01, "noise_multiplier": 0.5},
])
def test_a_budget_out_of_every_clients_reach_is_refused_before_any_round(settings):
    cfg = config.RunConfig(privacy=privacy.PrivacyConfig(**settings))
    cfg.federation.rounds = 4
    with pytest.raises(ConfigError, match=r"privacy.epsilon = .* is out of reach: .*raise the "
                                          r"budget"):
        RunPlan.build(cfg, num_clients=20, input_dim=8, shared=SHAPES)


def test_a_small_budget_that_a_client_can_spend_is_planned():
    for mode in ("record", "user"):
        cfg = config.RunConfig(privacy=privacy.PrivacyConfig(mode=mode, epsilon=0.5))
        cfg.federation.rounds = 4
        assert RunPlan.build(cfg, num_clients=20, input_dim=8, shared=SHAPES).privacy.enabled


def test_distributed_noise_needs_secagg_and_auto_chooses_it_where_it_applies():
    record = privacy.PrivacyConfig(mode="record", noise="distributed")
    with pytest.raises(ConfigError, match="needs federation.secagg"):
        config.RunConfig(privacy=record).validate()
    with pytest.raises(ConfigError, match="one local SGD step"):
        config.RunConfig(privacy=record, federation=config.FederationConfig(
            secagg=True, local_steps=2)).validate()
    auto = privacy.PrivacyConfig(mode="record")
    secure = config.FederationConfig(secagg=True)
    assert config.RunConfig(privacy=auto).record_noise() == "local"
    assert config.RunConfig(privacy=auto, federation=secure).record_noise() == "distributed"
    # the batched engine computes SecAgg+'s sum of shares; local noise needs one message each
    assert config.RunConfig(privacy=auto, federation=secure).engine() == "batched"
    assert config.RunConfig(privacy=auto).engine() == "ray"


def test_distributed_noise_is_planned_for_the_honest_shares_secagg_guarantees():
    from fedrec.common import crosscheck

    fed = config.FederationConfig(clients_per_round=20, rounds=100, secagg=True,
                                  secagg_dropout=0.2, secagg_corruption=0.1)
    p = plan(federation=fed, privacy=privacy.PrivacyConfig(mode="record", epsilon=4.0,
                                                            sample_rate=0.5))
    resolved = p.privacy
    assert resolved.noise == "distributed"
    assert resolved.shares == 20 - 4 - 2  # 4 may drop, 2 may collude
    assert p.min_contributions == 16  # a sum of fewer would carry less noise than charged
    assert resolved.planned_rounds == privacy.planned_participations(100, 20, 20) == 100
    # σ spends the budget over the planned participations at the records' rate: checked by
    # an accountant independent of Opacus (dp-accounting)
    spent = crosscheck.rdp_epsilon([(resolved.noise_multiplier, 0.5, 100)], resolved.delta)
    assert spent == pytest.approx(4.0, rel=0.01) and spent <= 4.0 * 1.003
    assert p.update_bound == pytest.approx(
        64 * 1.0 + resolved.noise_multiplier / math.sqrt(14) * (math.sqrt(40) + 10))


def test_the_secure_noise_sampler_is_refused_where_opacus_would_need_torchcsprng():
    record = privacy.PrivacyConfig(mode="record", secure_rng=True)
    with pytest.raises(ConfigError, match="torchcsprng"):
        config.RunConfig(privacy=record).validate()
    config.RunConfig(privacy=record, federation=config.FederationConfig(secagg=True)).validate()
    config.RunConfig(privacy=privacy.PrivacyConfig(mode="user", secure_rng=True)).validate()
