"""An audit log of what leaves a client: a Flower client mod that writes one JSON line per
outgoing message — its type, and for every record its keys with array shapes and dtypes, or
scalar values — to a local file. Placed outermost in the mod list, it sees the message exactly
as it goes on the wire."""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path

import numpy as np


def summarize(content) -> dict:
    """{record name: {key: {"shape", "dtype"} for arrays | value for scalars/lists}}."""
    out: dict = {}
    for name, record in content.items():
        entries = {}
        for key, value in record.items():
            if hasattr(value, "numpy") and hasattr(value, "stype"):  # a Flower Array
                array = value.numpy()  # legacy parameters declare no shape: read the payload
                entries[key] = {"shape": list(array.shape), "dtype": str(array.dtype),
                                "bytes": len(value.data)}
            elif isinstance(value, bytes):
                entries[key] = {"bytes": len(value)}
            elif isinstance(value, (list, tuple)):
                entries[key] = [v if not isinstance(v, bytes) else {"bytes": len(v)} for v in value]
            else:
                entries[key] = value.item() if isinstance(value, np.generic) else value
        out[name] = {"kind": type(record).__name__, "entries": entries}
    return out


def egress_log_mod(path: str | Path):
    """A client mod appending a summary of every reply to `path` (JSON lines, file-locked so
    that concurrent simulated clients never interleave a line)."""
    path = str(path)

    def mod(msg, context, call_next):
        reply = call_next(msg, context)
        entry = {
            "time": round(time.time(), 3),
            "message_type": reply.metadata.message_type,
            "error": reply.error.reason if reply.has_error() else None,
            "records": {} if reply.has_error() else summarize(reply.content),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(entry, default=str) + "\n")
            fcntl.flock(fh, fcntl.LOCK_UN)
        return reply

    return mod
