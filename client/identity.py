"""The device's pseudonymous identity: a random id per install, the only name a device ever
uses off the device (ledger lines, logs). It is not derived from the user id, so nothing maps
it back to a user except this file on the device itself.

`rotate` replaces it on request (e.g. when the user asks, or on a schedule an app chooses):
later ledger lines carry the new name. The device's own privacy accountant (`privacy.json`)
is not touched, so the budget keeps counting across rotations — and the cumulative ε in the
next ledger line shows a reader that the new name continues some earlier device.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from fedrec.common import atomic

IDENTITY_FILE = "identity.json"


def pseudonym(device_dir: str | Path) -> str:
    """This device's pseudonym ("c-" + 16 random hex digits), created on first use."""
    path = Path(device_dir) / IDENTITY_FILE
    if path.exists():
        return json.loads(path.read_text())["pseudonym"]
    return rotate(device_dir)


def rotate(device_dir: str | Path) -> str:
    """Replace this device's pseudonym with a fresh random one (atomically); returns it. The
    old one is not kept anywhere."""
    name = "c-" + secrets.token_hex(8)
    path = Path(device_dir) / IDENTITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps({"pseudonym": name}))
    return name
