"""Flower's simulation engine, set up for a command-line tool: quiet logs, Ray resources,
and one measured speed-up for large federations.

Why `run_simulation` and not `flwr run`: it runs the ServerApp in this process (so the run
directory, progress bar and evaluation need no IPC), leaves no SuperLink daemon behind, and
works offline with no extra settings. Its one cost is a deprecation notice, which we silence;
`flwr run .` works with the same apps (see docs/federation.md).
"""

from __future__ import annotations

import logging
import os
import warnings


def configure_environment(flwr_home: str) -> None:
    """Must run before flwr is imported: no telemetry, a private FLWR_HOME, quiet Ray."""
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


def backend_config(client_cpus: float, verbose: bool = False) -> dict:
    """Ray resources: actors = CPUs / `client_cpus` (2 actors on 2 cores with 1.0)."""
    return {
        "client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
        "init_args": {"logging_level": "WARNING" if verbose else "ERROR",
                      "log_to_driver": verbose},
    }


def patch_message_sweep() -> bool:
    """flwr 1.41's engine polls *every* registered node for messages every 0.1 s, and each
    poll scans every pending message: O(nodes × pending) of driver CPU per sweep. With 943
    nodes that halved throughput here. This visits only nodes that have undelivered messages
    (same messages, same order per node). Applied only to the version it was measured on."""
    import flwr
    from flwr.server.superlink.fleet.vce import vce_api

    if flwr.__version__ != "1.41.0" or getattr(vce_api, "_fedrec_patched", False):
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


def map_nodes_in_order(num_clients: int, timeout: float = 300.0):
    """For the simulation engine: node i registers as partition i, so the i-th node id of the
    in-memory link state is client i. Waits until all nodes are registered."""
    from fedrec.server.app import wait_for_nodes

    def map_nodes(grid) -> dict[int, int]:
        wait_for_nodes(grid, num_clients, timeout)
        return {node_id: i for i, node_id in enumerate(grid.state.nodes.keys())}

    return map_nodes
