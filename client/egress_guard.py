"""The egress guard: a Flower client mod that checks every reply against the wire schema
(`fedrec.common.wire`) after training and DP, before SecAgg+ masks it.

- A reply that breaks the schema is blocked: nothing of it is sent. The device logs what was
  wrong (logger `fedrec.egress`, ERROR), and the client raises `EgressBlocked`, which Flower
  turns into a well-formed error reply whose text holds only fixed violation codes.
- An exception inside the client becomes `ClientFailed` with only the exception's class name:
  Flower would otherwise send the exception's text, which can quote data or file paths. A
  reply the checks cannot even read is blocked as `guard-error`.
- Arrays must be exactly what Flower's legacy converter writes: a .npy payload and nothing
  else, no declared dtype or shape (free text there would travel with the array).
- In a SecAgg+ run a training reply leaves only inside the protocol: a plain training
  request is refused (`plain-update`).
- There is no setting that turns the guard off or widens what it allows. The one per-node
  allowance is for Flower's simulation engine: a get_properties reply may echo the
  `partition-id` the node was configured with (the server's map of simulated nodes).

Mods run outermost first, so the client's list is `[egress log, SecAgg+, guard]`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from fedrec.common import wire

log = logging.getLogger("fedrec.egress")


class EgressBlocked(RuntimeError):
    """A reply broke the wire schema and was not sent; the message lists the violation codes."""


class ClientFailed(RuntimeError):
    """The client raised while answering; the message is the exception's class name only."""


def egress_guard_mod(schema: wire.WireSchema | Callable[[object], wire.WireSchema]):
    """A client mod enforcing `schema` (or `schema(context)`, for apps that read their
    settings from the run's context) on every reply."""

    def mod(msg, context, call_next):
        message_type = msg.metadata.message_type
        try:
            reply = call_next(msg, context)
        except Exception as exc:  # noqa: BLE001 - every failure leaves only as a class name
            log.error("the client failed answering a %s message", message_type, exc_info=exc)
            raise ClientFailed(f"client failed ({type(exc).__name__})") from None
        if reply.has_error():
            log.error("the client built an error reply: %s", reply.error.reason)
            raise ClientFailed("client failed (error reply)")
        try:
            violations = _check(schema, msg, context, reply)
        except Exception as exc:  # noqa: BLE001 - a reply the checks cannot even read is blocked
            log.error("egress guard could not check a %s reply", message_type, exc_info=exc)
            violations = [wire.Violation("guard-error", repr(exc)[:200])]
        if violations:
            for v in violations:
                log.error("egress guard blocked a %s reply: %s (%s)", message_type, v.code, v.detail)
            codes = ", ".join(sorted({v.code for v in violations}))
            raise EgressBlocked(f"blocked by the egress guard: {codes}")
        return reply

    return mod


def _check(schema, msg, context, reply) -> list[wire.Violation]:
    rules = schema(context) if callable(schema) else schema
    node = context.node_config
    if "partition-id" in node and "num-partitions" in node:  # set by Flower's simulation engine
        rules = replace(rules, partition_id=int(node["partition-id"]))
    message_type = msg.metadata.message_type
    if message_type == "train" and rules.secagg and wire.SECAGG_RECORD not in msg.content:
        return [wire.Violation("plain-update", "this run sends updates only under SecAgg+")]
    received = None
    if message_type == "train" and "fitins.parameters" in msg.content:
        received = [_numpy(a) for a in msg.content["fitins.parameters"].values()]
    return wire.check_reply(rules, message_type, message_view(reply.content), received)


def message_view(content) -> dict:
    """A RecordDict as {name: (kind, {key: value})} with arrays deserialized (no pickle);
    an array that is not a well-formed NumPy payload stays an `Array` and fails the checks."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

    view = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            view[name] = ("array", {k: _numpy(v) for k, v in record.items()})
        elif isinstance(record, ConfigRecord):
            view[name] = ("config", dict(record))
        elif isinstance(record, MetricRecord):
            view[name] = ("metric", dict(record))
        else:
            view[name] = (type(record).__name__, {})
    return view


_NPY_HEADER = re.compile(rb"\{'descr': '([<>|=]?[a-z]\d{1,2})', 'fortran_order': (False|True), "
                         rb"'shape': \(((?:\d+, ?)*\d*)\), \}[ ]*\n")


def _numpy(array):
    """The NumPy array in a Flower `Array` exactly as Flower's legacy converter builds it
    (declared dtype '' and shape (), stype numpy.ndarray, a .npy payload with NumPy's header
    layout and not one byte more), read zero-copy; anything else stays as it is and fails the
    schema's checks. (np.load would also accept trailing bytes and parses the header with
    `ast.literal_eval`, 0.2 ms per array.)"""
    data = getattr(array, "data", None)
    if (not isinstance(data, bytes) or getattr(array, "stype", None) != "numpy.ndarray"
            or getattr(array, "dtype", None) != "" or tuple(getattr(array, "shape", (0,))) != ()):
        return array
    if data[:6] != b"\x93NUMPY" or len(data) < 10 or data[6] not in (1, 2, 3):
        return array
    start = 10 if data[6] == 1 else 12
    end = start + int.from_bytes(data[8:start], "little")
    match = _NPY_HEADER.fullmatch(data[start:end])
    if not match:
        return array
    dtype = np.dtype(match.group(1).decode())  # the pattern admits only plain numeric codes
    shape = tuple(int(d) for d in match.group(3).split(b",") if d.strip())
    if dtype.kind not in "biuf" or len(data) - end != dtype.itemsize * math.prod(shape):
        return array
    flat = np.frombuffer(data, dtype, offset=end)
    return flat.reshape(shape[::-1]).T if match.group(2) == b"True" else flat.reshape(shape)
