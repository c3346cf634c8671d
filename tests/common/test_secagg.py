"""SecAgg+ parameters: derived neighbourhoods, no overflow, no truncation."""

import math

import numpy as np
import pytest
from scipy.stats import binom

from fedrec.common.errors import ConfigError
from fedrec.common.secagg import MODULUS, clipping_range, neighbourhood, quantization_error, quantization_range


@pytest.mark.parametrize("cohort", [50, 100, 1000])
@pytest.mark.parametrize("dropout, corruption, failure", [(0.2, 0.05, 1e-4), (0.3, 0.1, 1e-6)])
def test_sparse_neighbourhoods_meet_both_bounds(cohort, dropout, corruption, failure):
    shares, t = neighbourhood(cohort, dropout, corruption, failure)
    assert shares % 2 == 1 or shares == cohort
    if shares < cohort:
        k = shares - 1
        assert binom.sf(t - 1, k, corruption) <= failure / cohort  # colluders reach t
        assert binom.cdf(t - 1, k, 1 - dropout) <= failure / cohort  # survivors fall below t


def test_the_neighbourhood_grows_logarithmically():
    sizes = [neighbourhood(n, 0.2, 0.05, 1e-4)[0] for n in (100, 1000, 10000)]
    assert sizes[0] < 100 and sizes == sorted(sizes)
    assert sizes[2] - sizes[0] < 0.2 * sizes[0] * math.log10(100)  # far from linear growth


def test_small_cohorts_share_with_everyone_and_tolerate_the_stated_dropout():
    shares, t = neighbourhood(10, 0.3, 0.1, 1e-4)
    assert shares == 10 and t == 2  # ⌊0.1·10⌋ + 1 colluders needed; 7 survivors ≥ 2
    with pytest.raises(ConfigError, match="secagg_dropout"):
        neighbourhood(10, 0.7, 0.3, 1e-4)  # 3 survivors < 4 needed
    with pytest.raises(ConfigError, match="at least 3"):
        neighbourhood(2, 0.1, 0.0, 1e-4)


def test_quantized_sums_never_wrap_the_modulus():
    for cohort in (3, 10, 100, 1000):
        q = quantization_range(cohort)
        assert (cohort + 1) * q < MODULUS <= (cohort + 1) * 2 * q


def test_the_clipping_range_covers_every_coordinate_a_clipped_client_sends():
    rng = np.random.default_rng(0)
    current = [rng.normal(size=(30, 4)).astype(np.float32), rng.normal(size=7).astype(np.float32)]
    bound = 0.5
    r = clipping_range(current, bound)
    for _ in range(100):
        delta = [rng.normal(size=a.shape) for a in current]
        norm = math.sqrt(sum((d**2).sum() for d in delta))
        sent = [a + d * bound / norm for a, d in zip(current, delta)]
        assert max(np.abs(s).max() for s in sent) <= r
    assert quantization_error(r, quantization_range(100)) < 1e-5
