"""Edits an attacker (or a careless script) might make to a run directory's records, to measure
what `fedrec audit` catches: the tampering suite (`tests/audit/test_tampering.py`) and its
benchmark (`benchmarks/tampering.py`) apply each `Edit` to a copy of a real run. Import it with
this directory on sys.path (tests are not a package).

Two small real runs are edited (`make_run`): record-level DP (virtual devices with their own
stores) and user-level DP. An edit changes one file or several, by hand — a JSON value, a
TOML line, a row of a device's SQLite store — and where an attacker would "repair" what the
edit breaks (a cumulative ε after a changed σ), it recomputes that with the run's own
accountant. Every edit contradicts another record of the run, except those marked
`detectable=False`: they rewrite everything that could disagree, consistently, and say why
no record can tell.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedrec.common import privacy

DATASET = "tamper"  # 30 users × 60 items of synthetic data, made by `make_dataset`
KINDS = ("record", "user")


@dataclass(frozen=True)
class Edit:
    name: str  # an id: the run kind, the files edited, what changed
    run: str  # "record" or "user": the run it edits
    what: str  # one line for a table
    apply: Callable[[Path], None]
    detectable: bool = True
    why_not: str = ""  # for an edit no record contradicts


# --- the runs ------------------------------------------------------------------------------
def make_dataset(home: Path) -> None:
    """The synthetic data set the runs use, under `home` (use as FEDREC_HOME)."""
    from fedrec.common.data import files, synthetic

    target = Path(home) / "datasets" / DATASET
    if not target.exists():
        files.save_dir(synthetic.generate(name=DATASET, num_users=30, num_items=60,
                                          interactions_per_user=20), target)


def run_config(kind: str):
    """A small real federation: 3 rounds of 6 of 30 clients, a tiny model, ε = 8. The
    record-level run loses a seeded share of clients (they fail before training)."""
    from dataclasses import replace

    from fedrec.common import config
    from fedrec.common.model import ModelConfig
    from fedrec.common.train import TrainConfig

    cfg = config.RunConfig(dataset=DATASET, train=TrainConfig(lr=1e-2, personal_lr=5e-2),
                           fedrec=ModelConfig(dim=16, num_experts=2, max_history=10,
                                              num_layers=1, dropout=0.0))
    engine = "in-process" if "in-process" in config.ENGINES else "ray"
    cfg.federation = replace(cfg.federation, rounds=3, clients_per_round=6, eval_every=3,
                             eval_clients=0, reconstruct_steps=1, local_epochs=1, engine=engine,
                             fail_rate=0.2 if kind == "record" else 0.0)
    cfg.privacy = replace(cfg.privacy, mode=kind, epsilon=8.0, window=5, negatives=10)
    return cfg.validate()


def make_run(kind: str, out: Path) -> Path:
    """A finished run of `kind` in `out` (FEDREC_HOME must hold the data set)."""
    from fedrec.simulation.run import simulate

    simulate(run_config(kind), Path(out), progress=False)
    return Path(out)


def copy_run(run: Path, out: Path) -> Path:
    """A copy of the run directory `run` at `out`. A device store's write-ahead log goes with
    it (while the process that ran the simulation lives, it may hold the newest rows)."""
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("*-shm", ".flwr"))
    return out


# --- reading and writing a run's files, as an editor would ----------------------------------
LEDGER = Path("privacy") / "ledger.jsonl"


def _lines(run: Path, name: Path | str = LEDGER) -> list[dict]:
    return [json.loads(t) for t in (run / name).read_text().splitlines() if t.strip()]


def _write_lines(run: Path, lines: list, name: Path | str = LEDGER) -> None:
    (run / name).write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n"
                                    for x in lines))


def _edit_lines(name: Path | str, change: Callable[[list], list | None]):
    def apply(run: Path) -> None:
        lines = _lines(run, name)
        result = change(lines)
        _write_lines(run, lines if result is None else result, name)
    return apply


def _edit_json(name: str, change: Callable[[dict], None]):
    def apply(run: Path) -> None:
        data = json.loads((run / name).read_text())
        change(data)
        (run / name).write_text(json.dumps(data, indent=2))
    return apply


def _set_toml(run: Path, section: str, key: str, value: str) -> None:
    """Set `key = value` (TOML text) in `[section]` of config.toml, as a text editor would."""
    text = (run / "config.toml").read_text()
    pattern = re.compile(rf"(^\[{section}\][^\[]*?^{key} = )[^\n]*", re.M | re.S)
    edited, count = pattern.subn(lambda m: m.group(1) + value, text)
    if count != 1:
        raise ValueError(f"config.toml has no {key} in [{section}]")
    (run / "config.toml").write_text(edited)


def _config_repeated_key(run: Path) -> None:
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(re.sub(r"^(epsilon = .*)$", r"\1\nepsilon = 4.0", text,
                                            count=1, flags=re.M))


def _toml(section: str, key: str, value: str):
    return lambda run: _set_toml(run, section, key, value)


def _both(*edits):
    def apply(run: Path) -> None:
        for edit in edits:
            edit(run)
    return apply


def _by_client(lines: list[dict]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        out.setdefault(line["client"], []).append(i)
    return out


def _repeat_client(lines: list[dict]) -> list[int]:
    """The ledger positions of the first client with two releases or more."""
    several = [idx for idx in _by_client(lines).values() if len(idx) >= 2]
    if not several:
        raise ValueError("the run has no client with two releases to edit")
    return several[0]


def _recompute(lines: list[dict], client: str) -> None:
    """Rewrite `client`'s cumulative ε from its lines' σ, q, steps (an attacker's repair)."""
    history = []
    for line in lines:
        if line["client"] == client:
            history.append((line["noise_multiplier"], line["sample_rate"], line["steps"]))
            line["epsilon"] = privacy.epsilon(history, line["delta"], line["accountant"])


def _store_of(run: Path, name: str) -> Path:
    """The device store whose pseudonym is `name`."""
    for path in sorted((run / "clients").glob("*.sqlite")):
        with sqlite3.connect(path) as db:
            try:
                rows = db.execute("SELECT pseudonym FROM identity").fetchall()
            except sqlite3.OperationalError:  # a store created, never written
                continue
        if rows and rows[0][0] == name:
            return path
    raise ValueError(f"no device store of {name}")


def _edit_account(change: Callable[[dict], None], who=_repeat_client):
    def apply(run: Path) -> None:
        lines = _lines(run)
        path = _store_of(run, lines[who(lines)[0]]["client"])
        with sqlite3.connect(path) as db:
            state = json.loads(db.execute("SELECT state FROM account").fetchone()[0])
            change(state)
            db.execute("UPDATE account SET state = ?", (json.dumps(state),))
    return apply


def _edit_rows(change: Callable[[sqlite3.Connection, list[tuple]], None], who=_repeat_client):
    def apply(run: Path) -> None:
        lines = _lines(run)
        path = _store_of(run, lines[who(lines)[0]]["client"])
        with sqlite3.connect(path) as db:
            change(db, db.execute("SELECT seq, line FROM releases ORDER BY seq").fetchall())
    return apply


def _set_row(db, seq: int, line: dict) -> None:
    db.execute("UPDATE releases SET line = ? WHERE seq = ?", (json.dumps(line), seq))


def _summary(run: Path) -> None:
    """Rewrite metrics.json's privacy summary from the ledger as it now is (the server's own
    computation): what an attacker does to keep the summary in line with an edited ledger."""
    from fedrec.server.records import privacy_summary

    data = json.loads((run / "metrics.json").read_text())
    data["privacy"] = privacy_summary(run)
    (run / "metrics.json").write_text(json.dumps(data, indent=2))


def _first(lines: list[dict]) -> int:
    return _repeat_client(lines)[0]


def _last(lines: list[dict]) -> int:
    return _repeat_client(lines)[-1]


def _line(pick: Callable[[list], int], change: Callable[[dict], None], repair: bool = False):
    """Change one ledger line (and with `repair`, its client's ε after it)."""
    def edit(lines: list[dict]) -> None:
        line = lines[pick(lines)]
        change(line)
        if repair:
            _recompute(lines, line["client"])
    return _edit_lines(LEDGER, edit)


def _set(key: str, value):
    return lambda x: x.__setitem__(key, value)


def _scale(key: str, factor: float):
    return lambda x: x.__setitem__(key, x[key] * factor)


def _moved_round(lines: list[dict]) -> None:
    """The client's first line moved to a round of the run in which it released nothing."""
    positions = _repeat_client(lines)
    taken = {lines[i]["round"] for i in positions}
    free = [r for r in range(1, max(x["round"] for x in lines) + 1) if r not in taken]
    if not free:
        raise ValueError("the client released in every round")
    lines[positions[0]]["round"] = free[0]


def _duplicated(pick: Callable[[list], int]):
    def edit(lines: list[dict]) -> list:
        i = pick(lines)
        return [*lines[:i + 1], dict(lines[i]), *lines[i + 1:]]
    return _edit_lines(LEDGER, edit)


def _second_release(pick: Callable[[list], int]):
    """A second release for the round of a line, with the ε one more release would give."""
    def edit(lines: list[dict]) -> list:
        i = pick(lines)
        lines.insert(i + 1, dict(lines[i]))
        _recompute(lines, lines[i]["client"])
        return lines
    return _edit_lines(LEDGER, edit)


def _client_sigmas_repaired(lines: list[dict]) -> None:
    for i in _repeat_client(lines):
        lines[i]["noise_multiplier"] *= 1.5
    _recompute(lines, lines[_first(lines)]["client"])


def _forged(lines: list[dict]) -> list:
    line = {**lines[0], "client": "c-00000000deadbeef", "round": 1}
    line["epsilon"] = privacy.epsilon([(line["noise_multiplier"], line["sample_rate"],
                                        line["steps"])], line["delta"], line["accountant"])
    return [*lines, line]


def _renamed(lines: list[dict]) -> None:
    for i in _repeat_client(lines):
        lines[i]["client"] = "c-0000000000c0ffee"


def _repeated_key(pick: Callable[[list], int], key: str = "epsilon", early=0.01):
    """A line whose `key` appears twice: first `early`, then its true value (which a reader
    that keeps the last value shows)."""
    def edit(lines: list[dict]) -> list:
        i = pick(lines)
        return [*lines[:i], f'{{"{key}": {json.dumps(early)}, ' + json.dumps(lines[i])[1:],
                *lines[i + 1:]]
    return _edit_lines(LEDGER, edit)


def _swapped(lines: list[dict]) -> None:
    a, b = _repeat_client(lines)[:2]
    lines[a], lines[b] = lines[b], lines[a]


def _delete(pick: Callable[[list], int]):
    return _edit_lines(LEDGER, lambda lines: [x for i, x in enumerate(lines) if i != pick(lines)])


def _delete_client(lines: list[dict]) -> list:
    gone = set(_repeat_client(lines))
    return [x for i, x in enumerate(lines) if i not in gone]


def _torn(run: Path) -> None:
    with open(run / LEDGER, "a") as fh:
        fh.write('{"unit": "record", "client": "c-')


def _plan(change: Callable[[dict], None]):
    return _edit_json("plan.json", change)


def _metrics_privacy(change: Callable[[dict], None]):
    return _edit_json("metrics.json", lambda m: change(m["privacy"]))


def _metrics_repeated_key(run: Path) -> None:
    """metrics.json's privacy.releases given twice: a false count first, the true one last."""
    text = (run / "metrics.json").read_text()
    releases = json.loads(text)["privacy"]["releases"]
    (run / "metrics.json").write_text(text.replace(
        f'"releases": {releases}', f'"releases": {releases + 5}, "releases": {releases}', 1))


def _rounds(change: Callable[[list], list | None]):
    return _edit_lines("rounds.jsonl", change)


def _round_with_most_releases(run: Path) -> int:
    counts: dict[int, int] = {}
    for line in _lines(run):
        counts[line["round"]] = counts.get(line["round"], 0) + 1
    return max(counts, key=counts.get)


def _rounds_sampled_lowered(run: Path) -> None:
    target = _round_with_most_releases(run)

    def edit(rounds: list[dict]) -> None:
        for r in rounds:
            if r["round"] == target:
                r.update(sampled=1, completed=1, failed=0)
    _rounds(edit)(run)


def _round_field(round_: int, key: str, value):
    def edit(rounds: list[dict]) -> None:
        next(r for r in rounds if r["round"] == round_)[key] = value
    return _rounds(edit)


# --- device stores -------------------------------------------------------------------------
def _drop_first_charge(state: dict) -> None:
    state["history"] = state["history"][1:]


def _device_sigma(state: dict) -> None:
    state["noise_multiplier"] *= 2
    for entry in state["history"]:
        entry[0] *= 2


def _row_scaled(key: str, factor: float):
    def change(db, rows) -> None:
        seq, text = rows[0]
        line = json.loads(text)
        line[key] *= factor
        _set_row(db, seq, line)
    return change


def _row_deleted(db, rows) -> None:
    db.execute("DELETE FROM releases WHERE seq = ?", (rows[0][0],))


def _last_row_deleted(db, rows) -> None:
    db.execute("DELETE FROM releases WHERE seq = ?", (rows[-1][0],))


def _store_deleted(run: Path) -> None:
    lines = _lines(run)
    path = _store_of(run, lines[_first(lines)]["client"])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# --- several files, kept consistent ---------------------------------------------------------
def _rewrite_device(run: Path, name: str, sigma_of: Callable[[float], float],
                    drop_last: bool = False, personal_too: bool = True) -> None:
    """Rewrite device `name` everywhere — its account, its own ledger, the run's ledger — with
    σ mapped by `sigma_of` and every ε recomputed (`drop_last`: its last release erased, and
    with `personal_too` the personal state it trained then), as a careful forger would; then
    the summary in metrics.json."""
    path = _store_of(run, name)
    with sqlite3.connect(path) as db:
        state = json.loads(db.execute("SELECT state FROM account").fetchone()[0])
        if drop_last and personal_too:
            db.execute("DELETE FROM personal WHERE round = ?", (state["history"][-1][3],))
        rows = db.execute("SELECT seq, line FROM releases ORDER BY seq").fetchall()
        delta, accountant = state["delta"], state["accountant"]
        history = state["history"][:-1] if drop_last else state["history"]
        epsilons, done = [], []
        for entry in history:
            entry[0] = sigma_of(entry[0])
            done.append(tuple(entry[:3]))
            epsilons.append(privacy.epsilon(done, delta, accountant))
        state["history"] = history
        state["noise_multiplier"] = history[0][0] if history else None
        charges = {}
        for entry, eps in zip(history, epsilons):
            key = next((k for k, c in (state.get("charges") or {}).items()
                        if c["round"] == entry[3]), f"/{entry[3]}")
            old = (state.get("charges") or {}).get(key, {"round": entry[3], "logged": True})
            charges[key] = {**old, "noise_multiplier": entry[0], "epsilon": eps}
        state["charges"] = charges
        state["last"] = charges[list(charges)[-1]] if charges else None
        db.execute("UPDATE account SET state = ?", (json.dumps(state),))
        if drop_last:
            db.execute("DELETE FROM releases WHERE seq = ?", (rows[-1][0],))
            rows = rows[:-1]
        for (seq, text), entry, eps in zip(rows, history, epsilons):
            _set_row(db, seq, {**json.loads(text), "noise_multiplier": entry[0], "epsilon": eps})
    lines = _lines(run)
    mine = [i for i, x in enumerate(lines) if x["client"] == name]
    if drop_last:
        lines.pop(mine.pop())
    for i, eps in zip(mine, epsilons):
        lines[i].update(noise_multiplier=sigma_of(lines[i]["noise_multiplier"]), epsilon=eps)
    _write_lines(run, lines)
    _summary(run)


def _device_rewritten(run: Path) -> None:
    lines = _lines(run)
    _rewrite_device(run, lines[_first(lines)]["client"], lambda s: s * 1.5)


def _release_erased(personal_too: bool):
    """A device's last release erased from its account, its ledger, the run's ledger and the
    summary — one whose round has other releases, so no round is left without one."""
    def apply(run: Path) -> None:
        lines = _lines(run)
        rounds = [x["round"] for x in lines]
        for idx in _by_client(lines).values():
            if len(idx) >= 2 and rounds.count(lines[idx[-1]]["round"]) >= 2:
                return _rewrite_device(run, lines[idx[-1]]["client"], lambda s: s,
                                       drop_last=True, personal_too=personal_too)
        raise ValueError("no release to erase whose round has another")
    return apply


def _ledger_and_row_deleted(run: Path) -> None:
    _edit_rows(_last_row_deleted)(run)
    _delete(_last)(run)


def _ledger_line_and_summary(run: Path) -> None:
    _delete(_last)(run)
    _summary(run)


def _user_sigma_rewritten(factor: float, plan_too: bool, epsilon: float | None = None):
    """Every user-level release rewritten with σ·`factor` (or, with `epsilon`, the σ that
    spends that budget), ε recomputed, rounds.jsonl's ε and metrics.json's summary with it;
    with `plan_too` the plan's σ as well (and with `epsilon`, the budget in config and plan)."""
    def apply(run: Path) -> None:
        plan = json.loads((run / "plan.json").read_text())
        p, cohort = plan["privacy"], plan["cohort"]
        sigma = p["noise_multiplier"] * factor
        if epsilon is not None:
            q = min(1.0, cohort / plan["num_clients"])
            sigma = privacy.noise_for_epsilon(epsilon, p["delta"], q,
                                              plan["config"]["federation"]["rounds"],
                                              p["accountant"])
        rounds = {r["round"]: r for r in _lines(run, "rounds.jsonl")}
        lines, history = _lines(run), []
        for line in lines:
            shortfall = rounds[line["round"]].get("noise_shortfall") or 0.0
            line["noise_multiplier"] = sigma * (1 - shortfall) ** 0.5
            history.append((line["noise_multiplier"], line["sample_rate"], line["steps"]))
            line["epsilon"] = privacy.epsilon(history, line["delta"], line["accountant"])
        _write_lines(run, lines)
        spent = 0.0
        for n in sorted(rounds):
            spent = next((x["epsilon"] for x in lines if x["round"] == n), spent)
            rounds[n]["epsilon"] = spent
        _write_lines(run, [rounds[n] for n in sorted(rounds)], "rounds.jsonl")
        if plan_too:
            p["noise_multiplier"] = sigma
        if epsilon is not None:
            p["epsilon"] = plan["config"]["privacy"]["epsilon"] = epsilon
            _set_toml(run, "privacy", "epsilon", repr(float(epsilon)))
        (run / "plan.json").write_text(json.dumps(plan, indent=1, sort_keys=True))
        _summary(run)
    return apply


def _record_rederived(epsilon: float):
    """The whole record-level run rewritten for another budget: config, plan, every device
    (σ derived for `epsilon` over the planned participations, each ε recomputed, its budget),
    the run's ledger, the summary."""
    def apply(run: Path) -> None:
        plan = json.loads((run / "plan.json").read_text())
        p = plan["privacy"]
        lines = _lines(run)
        q, steps = lines[0]["sample_rate"], lines[0]["steps"]
        if any((x["sample_rate"], x["steps"]) != (q, steps) for x in lines):
            raise ValueError("devices with different mechanisms: not rewritten")
        sigma = privacy.noise_for_epsilon(epsilon, p["delta"], q, p["planned_rounds"] * steps,
                                          p["accountant"])
        for name in {x["client"] for x in lines}:
            _rewrite_device(run, name, lambda s: sigma)
            _edit_account(_set("epsilon_max", epsilon),
                          who=lambda ls, n=name: [next(i for i, x in enumerate(ls)
                                                       if x["client"] == n)])(run)
        p["epsilon"] = plan["config"]["privacy"]["epsilon"] = epsilon
        (run / "plan.json").write_text(json.dumps(plan, indent=1, sort_keys=True))
        _set_toml(run, "privacy", "epsilon", repr(float(epsilon)))
        _summary(run)
    return apply


# --- the edits -----------------------------------------------------------------------------
def _edits() -> list[Edit]:
    R, U = "record", "user"
    first, last = _first, _last
    server_first, server_last = (lambda lines: 0), (lambda lines: len(lines) - 1)
    erased = ("the device's account, its own ledger, its personal state, the run's ledger and "
              "the summary are rewritten together; rounds.jsonl counts clients sampled and "
              "completed, not releases, and another release keeps the round non-empty")
    rederived = ("every record is rewritten for the other budget (σ derived for it, every ε "
                 "recomputed); only the noise actually added to the model could tell, and no "
                 "record holds it")
    return [
        # record level: the ledger alone
        Edit("record-ledger-epsilon-lowered", R, "ledger: a client's last ε × 0.8",
             _line(last, _scale("epsilon", 0.8))),
        Edit("record-ledger-first-epsilon-raised", R, "ledger: a client's first ε × 1.1",
             _line(first, _scale("epsilon", 1.1))),
        Edit("record-ledger-sigma-raised", R, "ledger: a σ × 2", _line(first, _scale(
            "noise_multiplier", 2.0))),
        Edit("record-ledger-sigma-repaired", R, "ledger: a σ × 2, the client's ε recomputed",
             _line(first, _scale("noise_multiplier", 2.0), repair=True)),
        Edit("record-ledger-client-sigmas-repaired", R,
             "ledger: all of a client's σ × 1.5, its ε recomputed",
             _edit_lines(LEDGER, _client_sigmas_repaired)),
        Edit("record-ledger-sample-rate-repaired", R, "ledger: q = 0.5, the client's ε recomputed",
             _line(first, _set("sample_rate", 0.5), repair=True)),
        Edit("record-ledger-steps-repaired", R, "ledger: steps + 1, the client's ε recomputed",
             _line(first, lambda x: x.__setitem__("steps", x["steps"] + 1), repair=True)),
        Edit("record-ledger-round-never-run", R, "ledger: a release moved to round 99",
             _line(first, _set("round", 99))),
        Edit("record-ledger-round-moved", R, "ledger: a release moved to another round the run "
             "had", _edit_lines(LEDGER, _moved_round)),
        Edit("record-ledger-line-deleted", R, "ledger: a client's first line deleted",
             _delete(first)),
        Edit("record-ledger-last-line-deleted", R, "ledger: a client's last line deleted",
             _delete(last)),
        Edit("record-ledger-client-deleted", R, "ledger: every line of a client deleted",
             _edit_lines(LEDGER, _delete_client)),
        Edit("record-ledger-line-duplicated", R, "ledger: a line repeated, identical",
             _duplicated(first)),
        Edit("record-ledger-second-release", R, "ledger: a second release for a client's round "
             "(a double spend), ε recomputed", _second_release(last)),
        Edit("record-ledger-forged-client", R, "ledger: a line for a client no device is",
             _edit_lines(LEDGER, _forged)),
        Edit("record-ledger-client-renamed", R, "ledger: a client's lines renamed",
             _edit_lines(LEDGER, _renamed)),
        Edit("record-ledger-clip-norm", R, "ledger: max_grad_norm 1.0 → 0.5 on a line",
             _line(first, _set("max_grad_norm", 0.5))),
        Edit("record-ledger-delta", R, "ledger: δ → 1e-3 on a line",
             _line(first, _set("delta", 1e-3))),
        Edit("record-ledger-unit", R, "ledger: unit → user on a line",
             _line(first, _set("unit", "user"))),
        Edit("record-ledger-accountant", R, "ledger: accountant → prv on a line",
             _line(first, _set("accountant", "prv"))),
        Edit("record-ledger-repeated-key", R, "ledger: a line with ε given twice (0.01, then "
             "the true value)", _repeated_key(first)),
        Edit("record-ledger-emptied", R, "ledger: emptied", lambda run: (run / LEDGER).write_text(
            "")),
        Edit("record-ledger-removed", R, "ledger: file deleted", lambda run: (run / LEDGER)
             .unlink()),
        Edit("record-ledger-lines-swapped", R, "ledger: a client's two lines swapped",
             _edit_lines(LEDGER, _swapped)),
        Edit("record-ledger-torn-line", R, "ledger: a torn line appended", _torn),
        # record level: config.toml, plan.json
        Edit("record-config-mode-off", R, "config: privacy.mode → off",
             _toml("privacy", "mode", '"off"')),
        Edit("record-config-epsilon-lowered", R, "config: ε 8 → 4", _toml("privacy", "epsilon",
                                                                         "4.0")),
        Edit("record-config-epsilon-raised", R, "config: ε 8 → 16", _toml("privacy", "epsilon",
                                                                          "16.0")),
        Edit("record-config-delta", R, "config: δ 1e-5 → 1e-6", _toml("privacy", "delta",
                                                                      "1e-06")),
        Edit("record-config-clip-norm", R, "config: max_grad_norm 1 → 2",
             _toml("privacy", "max_grad_norm", "2.0")),
        Edit("record-config-rounds-fewer", R, "config: rounds 3 → 2",
             _toml("federation", "rounds", "2")),
        Edit("record-config-rounds-more", R, "config: rounds 3 → 5",
             _toml("federation", "rounds", "5")),
        Edit("record-config-clients-per-round", R, "config: clients_per_round 6 → 3",
             _toml("federation", "clients_per_round", "3")),
        Edit("record-config-accountant", R, "config: accountant rdp → prv",
             _toml("privacy", "accountant", '"prv"')),
        Edit("record-config-repeated-key", R, "config: ε given twice (8, then 4)",
             _config_repeated_key),
        Edit("record-config-plan-epsilon-raised", R, "config + plan: ε 8 → 16, consistently",
             _both(_toml("privacy", "epsilon", "16.0"), _plan(lambda p: (
                 p["config"]["privacy"].__setitem__("epsilon", 16.0),
                 p["privacy"].__setitem__("epsilon", 16.0))))),
        Edit("record-config-plan-mode-off", R, "config + plan: mode → off, consistently",
             _both(_toml("privacy", "mode", '"off"'), _plan(lambda p: (
                 p["config"]["privacy"].__setitem__("mode", "off"),
                 p["privacy"].__setitem__("mode", "off"))))),
        Edit("record-plan-planned-rounds", R, "plan: planned participations + 3",
             _plan(lambda p: p["privacy"].__setitem__("planned_rounds",
                                                      p["privacy"]["planned_rounds"] + 3))),
        # record level: metrics.json, rounds.jsonl
        Edit("record-metrics-releases", R, "metrics: privacy.releases + 1",
             _metrics_privacy(lambda m: m.__setitem__("releases", m["releases"] + 1))),
        Edit("record-metrics-epsilon-max", R, "metrics: privacy.epsilon_max × 0.5",
             _metrics_privacy(_scale("epsilon_max", 0.5))),
        Edit("record-metrics-clients-released", R, "metrics: privacy.clients_released + 1",
             _metrics_privacy(lambda m: m.__setitem__("clients_released",
                                                      m["clients_released"] + 1))),
        Edit("record-metrics-repeated-key", R, "metrics: privacy.releases given twice (a false "
             "count first)", _metrics_repeated_key),
        Edit("record-metrics-privacy-removed", R, "metrics: the privacy summary deleted",
             _edit_json("metrics.json", lambda m: m.pop("privacy"))),
        Edit("record-metrics-rounds", R, "metrics: rounds 3 → 2",
             _edit_json("metrics.json", _set("rounds", 2))),
        Edit("record-rounds-line-deleted", R, "rounds: round 2's line deleted",
             _rounds(lambda rs: [r for r in rs if r["round"] != 2])),
        Edit("record-rounds-line-duplicated", R, "rounds: round 2's line repeated",
             _rounds(lambda rs: [*rs, *[r for r in rs if r["round"] == 2]])),
        Edit("record-rounds-sampled-lowered", R, "rounds: 1 client sampled in the round with "
             "most releases", _rounds_sampled_lowered),
        Edit("record-rounds-declined", R, "rounds: a round's declined + 1",
             _round_field(1, "declined", 1)),
        Edit("record-rounds-not-aggregated", R, "rounds: round 1 marked not aggregated",
             _round_field(1, "aggregated", False)),
        # record level: the device stores (sqlite3)
        Edit("record-device-budget-raised", R, "device store: account budget 8 → 16",
             _edit_account(_set("epsilon_max", 16.0))),
        Edit("record-device-charge-removed", R, "device store: first charge removed from the "
             "account", _edit_account(_drop_first_charge)),
        Edit("record-device-sigma", R, "device store: account σ × 2 (every charge)",
             _edit_account(_device_sigma)),
        Edit("record-device-row-epsilon", R, "device store: a ledger row's ε × 0.8",
             _edit_rows(_row_scaled("epsilon", 0.8))),
        Edit("record-device-row-deleted", R, "device store: a ledger row deleted",
             _edit_rows(_row_deleted)),
        Edit("record-device-store-deleted", R, "device store: the file deleted",
             _store_deleted),
        # record level: several files
        Edit("record-ledger-device-row-deleted", R, "ledger + device ledger: a client's last "
             "line deleted from both", _ledger_and_row_deleted),
        Edit("record-ledger-metrics-line-deleted", R, "ledger + metrics: a line deleted, the "
             "summary recomputed", _ledger_line_and_summary),
        Edit("record-device-everywhere-sigma", R, "account + device ledger + ledger + metrics: "
             "a device's σ × 1.5, every ε recomputed", _device_rewritten),
        Edit("record-release-erased", R, "account + device ledger + ledger + metrics: a "
             "device's last release erased (its personal state of that round kept)",
             _release_erased(personal_too=False)),
        Edit("record-release-erased-everywhere", R, "account + device ledger + personal state "
             "+ ledger + metrics: a device's last release erased everywhere",
             _release_erased(personal_too=True), detectable=False, why_not=erased),
        Edit("record-run-rederived", R, "every file: the run rewritten for ε = 9",
             _record_rederived(9.0), detectable=False, why_not=rederived),
        # user level
        Edit("user-ledger-epsilon-lowered", U, "ledger: the last ε × 0.8",
             _line(server_last, _scale("epsilon", 0.8))),
        Edit("user-ledger-sigma-raised", U, "ledger: a σ × 1.5",
             _line(server_first, _scale("noise_multiplier", 1.5))),
        Edit("user-ledger-sigma-repaired", U, "ledger: a σ × 1.5, ε recomputed",
             _line(server_first, _scale("noise_multiplier", 1.5), repair=True)),
        Edit("user-ledger-line-deleted", U, "ledger: the first line deleted",
             _delete(server_first)),
        Edit("user-ledger-last-line-deleted", U, "ledger: the last line deleted",
             _delete(server_last)),
        Edit("user-ledger-line-duplicated", U, "ledger: a line repeated, identical",
             _duplicated(server_first)),
        Edit("user-ledger-second-release", U, "ledger: a second release for the last round, ε "
             "recomputed", _second_release(server_last)),
        Edit("user-ledger-round-never-run", U, "ledger: a release moved to round 99",
             _line(server_last, _set("round", 99))),
        Edit("user-ledger-client-renamed", U, "ledger: a line's client server → c-…",
             _line(server_last, _set("client", "c-0000000000c0ffee"))),
        Edit("user-ledger-clip-norm", U, "ledger: max_grad_norm 1.0 → 0.5 on a line",
             _line(server_first, _set("max_grad_norm", 0.5))),
        Edit("user-ledger-repeated-key", U, "ledger: a line with σ given twice (10, then the "
             "true value)", _repeated_key(server_first, "noise_multiplier", 10.0)),
        Edit("user-ledger-removed", U, "ledger: file deleted", lambda run: (run / LEDGER)
             .unlink()),
        Edit("user-ledger-emptied", U, "ledger: emptied", lambda run: (run / LEDGER).write_text(
            "")),
        Edit("user-rounds-epsilon", U, "rounds: round 1's ε × 0.5",
             _rounds(lambda rs: rs[0].__setitem__("epsilon", rs[0]["epsilon"] * 0.5))),
        Edit("user-rounds-noise-shortfall", U, "rounds: round 1's noise_shortfall → 0.5",
             _round_field(1, "noise_shortfall", 0.5)),
        Edit("user-rounds-not-aggregated", U, "rounds: round 2 marked not aggregated",
             _round_field(2, "aggregated", False)),
        Edit("user-rounds-budget-exhausted", U, "rounds: round 1 marked blocked by the budget",
             _round_field(1, "budget_exhausted", True)),
        Edit("user-rounds-line-deleted", U, "rounds: round 2's line deleted",
             _rounds(lambda rs: [r for r in rs if r["round"] != 2])),
        Edit("user-metrics-epsilon", U, "metrics: privacy.epsilon × 0.5",
             _metrics_privacy(_scale("epsilon", 0.5))),
        Edit("user-metrics-releases", U, "metrics: privacy.releases + 1",
             _metrics_privacy(lambda m: m.__setitem__("releases", m["releases"] + 1))),
        Edit("user-metrics-noise-range", U, "metrics: privacy.noise_multiplier_range × 2",
             _metrics_privacy(lambda m: m.__setitem__(
                 "noise_multiplier_range", [2 * s for s in m["noise_multiplier_range"]]))),
        Edit("user-metrics-budget-ran-out", U, "metrics: budget_exhausted_after_round = 1",
             _metrics_privacy(_set("budget_exhausted_after_round", 1))),
        Edit("user-config-mode-off", U, "config: privacy.mode → off",
             _toml("privacy", "mode", '"off"')),
        Edit("user-config-epsilon-lowered", U, "config: ε 8 → 6", _toml("privacy", "epsilon",
                                                                       "6.0")),
        Edit("user-config-clients-per-round", U, "config: clients_per_round 6 → 12",
             _toml("federation", "clients_per_round", "12")),
        Edit("user-config-plan-epsilon-raised", U, "config + plan: ε 8 → 12, consistently",
             _both(_toml("privacy", "epsilon", "12.0"), _plan(lambda p: (
                 p["config"]["privacy"].__setitem__("epsilon", 12.0),
                 p["privacy"].__setitem__("epsilon", 12.0))))),
        Edit("user-plan-sigma", U, "plan: σ × 1.2",
             _plan(lambda p: p["privacy"].__setitem__("noise_multiplier",
                                                      p["privacy"]["noise_multiplier"] * 1.2))),
        Edit("user-ledger-rounds-metrics-sigma", U, "ledger + rounds + metrics: every σ × 1.2, "
             "every ε recomputed", _user_sigma_rewritten(1.2, plan_too=False)),
        Edit("user-ledger-rounds-metrics-plan-sigma", U, "ledger + rounds + metrics + plan: "
             "every σ × 1.2, every ε recomputed", _user_sigma_rewritten(1.2, plan_too=True)),
        Edit("user-run-rederived", U, "every file: the run rewritten for ε = 9",
             _user_sigma_rewritten(1.0, plan_too=True, epsilon=9.0), detectable=False,
             why_not=rederived),
    ]


EDITS = _edits()


def failures(run: Path) -> list[str]:
    """The audit's failures; a run it refuses (exit code 2) is one failure."""
    from fedrec.audit.run import audit
    from fedrec.common.errors import FedrecError

    try:
        report = audit(run)
    except FedrecError as exc:
        return [f"refused: {exc}"]
    return [f["what"] for f in report["findings"] if f["severity"] == "failure"]
