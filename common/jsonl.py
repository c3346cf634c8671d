"""JSON-lines files as a run directory holds them (`rounds.jsonl`, `metrics.jsonl`, an egress
log): one JSON object per line, appended as things happen, so a crash can tear the last line."""

from __future__ import annotations

import json
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


def truncate_jsonl(path: Path, keep_before: int) -> None:
    """Keep only lines of rounds < `keep_before` (a resumed run redoes the rest). Atomic."""
    keep = [r for r in read_jsonl(path) if r["round"] < keep_before]
    atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
