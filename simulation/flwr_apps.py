"""The same federation for `flwr run .` (declared under [tool.flwr.app] in pyproject.toml).

    flwr run . --stream --federation-config "num-supernodes=600" \
        --run-config "config='' run-dir='runs/flwr'"

Run-config keys: `config` — a fedrec config.toml (empty: the defaults, i.e. the synthetic
data set), and `run-dir` — the run directory (an existing one is resumed). `num-supernodes`
must equal the data set's number of users (one client per user). `fedrec simulate` is the
primary path; see docs/federation.md for the trade-offs.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedrec.common import config


def _run_settings(run_config) -> tuple[config.RunConfig, Path]:
    path = str(run_config.get("config", ""))
    cfg = config.load(Path(path)) if path else config.RunConfig()
    return cfg.validate(), Path(str(run_config.get("run-dir", "runs/flwr"))).resolve()


server_app = ServerApp()


@server_app.main()
def _server(grid, context) -> None:
    from fedrec.server.app import map_nodes_by_query, run_rounds
    from fedrec.simulation.recorder import Recorder
    from fedrec.simulation.run import _start, assemble, finish

    cfg, run_dir = _run_settings(context.run_config)
    resume = (run_dir / "config.toml").exists()
    cfg, start_round, latest = _start(run_dir, None if resume else cfg, resume)
    recorder = Recorder(run_dir)
    strategy, _ = assemble(cfg, run_dir, start_round, latest, recorder, progress=False,
                           server=True)
    started = time.perf_counter()
    run_rounds(grid, context, strategy, cfg.federation.rounds - start_round,
               map_nodes_by_query(strategy.num_clients))
    finish(run_dir, recorder, time.perf_counter() - started)


@lru_cache(maxsize=2)
def _client_settings(config_path: str, run_dir: str):
    from fedrec.simulation.recorder import Recorder
    from fedrec.simulation.run import assemble

    cfg, root = _run_settings({"config": config_path, "run-dir": run_dir})
    return assemble(cfg, root, 0, None, Recorder(root), progress=False)[1]


def _client_fn(context):
    import torch

    from fedrec.client.app import FedRecClient

    torch.set_num_threads(1)
    return FedRecClient(_settings(context), int(context.node_config["partition-id"])).to_client()


def _settings(context):
    return _client_settings(str(context.run_config.get("config", "")),
                            str(context.run_config.get("run-dir", "runs/flwr")))


def _schema(context):
    return _settings(context).schema


def _mods() -> list:
    from fedrec.client.app import client_mods

    # masked when the server runs SecAgg+ (`federation.secagg` in the run's config); the
    # egress log is on for a node started with --node-config "egress-log='PATH'"
    return client_mods(False, _schema)


client_app = ClientApp(client_fn=_client_fn, mods=_mods())
