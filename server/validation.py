"""Checks on a client update before it is aggregated: the arrays must be exactly the shared
head's (count, shapes, float32), finite, and within `max_update_norm` (L2 over all arrays) of
the current global model. Under secure aggregation only the sum can be checked (see docs)."""

from __future__ import annotations

import numpy as np


class UpdateRejected(ValueError):
    """A client update that must not be aggregated; the message says why."""


def validate_update(arrays: list, current: list[np.ndarray], max_update_norm: float) -> float:
    """Raise `UpdateRejected` unless `arrays` is a valid update; returns its L2 norm."""
    if len(arrays) != len(current):
        raise UpdateRejected(f"expected {len(current)} arrays, got {len(arrays)}")
    squared = 0.0
    for i, (a, c) in enumerate(zip(arrays, current)):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32:
            raise UpdateRejected(f"array {i}: expected float32, got {getattr(a, 'dtype', type(a))}")
        if a.shape != c.shape:
            raise UpdateRejected(f"array {i}: expected shape {c.shape}, got {a.shape}")
        if not np.isfinite(a).all():
            raise UpdateRejected(f"array {i}: contains NaN or inf")
        squared += float(np.square(a.astype(np.float64) - c).sum())
    norm = squared**0.5
    if norm > max_update_norm:
        raise UpdateRejected(f"update norm {norm:.3g} exceeds the bound {max_update_norm:.3g}")
    return norm
