"""Checkpoints of the shared head (safetensors), with the server optimizer's state.

`checkpoints/round-NNNNNN.safetensors` holds the shared arrays under their parameter names, the
optimizer state under `server_opt.*`, and the round in the metadata. Written atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from fedrec.common.atomic import atomic_path

_NAME = re.compile(r"^round-(\d{6})\.safetensors$")
OPT_PREFIX = "server_opt."


def save(directory: Path, round_: int, shared: dict[str, np.ndarray],
         server_opt: dict[str, np.ndarray]) -> Path:
    path = Path(directory) / f"round-{round_:06d}.safetensors"
    tensors = {**shared, **{OPT_PREFIX + k: v for k, v in server_opt.items()}}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                  metadata={"round": str(round_)})
    return path


def latest(directory: Path) -> Path | None:
    found = sorted(p for p in Path(directory).glob("round-*.safetensors") if _NAME.match(p.name))
    return found[-1] if found else None


def load(path: Path) -> tuple[int, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(round, shared arrays by name, server optimizer state)."""
    with safe_open(str(path), framework="numpy") as fh:
        round_ = int(fh.metadata()["round"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    shared = {k: v for k, v in tensors.items() if not k.startswith(OPT_PREFIX)}
    opt = {k[len(OPT_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPT_PREFIX)}
    return round_, shared, opt
