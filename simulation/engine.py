"""Flower's simulation engine (Ray), set up for a command-line tool: quiet logs, Ray
resources, the run config the apps read, and one measured speed-up for large federations.

Why not `flwr run`: `fedrec simulate` runs the ServerApp in this process (so evaluation and
the progress bar need no IPC), leaves no SuperLink daemon behind, and works offline with no
extra settings. `flwr run .` runs the same two apps (docs/federation.md). Flower's public
`run_simulation` hands the apps an empty run config, so `run_on_ray` calls the function that
Flower's own `flwr-simulation` process calls, with the run's config; both that call and the
message-sweep patch are checked against the Flower version they were written for (and a test
fails when Flower changes under them).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import warnings
from pathlib import Path


def configure_environment(flwr_home: str) -> None:
    """Must run before flwr (and Ray) is imported: no telemetry, a private FLWR_HOME, quiet
    Ray, and Ray on the loopback only.

    Ray's GCS server, raylet and workers accept unauthenticated connections, on every
    interface by default. Ray takes the loopback as its node address where it does not support
    clusters (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`), and its servers then listen on
    127.0.0.1 alone: a simulation is one machine. Export that variable as 1 to get Ray's
    default (reachable from other machines) deliberately."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_HOME", flwr_home)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def quiet_logs(verbose: bool = False) -> None:
    """Hide Flower's per-round INFO lines and Ray's warnings (the CLI draws its own bar).
    Client errors still reach the strategy, which counts and records them."""
    logging.getLogger("flwr").setLevel(logging.INFO if verbose else logging.CRITICAL)
    logging.getLogger("ray").setLevel(logging.WARNING if verbose else logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray(\..*)?")


def backend_config(client_cpus: float, verbose: bool = False,
                   temp_dir: str | None = None) -> dict:
    """Ray resources: actors = CPUs / `client_cpus` (2 actors on 2 cores with 1.0).
    `temp_dir`: where Ray keeps its session (sockets, logs); `run_on_ray` removes it after."""
    init_args = {"logging_level": "WARNING" if verbose else "ERROR", "log_to_driver": verbose}
    if temp_dir is not None:
        init_args["_temp_dir"] = temp_dir
    return {"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
            "init_args": init_args}


FLWR_VERSION = "1.41.0"  # the version `run_on_ray` and `patch_message_sweep` were written for


def run_on_ray(server_app, client_app, num_supernodes: int, run_config: dict,
               backend_config: dict, app_dir: Path) -> None:
    """Run `server_app` in this process and `client_app` on `num_supernodes` virtual nodes
    (Ray actors), both with `run_config` as their `context.run_config`. `app_dir`: a
    directory for the app description Flower fuses the run config with. Ray's session
    directory is a fresh temporary one (unless `backend_config` names one), removed after the
    run, also a failed one."""
    import flwr
    from flwr.app import Context, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.constant import NOOP_FEDERATION_ID
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supercore.telemetry import EventType

    if flwr.__version__ != FLWR_VERSION:
        raise RuntimeError(f"fedrec's Ray engine was written for flwr {FLWR_VERSION}; this is "
                           f"flwr {flwr.__version__} (install flwr[simulation]=={FLWR_VERSION})")
    from flwr.simulation.run_simulation import _run_simulation

    from fedrec.common.plan import app_description

    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "pyproject.toml").write_text(app_description())
    run = Run.create_empty(run_id=secrets.randbits(63))
    run.primary_task_id, run.federation_id = 1, NOOP_FEDERATION_ID
    run.override_config = dict(run_config)
    TaskIdentity.task_id, TaskIdentity.run_id = 1, run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    context = Context(run_id=run.run_id, node_id=SUPERLINK_NODE_ID, node_config={},
                      state=RecordDict(), run_config=dict(run_config))
    _check_loopback()
    init_args = backend_config.setdefault("init_args", {})
    # short: Ray's socket paths under it must fit the 107 bytes of a Unix socket name (the
    # platform's temporary directory can be long, e.g. on macOS); Ray's own default is /tmp
    base = os.environ.get("RAY_TMPDIR") or ("/tmp" if os.path.isdir("/tmp") else None)
    session = (None if "_temp_dir" in init_args
               else tempfile.mkdtemp(prefix="fedrec-ray-", dir=base))
    init_args.setdefault("_temp_dir", session)
    try:
        _run_simulation(num_supernodes=num_supernodes,
                        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                        client_app=client_app, server_app=server_app,
                        backend_config=backend_config, app_dir=str(app_dir), is_app=True,
                        run=run, server_app_context=context)
    finally:
        if session is not None:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            shutil.rmtree(session, ignore_errors=True)


def _check_loopback() -> None:
    """Ray reads whether it may serve other machines once, when it is imported: refuse to start
    it open when it was imported before `configure_environment` bound it to the loopback."""
    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER and os.environ.get(
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "1":
        raise RuntimeError("Ray was imported before fedrec could bind it to 127.0.0.1, so it "
                           "would listen on every interface: start the simulation in a fresh "
                           "process, or set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 to open it "
                           "deliberately")


def patch_message_sweep() -> bool:
    """flwr 1.41's engine polls *every* registered node for messages every 0.1 s, and each
    poll scans every pending message: O(nodes × pending) of driver CPU per sweep. With 943
    nodes that halved throughput here. This visits only nodes that have undelivered messages
    (same messages, same order per node). Applied only to the version it was measured on."""
    import flwr
    from flwr.server.superlink.fleet.vce import vce_api

    if flwr.__version__ != FLWR_VERSION or getattr(vce_api, "_fedrec_patched", False):
        return False

    def add_messages_to_queue(state, queue, nodes_mapping, f_stop):
        while not f_stop.is_set():
            store = getattr(state, "message_ins_store", None)
            if store is None:  # not the in-memory state: fall back to the full sweep
                targets = list(nodes_mapping)
            else:
                with state.lock:
                    pending = {m.metadata.dst_node_id for m in store.values()
                               if m.metadata.delivered_at == ""}
                targets = [n for n in nodes_mapping if n in pending]
            for node_id in targets:
                for msg in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(msg)
            f_stop.wait(0.1)

    vce_api.add_messages_to_queue = add_messages_to_queue
    vce_api._fedrec_patched = True
    return True
