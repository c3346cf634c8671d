"""Benchmark: what TLS and SecAgg+ cost a real deployment, side by side, on one machine.

Four loopback federations — TLS (with SuperNode authentication) on or off × SecAgg+ on or
off — each a SuperLink and 3 SuperNodes as real processes (the commands `fedrec server start`
and `fedrec client start` run), each device with its own store (the catalog and one user of a
tiny synthetic data set), run `--rounds` rounds of the default model and recipe (`fedrec plan`
+ `flwr run`, privacy off, evaluation after the last round only). Per round:

- `fit_seconds` (rounds.jsonl): the server's training step, from sampling to the aggregate —
  SecAgg+'s four stages included (`secagg_seconds`: where they went);
- wall: the time between consecutive round records as they appear in rounds.jsonl (the fit
  plus Flower's bookkeeping between rounds).

Round 1 includes start-up (installing the app, discovering the nodes) and is reported apart;
the means are over rounds 2..N. Every Flower message starts a fresh `flwr-clientapp` process on
the device, so process start-up dominates a round of this tiny model: read the numbers as the
protocol's overhead per round, not as training cost. The machine's load average is recorded
with each federation (the benchmark host is shared).
Writes benchmarks/results/deploy.json and deploy.png.

    python benchmarks/deploy.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests" / "fixtures"))
from flwr_harness import FEDREC, Federation, fedrec_cli, fill_store, free_port  # noqa: E402

NODES = ("n0", "n1", "n2")
COMBINATIONS = [(False, False), (True, False), (False, True), (True, True)]  # (tls, secagg)


def config_text(rounds: int, secagg: bool) -> str:
    """The default config, for 3 devices: every device every round, evaluated at the end."""
    return (f'dataset = "bench"\n\n[federation]\nrounds = {rounds}\nclients_per_round = 3\n'
            f"eval_every = {rounds}\neval_clients = 0\nsecagg = {str(secagg).lower()}\n")


def deployment(root: Path, prepared, rounds: int, tls: bool, secagg: bool) -> dict:
    """One federation's run; its per-round times."""
    from fedrec.client.deploy import make_node_key, public_key_path

    root.mkdir(parents=True)
    (root / "config.toml").write_text(config_text(rounds, secagg))
    fedrec_cli("plan", "--out", str(root / "app"), "--clients", str(len(NODES)), "--config",
               str(root / "config.toml"), "--run-dir", str(root / "run"))
    fed = Federation(root, insecure=not tls)
    load_before = os.getloadavg()[0]
    try:
        (root / "server").mkdir()
        link = [*FEDREC, "server", "start", "--port", str(fed.port), "--flwr-home", str(fed.cli_home),
                "--workdir", str(root / "server")]
        fed.spawn("superlink", link + (["--certs", str(fed.certs.directory)] if tls else ["--insecure"]))
        fed.wait_for_superlink(timeout=120)
        for user, name in enumerate(NODES):
            (root / name).mkdir()
            fill_store(root / name / "device.sqlite", prepared, user)
            if tls:
                make_node_key(root / name / "node.key")
        if tls:
            fed.register([public_key_path(root / name / "node.key") for name in NODES])
        for name in NODES:
            node = [*FEDREC, "client", "start", "--server", fed.address, "--store",
                    str(root / name / "device.sqlite"), "--runtime-port", str(free_port()),
                    "--flwr-home", str(root / name)]
            node += (["--root-certificates", str(fed.certs.ca_cert), "--key", str(root / name / "node.key")]
                     if tls else ["--insecure"])
            fed.spawn(name, node)
        submitted = time.monotonic()
        run = fed.submit(root / "app", root / "app" / "run.toml")
        seen: list[float] = []  # when each round's record appeared
        while run.poll() is None:
            path = root / "run" / "rounds.jsonl"
            lines = len(path.read_text().splitlines()) if path.exists() else 0
            seen += [time.monotonic() - submitted] * (lines - len(seen))
            if time.monotonic() - submitted > 3600:
                raise TimeoutError(f"{root}: the run took over an hour")
            time.sleep(0.2)
        record = fed.finish(run, timeout=60)
        wall = time.monotonic() - submitted
    finally:
        fed.stop()
    if record["status"] != "finished:completed":
        raise RuntimeError(f"{root}: run {record['status']}\n{fed.log('flwr-run')[-3000:]}")
    rounds_log = [json.loads(line) for line in (root / "run" / "rounds.jsonl").read_text().splitlines()]
    seen += [wall] * (len(rounds_log) - len(seen))  # a last record the poll did not see
    walls = np.diff([0.0, *seen]).tolist()
    later = rounds_log[1:]
    return {
        "tls": tls, "secagg": secagg,
        "aggregated_rounds": sum(r["aggregated"] for r in rounds_log),
        "fit_seconds": [r["fit_seconds"] for r in rounds_log],
        "wall_seconds": [round(w, 2) for w in walls],
        "mean_fit_seconds": round(float(np.mean([r["fit_seconds"] for r in later])), 2),
        "mean_wall_seconds": round(float(np.mean(walls[1:])), 2),
        "first_round_wall_seconds": round(walls[0], 2),
        "secagg_stage_seconds": secagg_stages(later) if secagg else None,
        "run_wall_seconds": round(wall, 1),
        "network_bytes": record.get("network-traffic", {}).get("total-bytes"),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def secagg_stages(rounds: list[dict]) -> dict:
    """Mean seconds per SecAgg+ stage; the round records itself inside the unmask stage, so the
    rest of the fit time is unmasking and aggregating."""
    stages = {k: float(np.mean([r["secagg_seconds"][k] for r in rounds])) for k in rounds[0]["secagg_seconds"]}
    stages["unmask_and_aggregate"] = float(np.mean([r["fit_seconds"] for r in rounds])) - sum(stages.values())
    return {k: round(v, 2) for k, v in stages.items()}


def main() -> None:
    from fedrec.common.data import files, synthetic

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--users", type=int, default=20, help="users of the synthetic data set")
    ap.add_argument("--items", type=int, default=100, help="items of the synthetic data set")
    args = ap.parse_args()
    if args.rounds < 2:
        ap.error("--rounds: at least 2 (round 1 is start-up)")

    rows = []
    with tempfile.TemporaryDirectory(prefix="fedrec-bench-deploy-") as tmp:
        root = Path(tmp)
        os.environ["FEDREC_HOME"] = str(root / "home")  # the data set and its embeddings
        files.save_dir(synthetic.generate(num_users=args.users, num_items=args.items,
                                          interactions_per_user=20, name="bench"),
                       root / "home" / "datasets" / "bench")
        from fedrec.common.config import RunConfig
        from fedrec.common.experiment import prepare

        prepared = prepare(RunConfig(dataset="bench"), progress=False)
        for tls, secagg in COMBINATIONS:
            name = f"tls-{'on' if tls else 'off'}-secagg-{'on' if secagg else 'off'}"
            rows.append({"name": name, **deployment(root / name, prepared, args.rounds, tls, secagg)})
            print(json.dumps(rows[-1]), flush=True)
    result = {"config": {**vars(args), "clients": len(NODES), "model": "default",
                         "machine_cpus": os.cpu_count()}, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "deploy.json").write_text(json.dumps(result, indent=2))
    plot(rows, RESULTS / "deploy.png", args.rounds)


def plot(rows: list[dict], path: Path, rounds: int) -> None:
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["mean_fit_seconds"] for r in rows], 0.4, label="fit (rounds.jsonl)")
    ax.bar(x + 0.2, [r["mean_wall_seconds"] for r in rows], 0.4, label="wall, round to round")
    for i, r in enumerate(rows):
        fits = r["fit_seconds"][1:]
        ax.plot([i - 0.2] * len(fits), fits, "k.", markersize=3)
    ax.set_xticks(x, [f"TLS {'on' if r['tls'] else 'off'}\nSecAgg+ {'on' if r['secagg'] else 'off'}"
                      for r in rows])
    ax.set_ylabel("seconds per round")
    ax.set_title(f"Loopback deployment, 3 SuperNodes, rounds 2..{rounds} (dots: single rounds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=120)


if __name__ == "__main__":
    main()
