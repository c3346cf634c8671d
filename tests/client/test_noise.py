"""The noise samplers: seeded (a retried release replays its noise), independent per stream,
and N(0, std²) in both modes."""

import numpy as np
import pytest
from scipy import stats

from fedrec.client.noise import gaussian


@pytest.mark.parametrize("secure", [False, True])
def test_noise_is_gaussian_with_the_given_std(secure):
    x = gaussian((200, 500), 0.3, seed=12345, stream=0, secure=secure)
    assert x.shape == (200, 500) and x.dtype == np.float64
    assert x.std() == pytest.approx(0.3, rel=0.01) and abs(x.mean()) < 0.003
    assert stats.kstest(x.ravel() / 0.3, "norm").pvalue > 1e-3


@pytest.mark.parametrize("secure", [False, True])
def test_the_same_secret_seed_replays_and_streams_are_independent(secure):
    a = gaussian((1000,), 1.0, seed=7, stream=3, secure=secure)
    assert np.array_equal(a, gaussian((1000,), 1.0, seed=7, stream=3, secure=secure))
    for other in (gaussian((1000,), 1.0, seed=7, stream=4, secure=secure),
                  gaussian((1000,), 1.0, seed=8, stream=3, secure=secure)):
        assert abs(np.corrcoef(a, other)[0, 1]) < 0.15


def test_the_secure_sampler_is_not_the_fast_one():
    fast = gaussian((1000,), 1.0, seed=7, stream=0, secure=False)
    assert not np.allclose(fast, gaussian((1000,), 1.0, seed=7, stream=0, secure=True))
