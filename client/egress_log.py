"""An audit log of what leaves a client: a Flower client mod that writes one JSON line per
outgoing message — its type, and for every record its keys with array shapes and dtypes, or
scalar values — to a local file. Placed outermost in the mod list, it sees the message exactly
as it goes on the wire: masked under SecAgg+, the protocol's own key-exchange messages
included, and error replies with the text Flower sends for them.

Check a log against the wire schema with `fedrec.common.wire.check_log_entry`."""

from __future__ import annotations

import fcntl
import json
import logging
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
                entries[key] = {"bytes": len(value.data), "stype": value.stype,
                                "declared_dtype": value.dtype, "declared_shape": list(value.shape)}
                try:  # legacy parameters declare no shape: read the payload's
                    array = value.numpy()
                    entries[key].update(shape=list(array.shape), dtype=str(array.dtype))
                except Exception:  # noqa: BLE001 - not a NumPy payload: logged as bytes
                    entries[key]["unreadable"] = True
            elif isinstance(value, bytes):
                entries[key] = {"bytes": len(value)}
            elif isinstance(value, (list, tuple)):
                entries[key] = [v if not isinstance(v, bytes) else {"bytes": len(v)} for v in value]
            else:
                entries[key] = value.item() if isinstance(value, np.generic) else value
        out[name] = {"kind": type(record).__name__, "entries": entries}
    return out


NODE_CONFIG_KEY = "egress-log"  # a SuperNode's `--node-config "egress-log='PATH'"`
log = logging.getLogger("fedrec.egress")


class EgressLogFailed(RuntimeError):
    """The egress log could not be written: nothing is sent unlogged (fixed text: the
    OSError's own text would quote the log's path)."""


def egress_log_mod(path: str | Path | None = None):
    """A client mod appending a summary of every reply to `path`, or, without one, to the
    node's `egress-log` node-config value, else — on a simulation's virtual node only, never
    a path the server names for a real device — the run's `egress-log` run-config value, when
    set (JSON lines, file-locked so that concurrent simulated clients never interleave a
    line)."""
    from fedrec.client.device import simulated

    fixed = None if path is None else str(Path(path).resolve())

    def mod(msg, context, call_next):
        target = (fixed or context.node_config.get(NODE_CONFIG_KEY)
                  or (context.run_config.get(NODE_CONFIG_KEY) if simulated(context) else None))
        if not target:
            return call_next(msg, context)
        try:
            reply = call_next(msg, context)
        except Exception as exc:
            # Flower sends the exception as an error reply with exactly this text
            _append(target, msg.metadata.message_type, f"{type(exc)}:<'{exc}'>", {})
            raise
        _append(target, reply.metadata.message_type,
                reply.error.reason if reply.has_error() else None,
                {} if reply.has_error() else summarize(reply.content))
        return reply

    return mod


def _append(path: str, message_type: str, error: str | None, records: dict) -> None:
    entry = {"time": round(time.time(), 3), "message_type": message_type, "error": error,
             "records": records}
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(entry, default=str) + "\n")
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError as exc:
        log.error("cannot write the egress log %s", path, exc_info=exc)
        raise EgressLogFailed("the egress log could not be written") from None
