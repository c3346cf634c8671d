"""The Flower `ServerApp`: `LegacyContext` + `DefaultWorkflow` around `FedRecStrategy`.

Secure aggregation (a later step) is a different `fit_workflow` on this same path.
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
    Flower node id -> client index map once all clients are connected."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context) -> None:
        strategy.node_to_client = map_nodes(grid)
        legacy = LegacyContext(
            context,
            config=ServerConfig(num_rounds=num_rounds),
            strategy=strategy,
            client_manager=SimpleClientManager(),
        )
        DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)

    return app
