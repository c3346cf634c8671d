"""The wire schema: everything a client's reply may contain, and nothing else.

A reply is checked as a *view*: {record name: (kind, {key: value})}, kind "array" (values are
NumPy arrays), "config" or "metric" (values are scalars, strings, bytes or lists). The client's
egress guard checks the plaintext reply before SecAgg+ masks it (`check_reply`); an auditor
checks the egress log, which records what finally left (`check_log_entry`).

What may leave, per message type (legacy FitRes/EvaluateRes/GetPropertiesRes records):

| reply | records | allowed |
|---|---|---|
| train | `fitres.parameters` | exactly the shared arrays: count, shapes, dtype, finite, ‖Δ‖₂ bounded |
| | `fitres.num_examples` | one count, 0 or a power of two (bucketed); 0/1 under DP |
| | `fitres.metrics` | `loss` (not under DP or SecAgg+), `declined` = 1 (DP budget spent) |
| evaluate | `evaluateres.loss` / `.num_examples` / `.metrics` | loss, 0/1, the four ranking metrics, all in [0, 1] |
| get_properties | `getpropertiesres.properties` | only a simulation's `partition-id`, as configured for the node |
| all | `*.status` | code 0, message "Success" |

No other record, key, string or bytes value passes. Violations carry a fixed code (safe to
send) and a detail (kept on the device: it may quote the offending value).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np

EVAL_METRICS = ("hr@10", "ndcg@10", "recall@20", "mrr@10")
STATUS = {"code": 0, "message": "Success"}
MAX_LOSS = 1e3  # a training loss (cross-entropy over the catalog) above this is not a loss
MAX_ABS_PARAMETER = 1e4  # no parameter of the shared head is anywhere near this
REPLY_RECORDS = {
    "train": "fitres",
    "evaluate": "evaluateres",
    "get_properties": "getpropertiesres",
}
# what SecAgg+ itself sends, per stage (flwr.common.secure_aggregation.secaggplus_constants)
SECAGG_RECORD = "secaggplus_configs"
SECAGG_STAGE_KEYS = ({"pk1", "pk2"}, {"dsts", "ctxts"}, {"masked_params"}, {"nids", "shares"})
CODES = ("message-type", "unexpected-record", "record-kind", "status", "array-count",
         "array-dtype", "array-shape", "non-finite", "value-range", "update-norm",
         "unexpected-key", "count-not-bucketed", "plain-update", "guard-error")
NORM_TOLERANCE = 1e-5  # relative: float32 sums of squares over ~10⁵ coordinates
_CODE = "|".join(CODES)
# the only error texts a client sends, as the egress log records them: Flower's
# "<class '…'>:<'…'>" around a fixed message (Flower's simulation engine sends the same
# message wrapped in its own ClientAppException instead)
ERROR_TEXTS = re.compile(
    r"(<class 'fedrec\.client\.egress_guard\.EgressBlocked'>:<'blocked by the egress guard: "
    rf"({_CODE})(, ({_CODE}))*'>"
    r"|<class 'fedrec\.client\.egress_guard\.ClientFailed'>:<'client failed "
    r"\((error reply|[A-Za-z_][A-Za-z0-9_]*)\)'>"
    r"|<class 'fedrec\.client\.app\.PlainUpdateRefused'>:<'this client sends updates only "
    r"under SecAgg\+'>"
    r"|<class 'fedrec\.client\.egress_log\.EgressLogFailed'>:<'the egress log could not be "
    r"written'>)")
NPY_HEADER_BYTES = (64, 256)  # what np.save puts before the data


class Violation(NamedTuple):
    code: str  # fixed vocabulary, e.g. "unexpected-key": the only part that leaves the device
    detail: str  # where and what, for the device's own log


@dataclass(frozen=True)
class WireSchema:
    """What this run's clients may send. `shapes`: the shared arrays, in order; `dtype`:
    'float32' ('float64' under SecAgg+, which quantizes in the arrays' dtype);
    `max_update_norm`: bound on ‖reply − received‖₂ over all arrays; `private`: a DP run
    (counts 0/1, no loss); `send_loss`: plain runs report the training loss;
    `max_count`: the largest count bucket; `secagg`: training replies leave only inside
    SecAgg+; `partition_id`: the simulation's node partition, which a get_properties reply
    may echo (None on a real device)."""

    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "float32"
    max_update_norm: float = math.inf
    private: bool = False
    send_loss: bool = True
    max_count: int = 2**30
    secagg: bool = False
    partition_id: int | None = None

    @classmethod
    def for_run(cls, shapes, update_bound: float, secagg: bool, private: bool,
                secagg_max_weight: float) -> WireSchema:
        """The schema of a run: float64 and capped, loss-free counts under SecAgg+ (whose
        counts and metrics reach the server in plaintext); no loss under DP."""
        return cls(tuple(tuple(int(d) for d in s) for s in shapes),
                   dtype="float64" if secagg else "float32",
                   max_update_norm=float(update_bound) if update_bound > 0 else math.inf,
                   private=private, send_loss=not (secagg or private),
                   max_count=int(secagg_max_weight) if secagg else 2**30, secagg=secagg)

    def to_json(self) -> str:
        data = asdict(self)
        data["max_update_norm"] = None if math.isinf(self.max_update_norm) else self.max_update_norm
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> WireSchema:
        data = json.loads(text)
        data["shapes"] = tuple(tuple(s) for s in data["shapes"])
        if data.get("max_update_norm") is None:
            data["max_update_norm"] = math.inf
        return cls(**data)

    def fit_metrics(self) -> set[str]:
        return ({"declined"} if self.private else set()) | ({"loss"} if self.send_loss else set())


def bucket_count(n: int, max_count: int = 2**30) -> int:
    """`n` training examples as a power of two (nearest in log scale: 3 -> 4, 5 -> 4, 6 -> 8),
    at most the largest power of two <= `max_count`; 0 stays 0. What a server learns from a
    count is then its order of magnitude."""
    if n <= 0:
        return 0
    top = 1 << (max(1, int(max_count)).bit_length() - 1)
    return min(1 << round(math.log2(n)), top)


def is_bucketed(n, max_count: int = 2**30) -> bool:
    return _is_int(n) and (n == 0 or (0 < n <= max_count and n & (n - 1) == 0))


def check_reply(schema: WireSchema, message_type: str, view: dict,
                received: list[np.ndarray] | None = None) -> list[Violation]:
    """Every way the plaintext reply `view` breaks `schema` ([] = it may be sent).
    `received`: the arrays the server sent (for the update-norm bound of a train reply)."""
    prefix = REPLY_RECORDS.get(message_type)
    if prefix is None:
        return [Violation("message-type", f"no reply of type {message_type!r} may be sent")]
    out = _check_records(view, prefix, message_type)
    if out:
        return out
    out += _check_status(view[f"{prefix}.status"][1])
    if message_type == "train":
        out += _check_arrays(schema, view[f"{prefix}.parameters"][1], received)
        out += _check_fit_scalars(schema, view)
    elif message_type == "evaluate":
        out += _check_eval_scalars(view)
    else:
        out += _check_properties(schema, view[f"{prefix}.properties"][1])
    return out


def _records(prefix: str, message_type: str) -> dict[str, str]:
    if message_type == "train":
        return {f"{prefix}.parameters": "array", f"{prefix}.metrics": "config",
                f"{prefix}.num_examples": "metric", f"{prefix}.status": "config"}
    if message_type == "evaluate":
        return {f"{prefix}.loss": "metric", f"{prefix}.num_examples": "metric",
                f"{prefix}.metrics": "config", f"{prefix}.status": "config"}
    return {f"{prefix}.properties": "config", f"{prefix}.status": "config"}


def _check_records(view: dict, prefix: str, message_type: str) -> list[Violation]:
    expected = _records(prefix, message_type)
    out = []
    if set(view) != set(expected):
        out.append(Violation("unexpected-record",
                             f"records {sorted(map(repr, view))}, expected {sorted(expected)}"))
    for name, (kind, _) in view.items():
        if name in expected and kind != expected[name]:
            out.append(Violation("record-kind", f"{name} is a {kind} record, expected "
                                                f"{expected[name]}"))
    return out


def _check_status(entries: dict) -> list[Violation]:
    if set(entries) != set(STATUS) or any(
            type(entries[k]) is not type(v) or entries[k] != v for k, v in STATUS.items()):
        return [Violation("status", f"status {_short(entries)}, expected {STATUS}")]
    return []


def _check_arrays(schema: WireSchema, entries: dict,
                  received: list[np.ndarray] | None) -> list[Violation]:
    keys = [str(i) for i in range(len(schema.shapes))]
    if list(entries) != keys:
        return [Violation("array-count", f"array keys {_short(list(entries))}, expected {keys}")]
    out, squared = [], 0.0
    if received is not None and len(received) != len(keys):
        out.append(Violation("update-norm", f"{len(received)} arrays received, {len(keys)} sent"))
    for i, key in enumerate(keys):
        a = entries[key]
        if not isinstance(a, np.ndarray) or a.dtype != np.dtype(schema.dtype):
            out.append(Violation("array-dtype", f"array {key}: {getattr(a, 'dtype', type(a))}, "
                                                f"expected {schema.dtype}"))
            continue
        if a.shape != tuple(schema.shapes[i]):
            out.append(Violation("array-shape", f"array {key}: shape {a.shape}, expected "
                                                f"{tuple(schema.shapes[i])}"))
            continue
        # max/min propagate NaN and are single passes without temporaries; an array known
        # only by its log summary (a broadcast zero: all strides 0) has no values to scan
        scan = a.size and (a.ndim == 0 or any(a.strides))
        hi, lo = (float(a.max()), float(a.min())) if scan else (0.0, 0.0)
        if not (math.isfinite(hi) and math.isfinite(lo)):
            out.append(Violation("non-finite", f"array {key} holds NaN or inf"))
            continue
        if max(hi, -lo) > MAX_ABS_PARAMETER:
            out.append(Violation("value-range", f"array {key}: |x| up to {max(hi, -lo):.3g}, "
                                                f"above {MAX_ABS_PARAMETER:g}"))
            continue
        if received is not None and not out:
            r = received[i]
            if not isinstance(r, np.ndarray) or r.shape != a.shape or r.dtype.kind != "f":
                out.append(Violation("update-norm", f"array {key}: the received array is not "
                                                    f"float of shape {a.shape}"))
                continue
            delta = (a - r).ravel()
            squared += float(np.dot(delta, delta))
    if (not out and received is not None
            and math.sqrt(squared) > schema.max_update_norm * (1 + NORM_TOLERANCE)):
        out.append(Violation("update-norm", f"update norm {math.sqrt(squared):.4g} above the "
                                            f"bound {schema.max_update_norm:.4g}"))
    return out


def _check_fit_scalars(schema: WireSchema, view: dict) -> list[Violation]:
    out = _check_count(view["fitres.num_examples"][1], 1 if schema.private else schema.max_count)
    metrics = view["fitres.metrics"][1]
    extra = set(metrics) - schema.fit_metrics()
    if extra:
        out.append(Violation("unexpected-key", f"fit metrics {_short(sorted(extra))} not allowed"))
    if "loss" in metrics and not _in_range(metrics["loss"], 0.0, MAX_LOSS):
        out.append(Violation("value-range", f"loss {_short(metrics['loss'])}"))
    if "declined" in metrics and not (_is_int(metrics["declined"]) and metrics["declined"] == 1):
        out.append(Violation("value-range", f"declined {_short(metrics['declined'])}"))
    return out


def _check_eval_scalars(view: dict) -> list[Violation]:
    out = _check_count(view["evaluateres.num_examples"][1], 1)
    loss = view["evaluateres.loss"][1]
    if set(loss) != {"loss"} or not _in_range(loss["loss"], 0.0, 1.0):
        out.append(Violation("value-range", f"evaluation loss {_short(loss)}"))
    metrics = view["evaluateres.metrics"][1]
    extra = set(metrics) - set(EVAL_METRICS)
    if extra:
        out.append(Violation("unexpected-key", f"metrics {_short(sorted(extra))} not allowed"))
    bad = {k: v for k, v in metrics.items() if k in EVAL_METRICS and not _in_range(v, 0.0, 1.0)}
    if bad:
        out.append(Violation("value-range", f"metrics {_short(bad)} outside [0, 1]"))
    return out


def _check_count(entries: dict, max_count: int) -> list[Violation]:
    if set(entries) != {"num_examples"}:
        return [Violation("unexpected-key", f"count keys {_short(list(entries))}")]
    n = entries["num_examples"]
    if not is_bucketed(n, max_count):
        return [Violation("count-not-bucketed", f"num_examples {_short(n)}: expected 0 or a "
                                                f"power of two up to {max_count}")]
    return []


def _check_properties(schema: WireSchema, entries: dict) -> list[Violation]:
    allowed = {} if schema.partition_id is None else {"partition-id": schema.partition_id}
    if set(entries) - set(allowed):
        return [Violation("unexpected-key", f"properties {_short(sorted(entries))}")]
    if any(not _is_int(entries[k]) or entries[k] != v for k, v in allowed.items() if k in entries):
        return [Violation("value-range", f"properties {_short(entries)}")]
    return []


def check_log_entry(schema: WireSchema, entry: dict) -> list[Violation]:
    """Every way one egress-log line (`fedrec.client.egress_log`) shows something outside the
    schema. Arrays are checked by their summary (shape, dtype, byte size, declared fields);
    a train reply under SecAgg+ carries the protocol's own record and empty array records."""
    if entry.get("error") is not None:
        if not ERROR_TEXTS.fullmatch(str(entry["error"])):
            return [Violation("error-text", f"error reply {_short(entry['error'])}")]
        return []
    records = dict(entry.get("records", {}))
    message_type = str(entry.get("message_type"))
    view, out = {}, []
    secagg = records.pop(SECAGG_RECORD, None)
    if secagg is not None:
        out += _check_secagg(secagg)
        if not records:
            return out  # setup, share keys or unmask: protocol messages only
        parameters = records.get("fitres.parameters", {})
        if parameters.get("kind") != "ArrayRecord" or parameters.get("entries"):
            return out + [Violation("unmasked-update", "arrays next to the masked vectors")]
    elif schema.secagg and message_type == "train":
        return [Violation("plain-update", "a training reply outside SecAgg+")]
    for name, record in records.items():
        kind = {"ArrayRecord": "array", "ConfigRecord": "config", "MetricRecord": "metric"}.get(
            record.get("kind"), str(record.get("kind")))
        entries = record.get("entries", {})
        if kind == "array":
            entries = {k: _described(v) for k, v in entries.items()}
        view[name] = (kind, entries)
    if secagg is not None:  # the arrays left masked, inside the protocol's record
        schema = replace(schema, shapes=(), max_update_norm=math.inf)
    properties = view.get("getpropertiesres.properties", (None, {}))[1]
    if message_type == "get_properties" and _is_int(properties.get("partition-id")):
        # a simulated node echoing its partition (the log does not record the node's config)
        schema = replace(schema, partition_id=properties["partition-id"])
    return out + check_reply(schema, message_type, view)


def _check_secagg(record: dict) -> list[Violation]:
    entries = record.get("entries", {})
    if record.get("kind") != "ConfigRecord" or set(entries) not in SECAGG_STAGE_KEYS:
        return [Violation("unexpected-key", f"SecAgg+ record keys {_short(sorted(entries))}")]
    for key, value in entries.items():
        items = value if isinstance(value, list) else [value]
        if not all(_is_int(v) or (isinstance(v, dict) and set(v) == {"bytes"}) for v in items):
            return [Violation("value-type", f"SecAgg+ {key} holds {_short(value)}")]
    return []


def _described(summary):
    """An array known only by its egress-log summary: a read-only broadcast zero of its shape
    and dtype (no memory), so the shape and dtype checks apply and the value checks pass — if
    the summary shows an array exactly as Flower's legacy converter sends it (no declared
    dtype or shape, a .npy payload with no bytes beyond header and data); anything else is
    returned as it is, and fails the dtype check."""
    try:
        dtype, shape = np.dtype(summary["dtype"]), tuple(int(d) for d in summary["shape"])
        overhead = int(summary["bytes"]) - dtype.itemsize * math.prod(shape)
        legacy = (summary.get("stype"), summary.get("declared_dtype"),
                  summary.get("declared_shape")) == ("numpy.ndarray", "", [])
        if not legacy or not NPY_HEADER_BYTES[0] <= overhead <= NPY_HEADER_BYTES[1]:
            return summary
        return _zero(dtype, shape)
    except (KeyError, TypeError, ValueError):
        return summary


@lru_cache(maxsize=256)
def _zero(dtype: np.dtype, shape: tuple) -> np.ndarray:
    return np.broadcast_to(np.zeros((), dtype), shape)  # read-only, no memory: safe to share


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _in_range(v, lo: float, hi: float) -> bool:
    if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v)) and lo <= float(v) <= hi
    except OverflowError:  # an int beyond float range
        return False


def _short(value, limit: int = 80) -> str:
    try:
        text = repr(value)
    except ValueError:  # e.g. an int with more digits than Python will print
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "…"


def check_log(entries, schema: WireSchema) -> dict:
    """Summary of an egress log (an iterable of its parsed lines) against `schema`: messages
    per type, errors, and every violation as (line number from 1, code, detail)."""
    by_type: dict[str, int] = {}
    errors, violations = 0, []
    for number, entry in enumerate(entries, start=1):
        kind = str(entry.get("message_type"))
        if SECAGG_RECORD in entry.get("records", {}):
            kind += " (SecAgg+)"
        by_type[kind] = by_type.get(kind, 0) + 1
        errors += entry.get("error") is not None
        violations += [(number, v.code, v.detail) for v in check_log_entry(schema, entry)]
    return {"messages": sum(by_type.values()), "by_type": by_type, "errors": errors,
            "violations": violations}
