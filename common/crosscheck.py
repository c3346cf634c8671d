"""An accountant independent of the one that wrote the ledger: Google's `dp-accounting`.

The run's own ε comes from Opacus' accountants (`fedrec.common.privacy`). An audit recomputes
every ε from the logged mechanism parameters — σ, q and steps of each release, and δ — with
`dp-accounting`: RDP over the same orders (the ε it reports is the same bound, computed by
other code), and privacy-loss distributions (PLD, the numerical method PRV accountants use).
Both are cached (RDP per (σ, q); PLD per history), so thousands of ledger lines that share
mechanisms cost little.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np

from fedrec.common.privacy import RDP_ORDERS

PLD_FINE = 1e-4  # dp-accounting's default discretization: ε within ~0.1 % of the exact value
PLD_COARSE = 1e-3  # 5x faster, ε a little pessimistic: for side-by-side values only


def _quiet() -> None:
    # dp-accounting logs through absl a warning per fractional order it cannot converge on
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with dp-accounting
        logging.getLogger("absl").setLevel(logging.ERROR)


@lru_cache(maxsize=4096)
def _rdp_per_step(sigma: float, sample_rate: float) -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian step at every order of RDP_ORDERS."""
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    _quiet()
    return np.asarray(rdp._compute_rdp_poisson_subsampled_gaussian(  # noqa: SLF001
        sample_rate, sigma, RDP_ORDERS), dtype=np.float64)


def rdp_epsilon(history, delta: float) -> float:
    """ε after `history` [(σ, q, steps), ...] at `delta`, by dp-accounting's RDP."""
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    if not history:
        return 0.0
    if not hasattr(rdp, "_compute_rdp_poisson_subsampled_gaussian"):  # not in this version:
        return _rdp_epsilon_public(tuple(map(tuple, history)), float(delta))  # slower, same ε
    total = sum(_rdp_per_step(float(s), float(q)) * int(n) for s, q, n in history)
    return float(rdp.compute_epsilon(RDP_ORDERS, total, delta)[0])


@lru_cache(maxsize=4096)
def _rdp_epsilon_public(history: tuple, delta: float) -> float:
    import dp_accounting
    from dp_accounting import rdp

    _quiet()
    accountant = rdp.RdpAccountant(orders=list(RDP_ORDERS))
    for sigma, q, steps in history:
        accountant.compose(dp_accounting.PoissonSampledDpEvent(
            q, dp_accounting.GaussianDpEvent(sigma)), int(steps))
    return float(accountant.get_epsilon(delta))


@lru_cache(maxsize=1024)
def _pld_epsilon(history: tuple, delta: float, discretization: float) -> float:
    import dp_accounting
    from dp_accounting import pld

    _quiet()
    accountant = pld.PLDAccountant(value_discretization_interval=discretization)
    for sigma, q, steps in history:
        accountant.compose(dp_accounting.PoissonSampledDpEvent(
            q, dp_accounting.GaussianDpEvent(sigma)), steps)
    return float(accountant.get_epsilon(delta))


def pld_epsilon(history, delta: float, fine: bool = True) -> float:
    """ε after `history` at `delta`, by dp-accounting's privacy-loss distributions
    (consecutive releases with the same (σ, q) are merged first); `fine=False` discretizes
    10x coarser (faster, slightly pessimistic)."""
    merged: list[list] = []
    for s, q, n in history:
        if merged and merged[-1][:2] == [float(s), float(q)]:
            merged[-1][2] += int(n)
        else:
            merged.append([float(s), float(q), int(n)])
    if not merged:
        return 0.0
    return _pld_epsilon(tuple(map(tuple, merged)), float(delta), PLD_FINE if fine else PLD_COARSE)
