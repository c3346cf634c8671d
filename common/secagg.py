"""The parameters of SecAgg+ (Flower's secure aggregation), derived rather than guessed.

- the **neighbourhood** (`num_shares`, `reconstruction_threshold`) as in SecAgg+ (Bell et al.,
  CCS 2020): each client shares its keys with k − 1 neighbours; the threshold t is the smallest
  for which a `corruption` fraction of colluding clients holds t shares of someone with
  probability ≤ `failure` / m, and k the smallest (odd) for which a `dropout` fraction of the
  neighbours leaves fewer than t with probability ≤ `failure` / m. k grows like log m.
- the **clipping range**: every coordinate a client sends is inside
  [−(‖θ_global‖∞ + B), ‖θ_global‖∞ + B] when its update norm is ≤ B, and clients clip their
  update to B before masking, so nothing is ever truncated by the protocol;
- the **quantization range**: the largest power of two whose m-fold sum fits the 2³² modulus.
"""

from __future__ import annotations

import math

import numpy as np

from fedrec.common.errors import ConfigError

MODULUS = 2**32


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P[Binomial(n, p) <= k]."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, min(k, n) + 1))


def neighbourhood(cohort: int, dropout: float, corruption: float, failure: float) -> tuple[int, int]:
    """(num_shares, reconstruction_threshold) for `cohort` clients per round, tolerating a
    `dropout` fraction of clients lost after key sharing, secure against a `corruption` fraction
    of colluding clients, each failing with probability ≤ `failure` per round.

    Sparse neighbourhoods (k < cohort) are sized with binomial tails as in SecAgg+; when none
    is small enough, every client is every client's neighbour and the worst case is exact:
    at most ⌊corruption·m⌋ colluders (< t) and at least m − ⌈dropout·m⌉ survivors (≥ t)."""
    if not 0 <= dropout < 1 or not 0 <= corruption < 1 or not 0 < failure < 1:
        raise ConfigError(f"secagg: dropout = {dropout}, corruption = {corruption} and failure "
                          f"= {failure} must be in [0, 1), [0, 1) and (0, 1)")
    if cohort < 3:
        raise ConfigError(f"secagg needs at least 3 clients per round, got {cohort}")
    bound = failure / cohort  # union bound over the clients of a round
    for shares in range(3, cohort, 2):
        k = shares - 1  # neighbours
        t = next((t for t in range(2, shares) if
                  1 - _binom_cdf(t - 1, k, corruption) <= bound), None)
        if t is not None and _binom_cdf(t - 1, k, 1 - dropout) <= bound:
            return shares, t
    t = max(2, math.floor(corruption * cohort) + 1)
    if cohort - math.ceil(dropout * cohort) >= t and t < cohort:
        return cohort, t
    raise ConfigError(
        f"secagg: {cohort} clients per round cannot tolerate a dropout of {dropout:.0%} "
        f"against {corruption:.0%} colluding clients; sample more clients per round or lower "
        "federation.secagg_dropout")


def quantization_range(cohort: int) -> int:
    """The largest power of two Q with cohort · Q < 2³² (sums of quantized values never wrap)."""
    return 2 ** int(math.floor(math.log2((MODULUS - 1) / (cohort + 1))))


def clipping_range(current: list[np.ndarray], update_bound: float) -> float:
    """The largest coordinate a client can send: ‖θ_global‖∞ + the update-norm bound."""
    return float(max(np.abs(a).max() for a in current if a.size)) + float(update_bound)


def quantization_error(clip: float, quant_range: int) -> float:
    """Worst-case absolute error of one coordinate of the aggregate (one quantization step)."""
    return 2 * clip / quant_range
