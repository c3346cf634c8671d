"""The device's own store of personal state (the personal vector p_u), versioned by round.

Each save writes `round-NNNNNN.safetensors` atomically. A load asks for the newest version from
before a given round, so a client resumed after a server crash continues from the state that
matches the server's last checkpoint; versions older than the one that checkpoint needs are
pruned. Nothing in here is ever sent anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from fedrec.common.atomic import atomic_path

_VERSION = re.compile(r"^round-(\d{6})\.safetensors$")


class PersonalStore:
    """Personal state of one client in directory `root` (on a device: its data directory).
    `fsync=False` (simulated devices) skips the flush to disk: a killed run still finds every
    version whole; a power loss could only cost a device its newest personal vector, which
    reconstruction against the head (`fedrec.client.personal`) makes up for."""

    def __init__(self, root: str | Path, fsync: bool = True):
        self.root, self.fsync = Path(root), fsync

    def versions(self) -> list[int]:
        if not self.root.is_dir():
            return []
        found = (_VERSION.match(p.name) for p in self.root.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def load(self, before_round: int) -> dict[str, np.ndarray] | None:
        """The newest state saved in a round < `before_round`, or None (a new client)."""
        usable = [r for r in self.versions() if r < before_round]
        return load_file(str(self._path(usable[-1]))) if usable else None

    def save(self, round_: int, state: dict[str, np.ndarray], keep_from: int = 0) -> None:
        """Save the state after `round_`; prune versions not needed to resume at `keep_from`
        (the server's last checkpoint round): everything older than the newest version <=
        `keep_from` goes, and so does any stale version > `round_` from a crashed run."""
        with atomic_path(self._path(round_), suffix=".safetensors", fsync=self.fsync) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp))
        versions = self.versions()
        base = max((r for r in versions if r <= keep_from), default=None)
        for r in versions:
            if (base is not None and r < base) or r > round_:
                self._path(r).unlink(missing_ok=True)

    def discard_after(self, round_: int) -> None:
        """Delete versions saved after `round_` (a resumed run redoes those rounds)."""
        for r in self.versions():
            if r > round_:
                self._path(r).unlink(missing_ok=True)

    def _path(self, round_: int) -> Path:
        return self.root / f"round-{round_:06d}.safetensors"
