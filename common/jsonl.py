"""JSON-lines files as a run directory holds them (`rounds.jsonl`, `metrics.jsonl`, an egress
log): one JSON object per line, appended as things happen, so a crash can tear the last line.

Written as strict JSON (RFC 8259): a value that is not a finite number (a round without a
training loss, a metric without users) is written as `null`, never as a bare `NaN`, so any
JSON reader can load a run's files."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fedrec.common import atomic


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a torn last line (a crash mid-write) is ignored."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
    return records


def strict(value):
    """`value` with every non-finite float (NaN, ±inf) replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def dumps(record, **kwargs) -> str:
    """`record` as strict JSON (non-finite numbers as null; `kwargs` go to `json.dumps`)."""
    return json.dumps(strict(record), allow_nan=False, **kwargs)


def number(value) -> float:
    """A numeric field read back from a run's file: NaN for null (not a finite number)."""
    return float("nan") if value is None else float(value)


def truncate_jsonl(path: Path, keep_before: int) -> None:
    """Keep only lines of rounds < `keep_before` (a resumed run redoes the rest). Atomic."""
    keep = [r for r in read_jsonl(path) if r["round"] < keep_before]
    atomic.write_text(path, "".join(dumps(r) + "\n" for r in keep))
