"""Gaussian noise for DP releases, from a device's secret seed.

Two samplers, chosen by `privacy.secure_rng`:

- fast (default): a seeded PRNG (numpy's PCG64 or torch's generator). Fine for simulations.
- secure: a cryptographic stream — SHAKE-256 keyed by the secret seed, so a retried release
  replays the same noise — turned into Gaussians by Box–Muller in float64, and each noise value
  is the sum of 4 independent Gaussians divided by 2 (same std). A PRNG's state can be
  recovered from its outputs; a SHAKE stream cannot. The sum of 4 blocks floating-point attacks
  that invert a single Gaussian's bits (Holohan & Braghin 2021, the fix Opacus' `secure_mode`
  uses: the attack's cost grows from 2⁵³ to 2¹⁵⁹). It does not make the values exact draws of a
  discrete distribution on SecAgg+'s integer grid (the distributed discrete Gaussian of
  Kairouz et al.), which a deployment with a stronger threat model would add.
"""

from __future__ import annotations

import hashlib

import numpy as np

SUMMANDS = 4  # Gaussians summed per value in secure mode (Opacus' n = 2: 2n summands)


def gaussian(shape: tuple[int, ...], std: float, seed: int, stream: int,
             secure: bool) -> np.ndarray:
    """float64 N(0, std²) noise of `shape`, a function of (`seed`, `stream`) only: the same
    secret seed and stream give the same noise (a replayed release), different streams
    independent noise."""
    count = int(np.prod(shape))
    if not secure:
        return np.random.default_rng([seed, stream]).normal(0.0, std, count).reshape(shape)
    key = hashlib.shake_256(f"fedrec-noise/{seed}/{stream}".encode())
    # two 53-bit uniforms in (0, 1] per Box–Muller pair, SUMMANDS values per output value
    pairs = (count * SUMMANDS + 1) // 2
    words = np.frombuffer(key.digest(16 * pairs), dtype="<u8").reshape(pairs, 2)
    u = ((words >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    radius = np.sqrt(-2.0 * np.log(u[:, 0]))
    angle = 2.0 * np.pi * u[:, 1]
    normals = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])
    blocks = normals[: count * SUMMANDS].reshape(SUMMANDS, count)
    return (blocks.sum(0) / np.sqrt(SUMMANDS) * std).reshape(shape)
