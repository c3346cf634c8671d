"""The Flower `ServerApp`: `LegacyContext` + `DefaultWorkflow` around `FedRecStrategy`.

Secure aggregation is the same path with SecAgg+ as the `fit_workflow` (`federation.secagg`).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid, ServerApp

from fedrec.server.strategy import FedRecStrategy


def make_server_app(
    strategy: FedRecStrategy,
    num_rounds: int,
    map_nodes: Callable[[Grid], dict[int, int]],
    fit_workflow=None,
) -> ServerApp:
    """A ServerApp that runs `num_rounds` rounds of `strategy`. `map_nodes(grid)` returns the
    Flower node id -> client index map once all clients are connected. `fit_workflow`: a
    replacement for the training step of each round (the simulation's batched engine); None:
    Flower's, or SecAgg+ for a secure run."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context) -> None:
        run_rounds(grid, context, strategy, num_rounds, map_nodes, fit_workflow)

    return app


def secure_fit_workflow(strategy: FedRecStrategy):
    """None (plain aggregation) or SecAgg+ with parameters derived from the federation."""
    fed = strategy.fed
    if not fed.secagg:
        return None
    from fedrec.common.secagg import neighbourhood, quantization_range
    from fedrec.server.secagg import FedRecSecAggWorkflow, SecAggSettings

    shares, threshold = neighbourhood(strategy.cohort, fed.secagg_dropout,
                                      fed.secagg_corruption, fed.secagg_failure)
    max_weight = 1.0 if strategy.privacy.enabled else fed.secagg_max_weight  # DP: weight 1
    return FedRecSecAggWorkflow(strategy, SecAggSettings(
        shares, threshold, quantization_range(strategy.cohort), max_weight,
        fed.secagg_timeout or None))


def run_rounds(grid: Grid, context, strategy: FedRecStrategy, num_rounds: int,
               map_nodes: Callable[[Grid], dict[int, int]], fit_workflow=None) -> None:
    """The body of every fedrec ServerApp: map nodes to clients, then run the rounds."""
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
    import time

    deadline = time.monotonic() + timeout
    while len(node_ids := list(grid.get_node_ids())) < num_clients:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(node_ids)} of {num_clients} clients connected")
        time.sleep(0.05)
    return node_ids


def map_nodes_by_query(num_clients: int, timeout: float = 300.0):
    """For a deployment or `flwr run`: ask every connected node for its partition id (one
    batched legacy get_properties round trip)."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.app import Message
    from flwr.common import GetPropertiesIns
    from flwr.common.constant import MessageTypeLegacy

    def map_nodes(grid: Grid) -> dict[int, int]:
        node_ids = wait_for_nodes(grid, num_clients, timeout)
        queries = [Message(content=compat.getpropertiesins_to_recorddict(GetPropertiesIns({})),
                           dst_node_id=n, message_type=MessageTypeLegacy.GET_PROPERTIES,
                           group_id="discover") for n in node_ids]
        mapping = {}
        for reply in grid.send_and_receive(queries, timeout=timeout):
            if not reply.has_error():
                props = compat.recorddict_to_getpropertiesres(reply.content).properties
                mapping[reply.metadata.src_node_id] = int(props["partition-id"])
        return mapping

    return map_nodes
