"""Benchmark: the anonymization layer's numbers.

1. Re-identification: for each data set's profile fields (age, gender, occupation, zip), users
   unique and k before and after generalization (`fedrec.common.anonymity.report`).
2. Fuzzing: N generated train replies (default 10,000), each with 1-3 kinds of forbidden
   content injected (identifiers, e-mails, strings, bytes, NaN/inf, wrong shapes or dtypes,
   huge norms, extra or missing keys and records, unbucketed counts), built as real Flower
   messages and passed through the egress guard. A *leak* is a reply the guard lets through.
   The same number of well-formed replies measures false blocks.
3. Guard cost: µs per train reply for the default fedrec model's shared head, over a no-op
   mod (deserializing reply and received arrays, checks, update norm).
Writes benchmarks/results/anonymization.json and anonymization-<dataset>.png.

    python benchmarks/anonymization.py --datasets ml-100k synthetic --messages 10000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IDENTIFIERS = ["u000017", "Ada Lovelace", "ada.lovelace@example.com", "94110",
               "+1 415 555 0132", "device-7f3a", "http://example.com/u/17", ""]
KINDS = ["metric-string", "metric-key", "loss-value", "count", "array-values", "norm",
         "shape", "dtype", "extra-array", "missing-array", "extra-record", "bytes", "status",
         "raw-array", "metric-record", "count-string", "properties", "declared-fields",
         "trailing-bytes", "zip-payload", "huge-header", "huge-number"]
HUGE_HEADER = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000,), }"


def reidentification(datasets: list[str], k: int) -> dict:
    from fedrec.cli.data import _plot_class_sizes
    from fedrec.common import anonymity
    from fedrec.common.data.registry import load_dataset

    out = {}
    for name in datasets:
        profiles = load_dataset(name).profiles
        report = {"dataset": name, **anonymity.report(profiles, k)}
        _plot_class_sizes(profiles, report, RESULTS / f"anonymization-{name}.png")
        out[name] = report
        for row in report["rows"]:
            print(f"{name:10s} {row['name']:18s} unique {row['unique']:4d}/{row['users']}  "
                  f"k {row['k']:3d}  ℓ {row['l_diversity']}  ({row['generalization']})")
    return out


class Messages:
    """Real Flower train instructions and replies for a model with `shapes`."""

    def __init__(self, shapes, rng: np.random.Generator):
        self.shapes, self.rng = shapes, rng
        self.received = [rng.normal(0, 0.1, s).astype(np.float32) for s in shapes]

    def instruction(self):
        from flwr.app import Message, Metadata
        from flwr.common import FitIns, ndarrays_to_parameters
        from flwr.compat.common import recorddict_compat as compat

        content = compat.fitins_to_recorddict(
            FitIns(ndarrays_to_parameters(self.received), {"server_round": 1}), keep_input=True)
        return Message(content=content, metadata=Metadata(
            run_id=1, message_id="m", src_node_id=0, dst_node_id=1, reply_to_message_id="",
            group_id="", created_at=0.0, ttl=3600.0, message_type="train"))

    def update(self) -> list[np.ndarray]:
        return [(r + self.rng.normal(0, 1e-3, r.shape)).astype(np.float32) for r in self.received]

    def reply(self, arrays, count=16, metrics=None):
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
        from flwr.compat.common import recorddict_compat as compat

        return compat.fitres_to_recorddict(FitRes(
            Status(Code.OK, "Success"), ndarrays_to_parameters(arrays), count,
            {"loss": 3.2} if metrics is None else metrics), keep_input=True)

    def forbidden(self, kinds: list[str]):
        """A reply with every kind of forbidden content in `kinds` injected."""
        from flwr.app import Array, ConfigRecord, MetricRecord

        rng, arrays = self.rng, self.update()
        pii = IDENTIFIERS[rng.integers(len(IDENTIFIERS))] or "x" * int(rng.integers(1, 50))
        count, metrics = 16, {"loss": 3.2}
        for kind in kinds:
            i = int(rng.integers(len(arrays)))
            if kind == "metric-string":
                metrics["note"] = pii
            elif kind == "metric-key":
                metrics[pii] = float(rng.random())
            elif kind == "loss-value":
                metrics["loss"] = float(rng.choice([np.nan, np.inf, -np.inf, -1.0, 1e6]))
            elif kind == "count":
                count = int(rng.choice([3, 5, 17, 100, 943, -4]))
            elif kind == "array-values":
                arrays[i] = arrays[i].astype(np.float32)  # (an earlier kind may have cast it)
                arrays[i].flat[int(rng.integers(arrays[i].size))] = rng.choice(
                    [np.nan, np.inf, -np.inf, 5e4])
            elif kind == "norm":
                arrays = [a + np.float32(rng.uniform(1.0, 100.0)) for a in arrays]
            elif kind == "shape":
                arrays[i] = arrays[i].reshape(-1)[:-1] if arrays[i].size > 1 else np.zeros(2, np.float32)
            elif kind == "dtype":
                arrays[i] = arrays[i].astype(rng.choice([np.float16, np.float64, np.int32]))
            elif kind == "extra-array":
                arrays.append(np.frombuffer(pii.encode().ljust(8)[:8], np.uint8).astype(np.float32))
            elif kind == "missing-array":
                arrays.pop(i)
            elif kind == "huge-number":
                metrics["loss"] = int(rng.choice([-1, 1])) * 10**400
        content = self.reply(arrays, count, metrics)
        for kind in kinds:
            if kind == "extra-record":
                content[str(rng.choice(["profile", "fitres.extra", pii]))] = ConfigRecord({"v": pii})
            elif kind == "bytes":
                content["fitres.status"]["blob"] = pii.encode()
            elif kind == "status":
                content["fitres.status"]["message"] = f"Success {pii}"
            elif kind == "raw-array":
                content["fitres.parameters"]["0"] = Array(data=pii.encode(), dtype="",
                                                          stype="numpy.ndarray", shape=())
            elif kind == "metric-record":
                del content["fitres.metrics"]
                content["fitres.metrics"] = MetricRecord({"loss": 3.2})
            elif kind == "count-string":
                del content["fitres.num_examples"]
                content["fitres.num_examples"] = ConfigRecord({"num_examples": pii})
            elif kind == "properties":
                content["getpropertiesres.properties"] = ConfigRecord({"user": pii})
            elif kind in ("declared-fields", "trailing-bytes", "zip-payload", "huge-header"):
                key = str(rng.integers(len(content["fitres.parameters"])))
                payload = content["fitres.parameters"][key].data
                fields = {"dtype": "", "stype": "numpy.ndarray", "shape": ()}
                if kind == "declared-fields":
                    fields.update([("dtype", pii)] if rng.random() < 0.5 else
                                  [("shape", (94110, 415, 5550132))])
                elif kind == "trailing-bytes":
                    payload += pii.encode()
                elif kind == "zip-payload":
                    payload = b"PK\x03\x04" + pii.encode()
                else:
                    header = HUGE_HEADER + b" " * (117 - len(HUGE_HEADER)) + b"\n"
                    payload = b"\x93NUMPY\x01\x00v\x00" + header + payload[128:]
                content["fitres.parameters"][key] = Array(data=payload, **fields)
        return content


def guard_call(guard, msg, content):
    """(passed, seconds) of one reply through `guard`."""
    from flwr.app import Context, Message, RecordDict

    from fedrec.client.egress_guard import EgressBlocked

    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    started = time.perf_counter()
    try:
        guard(msg, context, lambda m, c: Message(content, reply_to=m))
        passed = True
    except EgressBlocked:
        passed = False
    return passed, time.perf_counter() - started


def fuzz(schema, n: int, seed: int) -> dict:
    from fedrec.client.egress_guard import egress_guard_mod

    rng = np.random.default_rng(seed)
    messages, guard = Messages(schema.shapes, rng), egress_guard_mod(schema)
    msg = messages.instruction()
    leaks, per_kind, false_blocks = [], {k: 0 for k in KINDS}, 0
    for _ in range(n):
        kinds = list(rng.choice(KINDS, size=int(rng.integers(1, 4)), replace=False))
        for kind in kinds:
            per_kind[kind] += 1
        passed, _ = guard_call(guard, msg, messages.forbidden(kinds))
        if passed:
            leaks.append(kinds)
        passed, _ = guard_call(guard, msg, messages.reply(messages.update()))
        false_blocks += not passed
    return {"messages": n, "leaks": len(leaks), "leaked_kinds": leaks[:20],
            "injections_per_kind": per_kind, "well_formed": n, "false_blocks": false_blocks}


def cost(schema, repeats: int, seed: int) -> dict:
    from fedrec.client.egress_guard import egress_guard_mod

    messages = Messages(schema.shapes, np.random.default_rng(seed))
    msg, content = messages.instruction(), messages.reply(messages.update())
    guard = egress_guard_mod(schema)

    def noop(m, c, call_next):
        return call_next(m, c)

    timings = {"guard": [], "no-op": []}
    for _ in range(repeats):
        timings["guard"].append(guard_call(guard, msg, content)[1])
        timings["no-op"].append(guard_call(noop, msg, content)[1])
    median = {k: float(np.median(v)) * 1e6 for k, v in timings.items()}
    return {"parameters": int(sum(int(np.prod(s)) for s in schema.shapes)),
            "arrays": len(schema.shapes), "guard_us": round(median["guard"], 1),
            "noop_us": round(median["no-op"], 1),
            "guard_cost_us": round(median["guard"] - median["no-op"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "synthetic"])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import logging
    from dataclasses import replace

    logging.getLogger("fedrec.egress").setLevel(logging.CRITICAL)  # thousands, on purpose
    from fedrec.common.config import RunConfig
    from fedrec.common.model import FedRecModel
    from fedrec.common.wire import WireSchema

    model = FedRecModel(replace(RunConfig().fedrec, input_dim=384), num_users=1)
    schema = WireSchema.for_run([a.shape for a in model.shared_arrays()], 100.0, False, False,
                                1000)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"reidentification": reidentification(args.datasets, args.k)}
    result["guard_cost"] = cost(schema, args.repeats, args.seed)
    print(f"guard: {result['guard_cost']}")
    started = time.perf_counter()
    result["fuzz"] = fuzz(schema, args.messages, args.seed)
    result["fuzz"]["seconds"] = round(time.perf_counter() - started, 1)
    print(f"fuzz: {result['fuzz']['leaks']} leaks of {args.messages}, "
          f"{result['fuzz']['false_blocks']} well-formed replies blocked")
    (RESULTS / "anonymization.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
