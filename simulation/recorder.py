"""What a simulated run writes while it runs: `rounds.jsonl` (one line per round: clients
sampled/completed/failed/rejected, loss, time), `metrics.jsonl` (one line per evaluated round:
`round` + the central protocol's metric keys + `federated_*` estimates), and the progress bar."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from fedrec.common import atomic


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a torn last line (a crash mid-write) is ignored."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
    return records


def truncate_jsonl(path: Path, keep_before: int) -> None:
    """Keep only lines of rounds < `keep_before` (a resumed run redoes the rest). Atomic."""
    keep = [r for r in read_jsonl(path) if r["round"] < keep_before]
    atomic.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


class Recorder:
    """Receives the strategy's records ('fit', 'central_eval', 'federated_eval')."""

    def __init__(self, run_dir: Path, bar=None):
        self.run_dir, self.bar = Path(run_dir), bar
        self.started = time.perf_counter()
        self.pending: dict[int, dict] = {}
        self.totals = {"failed": 0, "rejected": 0, "rounds_not_aggregated": 0}
        self.last_metrics: dict | None = None

    def __call__(self, kind: str, round_: int, values: dict) -> None:
        row = self.pending.setdefault(round_, {"round": round_})
        if kind == "fit":
            self._append("rounds.jsonl", {"round": round_, **values})
            self.totals["failed"] += values["failed"]
            self.totals["rejected"] += values["rejected"]
            self.totals["rounds_not_aggregated"] += not values["aggregated"]
            row.update(train_loss=values["train_loss"], failed=values["failed"])
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(self._postfix(values), refresh=True)
        elif kind == "central_eval":
            row.update(values)
        elif kind == "initial_eval":  # before the first round of a session: nothing else follows
            row.update(values)
            self._flush(round_)
        elif kind == "federated_eval":
            row.update({f"federated_{k}": v for k, v in values.items()})
            self._flush(round_)

    def _flush(self, round_: int) -> None:
        row = self.pending.pop(round_)
        row["elapsed_seconds"] = round(time.perf_counter() - self.started, 2)  # this session
        # rounds without evaluation never flush: drop their partial rows
        self.pending = {r: v for r, v in self.pending.items() if r > round_}
        self._append("metrics.jsonl", row)
        if "ndcg@10" in row:
            self.last_metrics = row

    def _postfix(self, fit: dict) -> dict:
        post = {"clients": f"{fit['completed']}/{fit['sampled']}"}
        if fit["failed"]:
            post["failed"] = fit["failed"]
        if self.last_metrics is not None:
            post["ndcg@10"] = f"{self.last_metrics['ndcg@10']:.4f}"
        if not math.isnan(fit["train_loss"]):
            post["loss"] = f"{fit['train_loss']:.3f}"
        if "epsilon" in fit:  # user-level DP: the federation's ε so far
            post["ε(user)"] = f"{fit['epsilon']:.2f}"
        if fit.get("clients_exhausted"):  # record-level DP: clients out of budget
            post["out of budget"] = fit["clients_exhausted"]
        if fit.get("halted"):
            post["halted"] = fit["halted"].removesuffix("_stage")
        return post

    def _append(self, name: str, record: dict) -> None:
        with open(self.run_dir / name, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
