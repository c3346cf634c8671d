"""Real Flower simulations of a tiny synthetic federation: on Flower's Ray engine (one
message per client) and on the batched engine (a round's training in one computation)."""

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedrec.common import config, privacy
from fedrec.common.jsonl import read_jsonl
from fedrec.common.model import FedRecModel, ModelConfig
from fedrec.common.train import TrainConfig
from fedrec.simulation.run import simulate

sys.path.insert(0, str(Path(__file__).parent))
from kill_points import kill_tree  # noqa: E402

pytestmark = pytest.mark.slow
USERS = 40


@pytest.fixture(scope="module")
def home(tmp_path_factory, synthetic_home):
    with synthetic_home(tmp_path_factory.mktemp("home"), "fed", num_users=USERS, num_items=60,
                        interactions_per_user=20) as root:
        yield root


def kill_run_when(cfg: config.RunConfig, run, condition, timeout: float = 300.0) -> None:
    """Start `fedrec simulate` with `cfg` into `run` as a separate process and SIGKILL it (and
    everything it started) as soon as `condition()` holds."""
    config.save(cfg, run.parent / f"{run.name}.toml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedrec.cli", "simulate", "--config",
         str(run.parent / f"{run.name}.toml"), "--dataset", cfg.dataset, "--out", str(run)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ},
    )
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, "run ended early"
        time.sleep(0.05)
    kill_tree(proc)


def assert_nothing_identifying_left(log, run) -> None:
    """Every line of the egress log matches the run's wire schema, and no user id, name,
    e-mail or zip code of the data set appears in any key or value that left."""
    from fedrec.common import wire
    from fedrec.common.data.registry import load_dataset

    entries = [json.loads(line) for line in log.read_text().splitlines()]
    schema = wire.WireSchema.from_json((run / "wire-schema.json").read_text())
    summary = wire.check_log(entries, schema)
    assert summary["messages"] == len(entries) > 0 and summary["violations"] == []
    data = load_dataset("fed")
    texts = {*map(str, data.user_ids), *data.profiles["name"], *data.profiles["email"],
             *(w for n in data.profiles["name"] for w in n.split())}
    zips = set(data.profiles["zip"])  # digits: compared whole (a float's digits may hold one)

    def scan(value):  # every key, string and number that left, except the log's own time
        if isinstance(value, dict):
            for k, v in value.items():
                yield str(k)
                yield from scan(v)
        elif isinstance(value, list):
            for v in value:
                yield from scan(v)
        else:
            yield str(value)

    sent = {token for e in entries for token in scan({k: v for k, v in e.items() if k != "time"})}
    assert not {t for t in sent for s in texts if s == t or (len(s) > 3 and s in t)}
    assert not sent & zips and not {t for t in sent if t.isdigit() and int(t) in map(int, zips)}


def small_config(**federation) -> config.RunConfig:
    cfg = config.RunConfig(
        dataset="fed",
        fedrec=ModelConfig(dim=16, num_experts=2, max_history=10, num_layers=1, dropout=0.0),
        train=TrainConfig(lr=1e-2, personal_lr=5e-2),
    )
    cfg.federation = replace(cfg.federation, **{
        "rounds": 4, "clients_per_round": 10, "server_lr": 0.02, "eval_every": 2,
        "eval_clients": 0, "checkpoint_every": 2, **federation})
    return cfg.validate()


def egress_entries(log, kind: str) -> list[dict]:
    return [e for e in map(json.loads, log.read_text().splitlines()) if e["message_type"] == kind]


class ListeningSockets:
    """The addresses this process and its children (Ray's GCS, raylet, workers) listen on,
    sampled every 0.2 s while the block runs."""

    def __enter__(self):
        import threading

        self.addresses, self.stop = set(), threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        import psutil

        me = psutil.Process()
        while not self.stop.wait(0.2):
            pids = {me.pid, *(c.pid for c in me.children(recursive=True))}
            self.addresses |= {c.laddr.ip for c in psutil.net_connections("inet")
                               if c.status == psutil.CONN_LISTEN and c.pid in pids}

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_federation_learns_and_only_the_shared_head_leaves_a_client(home, tmp_path):
    import tempfile

    log = tmp_path / "egress.jsonl"
    sessions = lambda: set(Path(tempfile.gettempdir()).glob("fedrec-ray-*"))  # noqa: E731
    before = sessions()
    with ListeningSockets() as sockets:
        final = simulate(small_config(engine="ray"), tmp_path / "run", progress=False,
                         egress_log=log)
    # Ray's servers accept unauthenticated connections: on the loopback only, and its session
    # directory goes with the run
    assert sockets.addresses and sockets.addresses <= {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    assert sessions() <= before
    history = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["round"] for r in history] == [0, 2, 4]
    assert history[-1]["ndcg@10"] > history[0]["ndcg@10"]
    # federated evaluation over every client = the central protocol over every user: both
    # reconstruct each personal vector on the device's data with the same code
    for key in ("hr@10", "ndcg@10", "recall@20", "mrr@10"):
        assert history[-1][f"federated_{key}"] == pytest.approx(history[-1][key], abs=1e-9)
    assert final["rounds"] == 4 and final["failed_client_updates"] == 0
    assert final["engine"] == "ray"
    assert {"hr@10", "ndcg@10", "recall@20", "mrr@10", "coverage@10"} <= set(final)
    assert (tmp_path / "run" / "checkpoints" / "round-000004.safetensors").exists()

    shared_shapes = sorted(list(a.shape) for a in FedRecModel(
        replace(small_config().fedrec, input_dim=384), 1).shared_arrays())
    fits = egress_entries(log, "train")
    assert len(fits) == 4 * 10
    for entry in fits:
        arrays = [r for r in entry["records"].values() if r["kind"] == "ArrayRecord"]
        shapes = sorted(v["shape"] for r in arrays for v in r["entries"].values())
        assert shapes == shared_shapes  # exactly the shared head: no personal vector (1, 16)
        scalars = {k for r in entry["records"].values() if r["kind"] != "ArrayRecord"
                   for k in r["entries"]}
        assert scalars == {"loss", "num_examples", "code", "message"}  # loss + protocol status
    assert_nothing_identifying_left(log, tmp_path / "run")


def test_the_batched_engine_runs_the_same_federation_as_the_ray_engine(home, tmp_path):
    """Same seed, same rounds: the batched engine's aggregates, losses and metrics are the Ray
    engine's (one message per client) up to float rounding — with dropout on, personal
    vectors reconstructed on the devices and clients failing. (FedAvg with η = 1 applies the
    aggregate as it is: Adam's first step, Δ/|Δ|, would turn rounding in coordinates whose
    gradient is ~0 into steps of ±η.)"""
    from fedrec.server import checkpoint

    def run(engine):
        cfg = small_config(engine=engine, rounds=2, checkpoint_every=1, fail_rate=0.2,
                           strategy="fedavg", server_lr=1.0, local_lr=0.5,
                           server_lr_schedule="constant")
        cfg.fedrec = replace(cfg.fedrec, dropout=0.2)
        return simulate(cfg.validate(), tmp_path / engine, progress=False)

    ray, batched = run("ray"), run("batched")
    assert (ray["engine"], batched["engine"]) == ("ray", "batched")
    for round_ in (1, 2):
        name = f"round-{round_:06d}.safetensors"
        _, a, _ = checkpoint.load(tmp_path / "ray" / "checkpoints" / name)
        _, b, _ = checkpoint.load(tmp_path / "batched" / "checkpoints" / name)
        for key in a:
            assert np.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), (round_, key)
    rounds = [read_jsonl(tmp_path / e / "rounds.jsonl") for e in ("ray", "batched")]
    for r, b in zip(*rounds):
        assert (r["sampled"], r["completed"], r["failed"]) == (b["sampled"], b["completed"],
                                                              b["failed"])
        assert r["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert sum(r["failed"] for r in rounds[0]) > 0
    for key in ("ndcg@10", "hr@10", "valid_ndcg@10", "federated_ndcg@10"):
        assert ray[key] == pytest.approx(batched[key], abs=1e-3), key


def test_the_first_recipe_stays_selectable_and_runs_on_the_ray_engine(home, tmp_path):
    cfg = small_config(local_optimizer="adam", local_epochs=3, strategy="fedavg", server_lr=1.0,
                       reconstruct_steps=0, reconstruct_from="stored",
                       server_lr_schedule="constant")
    final = simulate(cfg, tmp_path / "run", progress=False)
    history = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert final["engine"] == "ray" and history[-1]["ndcg@10"] > history[0]["ndcg@10"]


def test_engine_choice(home):
    assert small_config().engine() == "batched"
    assert small_config(secagg=True).engine() == "ray"
    assert small_config(local_steps=2).engine() == "ray"
    with pytest.raises(config.ConfigError, match="secure aggregation"):
        small_config(engine="batched", secagg=True)
    cfg = small_config()
    cfg.privacy = replace(cfg.privacy, mode="user")
    assert cfg.validate().engine() == "batched"  # each device's own fit, in this process
    cfg.privacy = replace(cfg.privacy, mode="record", window=5)
    assert cfg.validate().engine() == "ray"  # Opacus on each device: one message per client
    # an egress log must see every client's training message: one message per client
    assert small_config().engine(egress_log=True) == "ray"
    with pytest.raises(config.ConfigError, match="egress log"):
        small_config(engine="batched").engine(egress_log=True)


def test_rounds_are_evaluated_on_a_sample_and_the_served_round_on_every_user(home, tmp_path):
    sampled = simulate(small_config(eval_users=15), tmp_path / "sampled", progress=False)
    rows = read_jsonl(tmp_path / "sampled" / "metrics.jsonl")
    assert all(r["eval_sample"] == 15 and 0 < r["users"] <= 15 for r in rows)
    assert all(r["ndcg@10_ci95"] > 0 for r in rows[1:])
    # the served round, on every user: what the same run evaluating everyone says of it
    full = simulate(small_config(eval_users=0), tmp_path / "full", progress=False)
    row = next(r for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")
               if r["round"] == sampled["selected_round"])
    assert "eval_sample" not in full and "eval_sample" not in row
    assert sampled["users"] == row["users"] > 15
    for key in ("ndcg@10", "ndcg@10_ci95", "valid_ndcg@10", "cold_ndcg@10"):
        assert sampled[key] == pytest.approx(row[key], rel=1e-5), key
    assert sampled["sampled"]["eval_sample"] == 15
    # without the full evaluation: the sample's numbers; and the last federated evaluation
    # asks every client up to the sample's size (earlier ones ask eval_clients = 5)
    kept = simulate(small_config(eval_users=15, full_eval=False, eval_clients=5),
                    tmp_path / "kept", progress=False)
    assert "sampled" not in kept and kept["eval_sample"] == 15
    assert kept["ndcg@10"] == pytest.approx(sampled["sampled"]["ndcg@10"], rel=1e-6)
    rows = read_jsonl(tmp_path / "kept" / "metrics.jsonl")
    assert all(r["federated_users"] <= 5 for r in rows[:-1] if "federated_users" in r)
    assert 5 < rows[-1]["federated_users"] <= 15
    assert full["federated_users"] > 15


@pytest.mark.parametrize("engine", ["batched", "ray"])
def test_failed_clients_are_counted_and_rounds_complete(home, tmp_path, engine):
    final = simulate(small_config(fail_rate=0.3, engine=engine), tmp_path / "run", progress=False)
    rounds = read_jsonl(tmp_path / "run" / "rounds.jsonl")
    assert sum(r["failed"] for r in rounds) == final["failed_client_updates"] > 0
    assert all(r["aggregated"] for r in rounds)
    assert all(r["completed"] + r["failed"] == 10 for r in rounds)


def test_a_killed_run_resumes_to_the_same_result(home, tmp_path):
    cfg = small_config()
    reference = simulate(cfg, tmp_path / "straight", progress=False)
    # killed after the last checkpoint but before finishing: a resume only evaluates + finishes
    (tmp_path / "straight" / "metrics.json").unlink()
    finished = simulate(None, tmp_path / "straight", resume=True, progress=False)
    assert finished["ndcg@10"] == pytest.approx(reference["ndcg@10"], abs=1e-9)
    assert [r["round"] for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl")] == [0, 2, 4]

    run = tmp_path / "killed"
    # killed during or after round 3
    kill_run_when(cfg, run, lambda: len(read_jsonl(run / "rounds.jsonl")) >= 3)
    assert not (run / "metrics.json").exists()

    resumed = simulate(None, run, resume=True, progress=False)
    for key in ("hr@10", "ndcg@10", "recall@20", "mrr@10", "coverage@10"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key
    assert [r["round"] for r in read_jsonl(run / "rounds.jsonl")] == [1, 2, 3, 4]


def dp_config(mode: str, **settings) -> config.RunConfig:
    cfg = small_config()
    cfg.privacy = replace(cfg.privacy, mode=mode, **{"window": 5, "negatives": 10, **settings})
    return cfg.validate()


def check_ledger(run) -> dict[str, list[dict]]:
    """Every line has the documented keys, and `fedrec audit` passes the run: every ε is
    reproducible by dp-accounting within 1 %, no impossible parameters, no release over the
    budget. Returns the lines per client."""
    from fedrec.audit.run import audit

    lines = privacy.read_ledger(run / "privacy" / "ledger.jsonl")
    assert lines and all(set(privacy.LEDGER_KEYS) <= set(line) for line in lines)
    report = audit(run)
    assert report["verdict"] == "pass", report["findings"]
    assert report["crosscheck"]["lines"] == len({json.dumps(x, sort_keys=True) for x in lines})
    by_client: dict[str, list[dict]] = {}
    for line in lines:
        by_client.setdefault(line["client"], []).append(line)
    return by_client


def test_record_level_dp_federation_enforces_budgets_and_keeps_a_verifiable_ledger(home, tmp_path):
    # σ planned for one participation each: clients sampled again must decline
    final = simulate(dp_config("record", epsilon=6.0, planned_rounds=1), tmp_path / "run",
                     progress=False)
    by_client = check_ledger(tmp_path / "run")
    assert all(c.startswith("c-") for c in by_client)  # pseudonyms, never user ids
    assert all(line["unit"] == "record" and line["epsilon"] <= 6.0
               for lines in by_client.values() for line in lines)
    spent = final["privacy"]
    assert spent["unit"] == "record" and spent["epsilon_max"] <= 6.0
    rounds = read_jsonl(tmp_path / "run" / "rounds.jsonl")
    assert spent["clients_exhausted"] == rounds[-1]["clients_exhausted"] > 0
    assert sum(r["declined"] for r in rounds) == spent["declined_rounds"]
    assert final["ndcg@10"] > 0 and all(r["aggregated"] for r in rounds)


def test_user_level_dp_federation_accounts_on_the_server(home, tmp_path):
    final = simulate(dp_config("user", epsilon=4.0, max_grad_norm=0.5), tmp_path / "run",
                     progress=False)
    by_client = check_ledger(tmp_path / "run")
    assert set(by_client) == {"server"} and len(by_client["server"]) == 4
    assert final["privacy"]["epsilon"] == pytest.approx(4.0, rel=0.01)
    assert final["privacy"]["epsilon"] <= 4.0


def secagg_config(**federation) -> config.RunConfig:
    cfg = small_config(**federation)
    cfg.federation = replace(cfg.federation, rounds=1, checkpoint_every=1, strategy="fedavg",
                             eval_every=1)
    return cfg.validate()


def test_secagg_sums_what_plain_fedavg_sums_and_the_server_never_sees_an_update(home, tmp_path):
    from fedrec.server import checkpoint

    simulate(secagg_config(), tmp_path / "plain", progress=False)
    log = tmp_path / "egress.jsonl"
    simulate(secagg_config(secagg=True), tmp_path / "secure", progress=False, egress_log=log)
    _, plain, _ = checkpoint.load(tmp_path / "plain" / "checkpoints" / "round-000001.safetensors")
    _, secure, _ = checkpoint.load(tmp_path / "secure" / "checkpoints" / "round-000001.safetensors")
    scale = max(float(np.abs(a).max()) for a in plain.values())
    error = max(float(np.abs(plain[k] - secure[k]).max()) for k in plain)
    assert 0 < error < 1e-4 * scale  # same clients, same updates: only quantization differs
    trains = [e for e in map(json.loads, log.read_text().splitlines())
              if e["message_type"] == "train"]
    assert len(trains) == 4 * 10  # setup, share keys, masked vectors, unmask: per client
    for entry in trains:  # no reply carries an array: the update leaves only masked, as bytes
        assert all(not r["entries"] for r in entry["records"].values()
                   if r["kind"] == "ArrayRecord")
    assert_nothing_identifying_left(log, tmp_path / "secure")


def test_secagg_rounds_survive_dropouts_and_a_halted_round_is_recorded(home, tmp_path):
    tolerant = replace(secagg_config(secagg=True, fail_rate=0.2).federation, rounds=2)
    cfg = secagg_config()
    cfg.federation = tolerant
    simulate(cfg.validate(), tmp_path / "ok", progress=False)
    rounds = read_jsonl(tmp_path / "ok" / "rounds.jsonl")
    assert sum(r["failed"] for r in rounds) > 0 and all(r["aggregated"] for r in rounds)

    # 10 clients, 40 % colluders assumed: a key needs 5 shares; 80 % dropping leaves 2
    cfg.federation = replace(tolerant, fail_rate=0.8, secagg_corruption=0.4, secagg_dropout=0.5)
    final = simulate(cfg.validate(), tmp_path / "halted", progress=False)
    rounds = read_jsonl(tmp_path / "halted" / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2]  # the run went on and finished
    assert all(r["halted"] in ("collect_masked_vectors_stage", "unmask_stage")
               and not r["aggregated"] and r["completed"] + r["failed"] == 10 for r in rounds)
    assert final["rounds_not_aggregated"] == 2


def test_user_level_dp_composes_with_secagg(home, tmp_path):
    cfg = dp_config("user", epsilon=4.0, max_grad_norm=0.5)
    cfg.federation = replace(cfg.federation, rounds=2, secagg=True)
    final = simulate(cfg.validate(), tmp_path / "run", progress=False)
    by_client = check_ledger(tmp_path / "run")
    assert len(by_client["server"]) == 2 and final["privacy"]["epsilon"] <= 4.0


def moved_heads(runs: dict[str, Path], round_: int = 1) -> dict[str, np.ndarray]:
    """Each run's shared head after `round_` minus the initial head, as one flat vector."""
    from fedrec.common.plan import RunPlan
    from fedrec.server import checkpoint
    from fedrec.server.app import initial_head

    moved = {}
    for name, run in runs.items():
        plan = RunPlan.from_json((run / "plan.json").read_text())
        _, head, _ = checkpoint.load(run / "checkpoints" / f"round-{round_:06d}.safetensors")
        start = dict(zip(plan.keys, initial_head(plan)))
        moved[name] = np.concatenate([(head[k] - start[k]).ravel() for k in start])
    return moved


def test_user_level_dp_on_the_batched_engine_sums_what_real_secagg_sums(home, tmp_path):
    """Every client sampled (so the server's secret sampling picks the same cohort), σ small:
    the batched engine (each device's own fit, their mean) and the real SecAgg+ protocol on
    the in-process engine release the same update up to the secret noise and quantization."""
    cfg = dp_config("user", epsilon=1000.0, noise_multiplier=0.05, max_grad_norm=0.5)
    cfg.federation = replace(cfg.federation, rounds=1, clients_per_round=USERS, secagg=True,
                             checkpoint_every=1, strategy="fedavg", server_lr=1.0)
    for engine in ("in-process", "batched"):
        cfg.federation = replace(cfg.federation, engine=engine)
        final = simulate(cfg.validate(), tmp_path / engine, progress=False)
        assert final["engine"] == engine and final["privacy"]["epsilon"] > 0
        assert len(check_ledger(tmp_path / engine)["server"]) == 1  # `fedrec audit` passes
    moved = moved_heads({e: tmp_path / e for e in ("in-process", "batched")})
    noise = 0.05 * 0.5 / USERS * np.sqrt(len(moved["batched"]))  # the mean's noise norm
    assert np.linalg.norm(moved["batched"]) > 2 * noise  # the signal is not the noise
    assert np.linalg.norm(moved["batched"] - moved["in-process"]) < 3 * noise


def distributed_config(**settings) -> config.RunConfig:
    cfg = dp_config("record", **{"window": 4, "rank": 4, **settings})
    cfg.federation = replace(cfg.federation, secagg=True, rounds=2, checkpoint_every=1,
                             strategy="fedavg", server_lr=1.0)
    return cfg.validate()


def test_distributed_record_dp_on_real_secagg_sums_what_the_batched_engine_sums(home, tmp_path):
    """Each device clips per record and adds its noise share; SecAgg+ (the real protocol, on
    the in-process engine) sums them, and the batched engine computes the same sum. σ is
    small here (ε ≈ 35 per release), so only the (secret) noise and SecAgg+'s quantization
    differ: the two engines' updates agree up to the noise."""
    cfg = distributed_config(noise_multiplier=0.2, epsilon=1000.0)
    engines = ("in-process", "batched")
    for engine in engines:
        cfg.federation = replace(cfg.federation, engine=engine)
        simulate(cfg.validate(), tmp_path / engine, progress=False)
        by_client = check_ledger(tmp_path / engine)  # `fedrec audit` passes
        assert all(line["steps"] == 1 and line["sample_rate"] == 1.0
                   for lines in by_client.values() for line in lines)
        rounds = read_jsonl(tmp_path / engine / "rounds.jsonl")
        assert all(r["aggregated"] for r in rounds)
    moved = moved_heads({e: tmp_path / e for e in engines})
    agreement = np.corrcoef(moved["batched"], moved["in-process"])[0, 1]
    assert agreement > 0.5


def test_a_batched_run_that_keeps_few_stores_open_loses_no_charge(home, tmp_path, monkeypatch):
    """The batched engine keeps the last used devices' stores open between rounds and closes
    the others: with room for 3 of 40, every device sampled in every round still charges and
    logs each release once, and `fedrec audit` passes."""
    from fedrec.simulation import batched

    monkeypatch.setattr(batched, "open_store_limit", lambda: 3)
    cfg = distributed_config(noise_multiplier=0.2, epsilon=1000.0)
    cfg.federation = replace(cfg.federation, engine="batched", rounds=3, clients_per_round=USERS,
                             eval_every=3)
    simulate(cfg.validate(), tmp_path / "run", progress=False)
    by_client = check_ledger(tmp_path / "run")
    assert len(by_client) == USERS
    assert all(sorted(line["round"] for line in lines) == [1, 2, 3]
               for lines in by_client.values())


def test_a_distributed_dp_round_with_fewer_updates_than_secagg_guarantees_is_not_used(
        home, tmp_path):
    cfg = distributed_config(epsilon=8.0)
    cfg.federation = replace(cfg.federation, fail_rate=0.6, secagg_dropout=0.2)
    final = simulate(cfg.validate(), tmp_path / "run", progress=False)
    rounds = read_jsonl(tmp_path / "run" / "rounds.jsonl")
    assert all(r["completed"] < 8 and not r["aggregated"] for r in rounds)
    assert final["rounds_not_aggregated"] == 2
