"""Printing helpers shared by the commands: metric tables and progress bars (stderr)."""

from __future__ import annotations

import math
import sys


def format_table(rows: list[dict], columns: list[str], first: str = "model") -> str:
    """A plain-text table: one row per dict, `first` then `columns`; floats with 4 decimals."""

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"  # null in a run's files: nothing to average (no users, no loss)
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    header = [first, *columns]
    body = [[cell(row.get(c, "")) for c in header] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])


def progress_bar(total: int, desc: str):
    """A tqdm bar on stderr; callers update it with .update() and .set_postfix()."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=True)


def epoch_reporter(bar):
    """A `fit(progress=...)` callback for `bar`: each call (epoch, values) moves the bar to
    that epoch and shows the values (the epoch's loss, the latest validation metric)."""

    def report(epoch: int, values: dict) -> None:
        bar.n = epoch + 1
        bar.set_postfix({k: round(v, 4) for k, v in values.items()}, refresh=True)

    return report
