"""Accounting against published reference values and an independent accountant."""

import itertools
import json
import math
import re

import dp_accounting
import pytest
from dp_accounting import pld, rdp
from hypothesis import example, given
from hypothesis import strategies as st

from fedrec.common import privacy
from fedrec.common.errors import ConfigError


def independent(history, delta, kind):
    """ε from Google's dp-accounting: RDP for 'rdp', privacy-loss distributions for 'prv'."""
    runs = [(key, sum(n for *_, n in group))
            for key, group in itertools.groupby(history, key=lambda h: h[:2])]
    events = [dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(s)), n)
        for (s, q), n in runs]
    acc = rdp.RdpAccountant() if kind == "rdp" else pld.PLDAccountant()
    acc.compose(dp_accounting.ComposedDpEvent(events))
    return acc.get_epsilon(delta)


def test_published_reference_value_of_opacus_accountant_tests():
    # Opacus' test_rdp_accountant: σ=1.5, q=0.04, 2250 steps (= 90 epochs), δ=1e-5 -> 7.32
    assert privacy.epsilon([(1.5, 0.04, 2250)], 1e-5, "rdp") == pytest.approx(7.3291, rel=1e-3)
    assert independent([(1.5, 0.04, 2250)], 1e-5, "rdp") == pytest.approx(7.3291, rel=1e-3)


@pytest.mark.parametrize("history", [
    [(1.5, 0.04, 2250)],
    [(1.0, 0.25, 10)] * 3,                 # the three rounds at σ=1, q=0.25
    [(0.9, 1.0, 2), (0.9, 0.5, 4)],        # a client whose data grew: q changed
    [(2.7, 1.0, 18)],                      # full-batch local rounds
    [(0.57, 0.1, 1)] * 20,                 # user level: one release per round
    [(5.0, 0.01, 10000)],
])
@pytest.mark.parametrize("kind", ["rdp", "prv"])
def test_epsilon_agrees_with_dp_accounting_within_one_percent(history, kind):
    ours = privacy.epsilon(history, 1e-5, kind)
    assert ours == pytest.approx(independent(history, 1e-5, kind), rel=0.01)


def test_epsilon_is_composed_not_summed():
    one = privacy.epsilon([(1.0, 0.25, 10)], 1e-5)
    three = privacy.epsilon([(1.0, 0.25, 10)] * 3, 1e-5)
    assert one < three < 3 * one
    assert three == privacy.epsilon([(1.0, 0.25, 30)], 1e-5)  # one long-lived accountant
    assert privacy.epsilon([], 1e-5) == 0.0


def test_noise_for_epsilon_is_the_smallest_sigma_within_the_target():
    sigma = privacy.noise_for_epsilon(3.0, 1e-5, 0.1, 50)
    assert privacy.epsilon([(sigma, 0.1, 50)], 1e-5) <= 3.0
    assert privacy.epsilon([(sigma * 0.99, 0.1, 50)], 1e-5) > 3.0


def test_planned_participations_is_the_binomial_quantile():
    # Binomial(3, 0.5): P(X <= 1) = 0.5, P(X <= 2) = 0.875, P(X <= 3) = 1
    assert privacy.planned_participations(3, 5, 10, quantile=0.8) == 2
    assert privacy.planned_participations(3, 5, 10, quantile=0.9) == 3
    assert privacy.planned_participations(50, 100, 943) == 9  # ML-100K, 50 rounds of 100
    assert privacy.planned_participations(5, 100, 100) == 5  # everyone, every round


def test_resolve_fills_in_what_depends_on_the_federation():
    record = privacy.resolve(privacy.PrivacyConfig(mode="record"), 50, 100, 943)
    assert record.planned_rounds == 9 and record.noise_multiplier == 0
    user = privacy.resolve(privacy.PrivacyConfig(mode="user", epsilon=3.0), 20, 50, 1000)
    assert privacy.epsilon([(user.noise_multiplier, 0.05, 20)], 1e-5) == pytest.approx(3, rel=0.01)
    fixed = privacy.PrivacyConfig(mode="user", noise_multiplier=1.2)
    assert privacy.resolve(fixed, 20, 50, 1000).noise_multiplier == 1.2


@pytest.mark.parametrize("field, value, message", [
    ("mode", "central", "privacy.mode = 'central'"),
    ("accountant", "gdp", "privacy.accountant = 'gdp'"),
    ("delta", 0.0, "privacy.delta = 0.0"),
    ("epsilon", -1.0, "privacy.epsilon = -1.0"),
    ("max_grad_norm", 0.0, "max_grad_norm"),
    ("window", 0, "privacy.window = 0"),
])
def test_bad_settings_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        privacy.PrivacyConfig(**{field: value}).validate()


@pytest.mark.parametrize("field", ["epsilon", "noise_multiplier", "max_grad_norm"])
@given(value=st.floats(allow_nan=True, allow_infinity=True))
@example(value=math.inf)
@example(value=math.nan)
@example(value=-math.inf)
@example(value=0.0)
def test_a_budget_noise_or_clip_is_accepted_only_if_finite_and_in_range(field, value):
    in_range = value >= 0 if field == "noise_multiplier" else value > 0
    cfg = privacy.PrivacyConfig(**{field: value})
    if in_range and math.isfinite(value):
        assert cfg.validate() is cfg
    else:  # inf, nan and out of range: named with the value, never a run that promises nothing
        with pytest.raises(ConfigError, match=f"privacy.{field} = {re.escape(str(value))}; "):
            cfg.validate()


def test_ledger_lines_have_exactly_the_documented_keys(tmp_path):
    path = tmp_path / "privacy" / "ledger.jsonl"
    release = privacy.Release("record", "c-1", 3, 1.1, 0.5, 4, 1.0, 1e-5, "rdp", 2.5)
    privacy.append_release(path, release)
    privacy.append_release(path, release)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert tuple(json.loads(lines[0])) == privacy.LEDGER_KEYS
    assert privacy.read_ledger(path)[1]["epsilon"] == 2.5
    assert math.isclose(privacy.read_ledger(path)[0]["noise_multiplier"], 1.1)


def test_what_dp_releases_defaults_per_unit():
    from fedrec.common.privacy import PrivacyConfig

    assert PrivacyConfig(mode="record").released == "lowrank"
    assert PrivacyConfig(mode="user").released == "all"
    assert PrivacyConfig(mode="user", trained="lowrank").released == "lowrank"
    assert PrivacyConfig(mode="record", trained="encoder").released == "encoder"
