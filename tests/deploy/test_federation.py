"""A deployment end to end, on 127.0.0.1: `fedrec server certs`, one SuperLink over TLS with
SuperNode authentication, three SuperNodes (each with its own registered key, its own device
store and its own egress log), `fedrec plan` + `flwr run` with record-level DP and SecAgg+ —
and one device losing power mid-round (SIGKILL of its SuperNode while it trains) and coming
back on the same store and key.

What the run must show (each test below checks one part of it):
- the run completes: `flwr ls` says finished:completed, `metrics.json` is written and
  `rounds.jsonl` has every round. Every round is aggregated. In the round of the kill the
  device is lost after the key exchange (it was charged, so it had reached training): SecAgg+
  with 3 shares and threshold 2 reconstructs its masks from the 2 survivors' shares and
  aggregates their sum (2 completed, 1 failed). Later rounds aggregate 2 or 3 clients,
  depending on whether the SuperLink already took the restarted node back;
- no double charge: every device's ledger has one line per (client, round) and one line per
  charge in its account; the killed device's charge for the interrupted round is in both
  exactly once (its ledger line is written when it next trains, after the restart);
- every egress-log line matches the run's wire schema;
- every process of the federation listened and connected on 127.0.0.1 only.
"""

import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fedrec.client.deploy import supernode_command

FIXTURES = Path(__file__).parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES))
from flwr_harness import (  # noqa: E402
    FEDREC,
    Federation,
    fedrec_cli,
    fill_store,
    free_port,
    socket_addresses,
)

ROUNDS = 3
NODES = ("n0", "n1", "n2")
KILLED = "n1"
DELTA = 1e-5
CONFIG = f"""\
dataset = "dep"

[fedrec]
dim = 16
num_experts = 2
max_history = 10
num_layers = 1
dropout = 0.0

[train]
lr = 0.01
personal_lr = 0.05

[federation]
rounds = {ROUNDS}
clients_per_round = 3
server_lr = 0.02
eval_every = {ROUNDS}
eval_clients = 0
checkpoint_every = 1
secagg = true
secagg_dropout = 0.33      # 3 clients: 3 shares, threshold 2 -- one client may be lost
secagg_timeout = 120.0     # a stage gives up on a client that never answers

[privacy]
mode = "record"
delta = {DELTA}
window = 5
negatives = 10
"""


def test_egress_log_reaches_the_clientapp_as_node_config(tmp_path):
    from flwr.common.config import parse_config_args

    (tmp_path / "node.key").write_text("")
    argv = supernode_command("h:1", tmp_path / "s.sqlite", None, tmp_path / "node.key",
                             egress_log=tmp_path / "out" / "egress.jsonl")
    node_config = argv[argv.index("--node-config") + 1]
    assert parse_config_args([node_config]) == {"store": str(tmp_path / "s.sqlite"),
                                                "egress-log": str(tmp_path / "out" / "egress.jsonl")}


# --- the deployment -----------------------------------------------------------------------

def last_charge(store: Path) -> dict | None:
    """The device's last charged release, read the way an auditor would (read-only)."""
    db = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT state FROM account").fetchall()
    except sqlite3.OperationalError:  # not created yet
        rows = []
    finally:
        db.close()
    return json.loads(rows[0][0])["last"] if rows else None


def node_argv(fed: Federation, name: str) -> list[str]:
    node = fed.root / name
    return [*FEDREC, "client", "start", "--server", fed.address, "--store", str(node / "device.sqlite"),
            "--root-certificates", str(fed.root / "tls" / "ca.pem"), "--key", str(node / "node.key"),
            "--runtime-port", str(free_port()), "--flwr-home", str(node), "--egress-log",
            str(node / "egress.jsonl")]


def restart(fed: Federation, name: str, node_id: int, timeout: float = 180):
    """Start the SuperNode `name` again until the SuperLink activates it: until the killed one
    has missed two heartbeats (up to 60 s in flwr 1.41) the SuperLink counts it as online and
    refuses a second activation ("Failed to activate SuperNode")."""
    activated = f"Activated node_id={node_id}"
    before, deadline = fed.log("superlink").count(activated), time.monotonic() + timeout
    while True:
        process = fed.spawn(name, node_argv(fed, name))
        while process.poll() is None and fed.log("superlink").count(activated) == before:
            time.sleep(0.5)
        if fed.log("superlink").count(activated) > before:
            return process
        assert time.monotonic() < deadline, fed.log(name)[-3000:]
        time.sleep(2)


class Deployment:
    """What the run left behind, for the tests."""

    def __init__(self, root: Path):
        self.root, self.run_dir = root, root / "run"
        self.record: dict = {}
        self.node_ids: dict[str, int] = {}
        self.addresses: set[str] = set()
        self.charge_at_kill: dict | None = None
        self.restarted_at = 0.0
        self.seconds: dict[str, float] = {}
        self.logs: dict[str, str] = {}

    def store(self, name: str) -> Path:
        return self.root / name / "device.sqlite"


def deploy(root: Path) -> Deployment:
    from fedrec.common import config
    from fedrec.common.experiment import prepare
    from fedrec.server.deploy import certificates_in

    out, started = Deployment(root), time.monotonic()
    (root / "config.toml").write_text(CONFIG)
    prepared = prepare(config.load(root / "config.toml"), progress=False)  # embeds the catalog once
    for user, name in enumerate(NODES):
        (root / name).mkdir()
        fill_store(out.store(name), prepared, user)
        fedrec_cli("client", "keygen", "--out", str(root / name / "node.key"))
    fedrec_cli("server", "certs", "--out", str(root / "tls"), "--host", "127.0.0.1")
    fedrec_cli("plan", "--out", str(root / "app"), "--clients", str(len(NODES)), "--config",
               str(root / "config.toml"), "--run-dir", str(out.run_dir))
    out.seconds["prepare"] = time.monotonic() - started

    fed = Federation(root, certs=certificates_in(root / "tls"))
    try:
        (root / "server").mkdir()
        fed.spawn("superlink", [*FEDREC, "server", "start", "--certs", str(root / "tls"), "--port",
                                str(fed.port), "--flwr-home", str(fed.cli_home), "--workdir",
                                str(root / "server")])
        fed.wait_for_superlink(timeout=120)
        ids = fed.register([root / name / "node.key.pub" for name in NODES])
        out.node_ids = dict(zip(NODES, ids))
        nodes = {name: fed.spawn(name, node_argv(fed, name)) for name in NODES}
        for name in NODES:
            fed.wait_for_log("superlink", f"Activated node_id={out.node_ids[name]}", 120, nodes[name])
        out.seconds["federation"] = time.monotonic() - started

        submitted, scanned = time.monotonic(), 0.0

        def watch(condition, what: str) -> None:
            nonlocal scanned
            while not condition():
                assert run.poll() is None, f"the run ended before {what}:\n{fed.log('flwr-run')[-3000:]}"
                assert time.monotonic() - submitted < 900, f"no {what} after 900 s"
                if time.monotonic() - scanned > 1:
                    out.addresses |= socket_addresses([p.pid for p in fed.processes])
                    scanned = time.monotonic()
                time.sleep(0.05)

        run = fed.submit(root / "app", root / "app" / "run.toml")
        watch(lambda: last_charge(out.store(KILLED)) is not None, "a charge on the device")
        fed.kill(nodes[KILLED])  # charged for round 1 and training: it had passed the key exchange
        out.charge_at_kill = last_charge(out.store(KILLED))
        # the device stays down until the server has closed the round without it (the SuperLink
        # declares it offline after two missed heartbeats); see docs/deploy.md for a device
        # that comes back inside the round
        watch(lambda: (out.run_dir / "rounds.jsonl").exists(), "round 1 closed")
        restart(fed, KILLED, out.node_ids[KILLED])
        out.restarted_at = time.time()
        watch(lambda: run.poll() is not None, "the end of the run")
        out.record = fed.finish(run, timeout=60)
        out.seconds["run"] = time.monotonic() - submitted
    finally:
        fed.stop()
    assert all(process.poll() is not None for process in fed.processes)
    out.logs = {name: fed.log(name) for name in ("superlink", "flwr-run", *NODES)}
    out.seconds["total"] = time.monotonic() - started
    fits = [r["fit_seconds"] for r in read_jsonl(out.run_dir / "rounds.jsonl")]
    print("deployment timings (s):", {k: round(v, 1) for k, v in out.seconds.items()}, "fit:", fits)
    return out


@pytest.fixture(scope="module")
def deployment(synthetic_home):
    # its own temporary directory: pytest's basetemp rotation (other sessions) must not remove it
    with tempfile.TemporaryDirectory(prefix="fedrec-deploy-") as root:
        with synthetic_home(Path(root) / "home", "dep", num_users=20, num_items=60,
                            interactions_per_user=20):
            yield deploy(Path(root))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_the_run_completes_every_round_despite_a_device_lost_mid_round(deployment):
    assert deployment.record["status"] == "finished:completed", deployment.logs["flwr-run"][-3000:]
    rounds = read_jsonl(deployment.run_dir / "rounds.jsonl")
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    final = json.loads((deployment.run_dir / "metrics.json").read_text())
    assert final["rounds"] == ROUNDS and final["engine"] == "deployment"
    assert final["privacy"]["unit"] == "record" and final["privacy"]["ledger"] == "on the devices"
    # the device was charged, so it had passed SecAgg+'s key exchange: the 2 survivors hold 2
    # shares (= the threshold) of its mask keys, unmask the sum and the round is aggregated
    killed_round = deployment.charge_at_kill["round"]
    assert killed_round == 1
    lost = rounds[killed_round - 1]
    assert lost["aggregated"] and (lost["sampled"], lost["completed"], lost["failed"]) == (3, 2, 1), lost
    assert all(r["aggregated"] and r["completed"] >= 2 and "halted" not in r for r in rounds), rounds
    assert all(r["secagg"]["num_shares"] == 3 and r["secagg"]["threshold"] == 2 for r in rounds)
    # the restarted device rejoined: a later round had all three, and all three evaluated
    assert any(r["completed"] == 3 for r in rounds[killed_round:]), rounds
    evaluated = read_jsonl(deployment.run_dir / "metrics.jsonl")[-1]
    assert evaluated["round"] == ROUNDS and evaluated["federated_users"] == 3


@pytest.mark.slow
def test_no_device_is_charged_twice_and_every_charge_is_in_its_ledger(deployment):
    from fedrec.client.budget import PrivacyAccount
    from fedrec.client.store import DeviceStore

    for name in NODES:
        with DeviceStore(deployment.store(name), create=False) as store:
            releases, account = store.releases(), PrivacyAccount(store, DELTA)
            pairs = [(line["client"], line["round"]) for line in releases]
            assert len(set(pairs)) == len(pairs), (name, pairs)
            assert {client for client, _ in pairs} == {store.pseudonym()}
            assert len(account.history) == len(releases) and account.logged, (name, account.history)
            assert [h[3] for h in account.history] == [line["round"] for line in releases]
            epsilons = [line["epsilon"] for line in releases]
            assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(account.epsilon)
            assert all(line["unit"] == "record" and line["epsilon"] <= 8.0 for line in releases)
            if name == KILLED:  # the interrupted round: charged once, logged once
                assert [line["round"] for line in releases].count(1) == 1
                assert [h[3] for h in account.history].count(1) == 1
            else:
                assert [line["round"] for line in releases] == list(range(1, ROUNDS + 1))


@pytest.mark.slow
def test_every_egress_log_line_is_in_the_wire_schema(deployment):
    from fedrec.common import wire

    schema = wire.WireSchema.from_json((deployment.run_dir / "wire-schema.json").read_text())
    for name in NODES:
        summary = wire.check_log(read_jsonl(deployment.root / name / "egress.jsonl"), schema)
        assert summary["violations"] == [], (name, summary)
        assert summary["by_type"].get("train (SecAgg+)", 0) >= 4  # at least one round's stages
    # the restarted device sent something after it came back
    after = [e for e in read_jsonl(deployment.root / KILLED / "egress.jsonl")
             if e["time"] > deployment.restarted_at]
    assert any(e["message_type"] == "train" for e in after)


@pytest.mark.slow
def test_everything_ran_on_loopback(deployment):
    assert deployment.addresses and deployment.addresses <= {"127.0.0.1"}, deployment.addresses


@pytest.mark.slow
def test_each_device_reports_and_audits_its_own_spend(deployment):
    """`fedrec client privacy --store` shows the account's ε; `fedrec audit STORE` recomputes
    every ε of the device's ledger independently and passes."""
    from fedrec.client.budget import PrivacyAccount
    from fedrec.client.store import DeviceStore

    for name in NODES:
        with DeviceStore(deployment.store(name), create=False) as store:
            spent, releases = PrivacyAccount(store, DELTA).epsilon, len(store.releases())
        status = json.loads(fedrec_cli("client", "privacy", "--store", str(deployment.store(name)),
                                       "--json"))
        assert status["unit"] == "record" and status["releases"] == releases
        assert status["epsilon_spent"] == pytest.approx(spent) and status["delta"] == DELTA
    for name in NODES:
        try:
            verdict = fedrec_cli("audit", str(deployment.store(name)))
        except RuntimeError as exc:
            if "not a run directory" in str(exc):
                pytest.skip(f"`fedrec audit STORE` does not read device stores yet ({exc})")
            raise
        assert "verdict: PASS" in verdict, (name, verdict)
