"""The Flower `ServerApp` of every fedrec run: `server_app`, declared in pyproject.toml.

`fedrec simulate`, `flwr run .` and a deployment's SuperLink all run this one app. It reads the
run plan (`fedrec.common.plan`) and the run directory from `context.run_config`, opens or
resumes the run directory (`fedrec.server.records`), and runs `LegacyContext` +
`DefaultWorkflow` around `FedRecStrategy`; secure aggregation is the same path with SecAgg+ as
the `fit_workflow` (`federation.secagg`).

A simulation adds what only it can do through the run-config key `server-hooks`
("module:function", called with the plan, the run directory and the run config): evaluation
of the global head by the central protocol, the batched training engine, and collecting the
virtual devices' ledgers before the run's summary is written. A deployment names none.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid, ServerApp

from fedrec.common.errors import ConfigError
from fedrec.common.plan import ENGINE_KEY, RUN_DIR_KEY, SERVER_HOOKS_KEY, RunPlan
from fedrec.server.strategy import FedRecStrategy


@dataclass
class ServerHooks:
    """What a simulation adds to the ServerApp (all optional). `central_eval(round, arrays)`:
    the central protocol's metrics of a global head; `fit_workflow(strategy)`: a replacement
    for Flower's training step (the batched engine); `before_finish()`: runs after the last
    round, before `metrics.json` is written; `full_eval(round)`: the central protocol over
    every user for an evaluated round, when `central_eval` covered a sample of them."""

    central_eval: Callable | None = None
    fit_workflow: Callable[[FedRecStrategy], object] | None = None
    before_finish: Callable[[], None] | None = None
    full_eval: Callable[[int], dict] | None = None


server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context) -> None:
    run(grid, context)


def run(grid: Grid, context) -> dict:
    """The body of the ServerApp: open the run directory, run the remaining rounds, write the
    summary. Returns the summary (`metrics.json`)."""
    from fedrec.server import checkpoint, records

    plan = RunPlan.from_run_config(context.run_config)
    run_dir = Path(str(context.run_config.get(RUN_DIR_KEY, "") or "runs/flwr")).resolve()
    hooks = _hooks(plan, run_dir, context.run_config)
    start_round, latest = records.open_run(run_dir, plan, hooks.central_eval is not None)
    initial, opt_state = initial_head(plan), None
    if latest is not None:
        _, shared, opt_state = checkpoint.load(latest)
        initial = [shared[k] for k in plan.keys]
    strategy = FedRecStrategy(plan, initial, run_dir, records.Recorder(run_dir), start_round,
                              opt_state, central_eval=hooks.central_eval,
                              ledger=run_dir / records.LEDGER)
    started = time.perf_counter()
    if start_round < plan.federation.rounds:
        run_rounds(grid, context, strategy, plan.federation.rounds - start_round,
                   map_nodes_by_query(plan.num_clients),
                   hooks.fit_workflow(strategy) if hooks.fit_workflow else None)
    elif not (run_dir / "metrics.json").exists():  # killed after the last checkpoint
        from flwr.common import ndarrays_to_parameters

        strategy.evaluate(0, ndarrays_to_parameters(strategy.current))
    else:
        raise ConfigError(f"{run_dir}: already finished ({start_round} rounds)")
    if hooks.before_finish:
        hooks.before_finish()
    return records.finish(run_dir, time.perf_counter() - started,
                          str(context.run_config.get(ENGINE_KEY, "") or "deployment"),
                          hooks.full_eval)


def initial_head(plan: RunPlan) -> list:
    """The shared head before round 1: the model's initialization under the run's seed."""
    import torch

    from fedrec.common.model import FedRecModel

    torch.manual_seed(plan.config.seed)
    template = FedRecModel(plan.model, num_users=1)
    if tuple(template.shared_state()) != plan.keys:
        raise ConfigError("the run plan's shared arrays do not match this fedrec's model "
                          f"({list(plan.keys)[:3]}...): rebuild the plan with this version")
    return template.shared_arrays()


def _hooks(plan: RunPlan, run_dir: Path, run_config) -> ServerHooks:
    reference = str(run_config.get(SERVER_HOOKS_KEY, "") or "")
    if not reference:
        return ServerHooks()
    module, _, name = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"run-config key '{SERVER_HOOKS_KEY}' = '{reference}': cannot load "
                          f"it ({exc}); expected 'package.module:function'") from None
    return factory(plan, run_dir, run_config)


def secure_fit_workflow(strategy: FedRecStrategy):
    """None (plain aggregation) or SecAgg+ with the plan's parameters."""
    secagg = strategy.plan.secagg
    if secagg is None:
        return None
    from fedrec.server.secagg import FedRecSecAggWorkflow, SecAggSettings

    return FedRecSecAggWorkflow(strategy, SecAggSettings(
        secagg.num_shares, secagg.reconstruction_threshold, secagg.quantization_range,
        secagg.max_weight, secagg.timeout))


def run_rounds(grid: Grid, context, strategy: FedRecStrategy, num_rounds: int,
               map_nodes: Callable[[Grid], dict[int, int]], fit_workflow=None) -> None:
    """Map nodes to clients, then run `num_rounds` rounds of Flower's DefaultWorkflow."""
    strategy.node_to_client = map_nodes(grid)
    legacy = LegacyContext(
        context,
        config=ServerConfig(num_rounds=num_rounds),
        strategy=strategy,
        client_manager=SimpleClientManager(),
    )
    DefaultWorkflow(fit_workflow=fit_workflow or secure_fit_workflow(strategy))(grid, legacy)


def wait_for_nodes(grid: Grid, num_clients: int, timeout: float) -> list[int]:
    """Block until `num_clients` nodes are connected; their node ids in registration order."""
    deadline = time.monotonic() + timeout
    while len(node_ids := list(grid.get_node_ids())) < num_clients:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(node_ids)} of {num_clients} clients connected")
        time.sleep(0.05)
    return node_ids


def map_nodes_by_query(num_clients: int, timeout: float = 300.0):
    """Once `num_clients` nodes are connected, ask each for its properties (one batched legacy
    get_properties round trip): a virtual device answers its partition index, so the same
    clients are sampled for the same (seed, round) in every run of a simulation; real devices
    answer nothing and are numbered in node-id order."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import Message
    from flwr.common import GetPropertiesIns
    from flwr.common.constant import MessageTypeLegacy

    def map_nodes(grid: Grid) -> dict[int, int]:
        node_ids = wait_for_nodes(grid, num_clients, timeout)
        queries = [Message(content=compat.getpropertiesins_to_recorddict(GetPropertiesIns({})),
                           dst_node_id=n, message_type=MessageTypeLegacy.GET_PROPERTIES,
                           group_id="discover") for n in node_ids]
        reported, failed = {}, []
        for reply in grid.send_and_receive(queries, timeout=timeout):
            if reply.has_error():
                failed.append(reply.metadata.src_node_id)
                continue
            props = compat.recorddict_to_getpropertiesres(reply.content).properties
            if "partition-id" in props:
                reported[reply.metadata.src_node_id] = int(props["partition-id"])
        if not reported:  # real devices: numbered in node-id order
            return {node: i for i, node in enumerate(sorted(node_ids)[:num_clients])}
        if sorted(reported.values()) != list(range(num_clients)) or failed:
            raise RuntimeError(f"virtual devices reported partitions {sorted(reported.values())[:5]}"
                               f"... ({len(reported)} of {num_clients}, {len(failed)} failed to "
                               "answer); expected each of 0.." f"{num_clients - 1} exactly once")
        return reported

    return map_nodes
