"""Checkpoints of the shared head (safetensors), with the server optimizer's state.

`checkpoints/round-NNNNNN.safetensors` holds the shared arrays under their parameter names, the
optimizer state under `server_opt.*`, and the round in the metadata. Written atomically; a
file that cannot be read back on resume (a disk error, an edit) is set aside as `*.corrupt` and
the run resumes from the newest checkpoint before it (`resume_point`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from fedrec.common.atomic import atomic_path
from fedrec.common.errors import FedrecError

log = logging.getLogger("fedrec")
_NAME = re.compile(r"^round-(\d{6})\.safetensors$")
OPT_PREFIX = "server_opt."


def round_path(directory: Path, round_: int) -> Path:
    """Where the checkpoint of round `round_` is kept in `directory`."""
    return Path(directory) / f"round-{round_:06d}.safetensors"


def save(directory: Path, round_: int, shared: dict[str, np.ndarray],
         server_opt: dict[str, np.ndarray]) -> Path:
    path = round_path(directory, round_)
    tensors = {**shared, **{OPT_PREFIX + k: v for k, v in server_opt.items()}}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                  metadata={"round": str(round_)})
    return path


def latest(directory: Path) -> Path | None:
    found = sorted(p for p in Path(directory).glob("round-*.safetensors") if _NAME.match(p.name))
    return found[-1] if found else None


class CorruptCheckpoint(FedrecError):
    """A checkpoint file that cannot be read back as one (the message names the file)."""


def load(path: Path) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(round, shared arrays by name, server optimizer state). Raises `CorruptCheckpoint` for
    a file that is not a complete checkpoint of the round its name says, or holds a non-finite
    value."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as fh:
            round_ = int((fh.metadata() or {})["round"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 — safetensors raises several types for bad bytes
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint "
                                f"({type(exc).__name__}: {exc})") from None
    match = _NAME.match(path.name)
    if match and int(match.group(1)) != round_:
        raise CorruptCheckpoint(f"{path}: holds round {round_}, not the round in its name")
    bad = next((k for k, v in tensors.items() if not np.all(np.isfinite(v))), None)
    if bad is not None:
        raise CorruptCheckpoint(f"{path}: array '{bad}' holds NaN or infinity")
    shared = {k: v for k, v in tensors.items() if not k.startswith(OPT_PREFIX)}
    opt = {k[len(OPT_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPT_PREFIX)}
    return round_, shared, opt


def resume_point(directory: Path) -> tuple[int, Path | None]:
    """(the round to resume after, its checkpoint) — the newest checkpoint that loads, or
    (0, None). A newer one that does not load is renamed `*.corrupt` (kept for inspection)
    with a one-line warning naming it, and the run falls back to the one before."""
    for path in sorted((p for p in Path(directory).glob("round-*.safetensors")
                        if _NAME.match(p.name)), reverse=True):
        try:
            return load(path)[0], path
        except CorruptCheckpoint as exc:
            path.replace(path.with_name(path.name + ".corrupt"))
            log.warning("warning: %s; resuming from the checkpoint before it", exc)
    return 0, None


def prune(directory: Path, keep) -> None:
    """Delete the checkpoints whose round `keep(round)` rejects, except the newest."""
    found = sorted(p for p in Path(directory).glob("round-*.safetensors") if _NAME.match(p.name))
    for path in found[:-1]:
        if not keep(int(_NAME.match(path.name).group(1))):
            path.unlink(missing_ok=True)
