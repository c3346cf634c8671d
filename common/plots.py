"""Plots people look at: one way to make and save them (headless, atomic PNG writes)."""

from __future__ import annotations

from pathlib import Path

from fedrec.common.atomic import atomic_path


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (imported lazily: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 120) -> Path:
    """Write `fig` to `path` as a PNG atomically (never a half-written image), then close it."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return Path(path)
