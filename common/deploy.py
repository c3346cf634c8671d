"""What the server and the client deployment helpers share: how Flower's processes are found.

A SuperLink and a SuperNode start `flower-superexec`, which starts `flwr-serverapp` or
`flwr-clientapp` — all by bare name, so they must be on PATH even when fedrec runs from a
virtual environment that was never activated.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from fedrec.common import atomic


def flower_executable(name: str) -> str:
    """The path of Flower's command `name`: beside this interpreter (a venv's bin directory),
    else on PATH, else the bare name."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name) or name


def process_env(home: str | os.PathLike | None = None) -> dict[str, str]:
    """The environment for a Flower process: this interpreter's bin directory first on PATH,
    FLWR_HOME (where a SuperLink or SuperNode installs the app bundles it runs, and where the
    `flwr` CLI reads its connections) when given, and no calls home: Flower's telemetry and
    update check are off unless the environment turns them on (a device that reports it
    runs a federation to a third party leaks something about its user)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    if home is not None:
        env["FLWR_HOME"] = str(Path(home).expanduser().resolve())
    return env


def write_file(path: str | os.PathLike, data: bytes, mode: int) -> None:
    """Write `data` atomically with permissions `mode`, set before the data lands."""
    with atomic.atomic_path(path) as tmp:  # mkstemp creates it 0600
        tmp.chmod(mode)
        tmp.write_bytes(data)


def flwr_home(explicit: str | os.PathLike | None = None) -> Path:
    """The Flower home directory: `explicit`, else $FLWR_HOME, else ~/.flwr (Flower's rule)."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if env := os.environ.get("FLWR_HOME"):
        return Path(env)
    return Path.home() / ".flwr"
