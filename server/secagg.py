"""Secure aggregation with Flower's SecAgg+ (`SecAggPlusWorkflow` on the server, the clients'
`secaggplus_mod`): the server learns only the weighted sum of the updates of the clients that
completed the round. No cryptography of ours: the parameters come from `fedrec.common.secagg`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from fedrec.common.secagg import MODULUS, clipping_range


@dataclass(frozen=True)
class SecAggSettings:
    """The run's SecAgg+ parameters (printed and recorded per round)."""

    num_shares: int
    reconstruction_threshold: int
    quantization_range: int
    max_weight: float
    timeout: float | None


class FedRecSecAggWorkflow(SecAggPlusWorkflow):
    """`SecAggPlusWorkflow` whose clipping range follows the current global model every round,
    and which reports a round it had to halt (too many dropouts) to the strategy instead of
    passing silently: that round is recorded as not aggregated and the run goes on."""

    def __init__(self, strategy, settings: SecAggSettings):
        super().__init__(settings.num_shares, settings.reconstruction_threshold,
                         max_weight=settings.max_weight,
                         clipping_range=clipping_range(strategy.current,
                                                       strategy.update_bound),
                         quantization_range=settings.quantization_range,
                         modulus_range=MODULUS, timeout=settings.timeout)
        self.strategy, self.settings = strategy, settings

    def setup_stage(self, grid, context, state) -> bool:
        self.clipping_range = clipping_range(self.strategy.current, self.strategy.update_bound)
        self.strategy.secagg_state = state  # who was sampled and who is still active
        self.strategy.secagg_params = {
            "num_shares": self.settings.num_shares,
            "threshold": self.settings.reconstruction_threshold,
            "quantization_range": self.settings.quantization_range,
            "clipping_range": round(self.clipping_range, 6),
            "max_weight": self.settings.max_weight,
        }
        return super().setup_stage(grid, context, state)

    def __call__(self, grid, context) -> None:
        from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState

        state = WorkflowState()
        round_ = int(context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        stages = (self.setup_stage, self.share_keys_stage, self.collect_masked_vectors_stage,
                  self.unmask_stage)
        self.strategy.stage_seconds = {}
        for stage in stages:
            started = time.perf_counter()
            try:
                ok = stage(grid, context, state)
            except Exception as exc:  # noqa: BLE001 — e.g. a client lost before key sharing
                if self.strategy.closed_round == self.strategy._round(round_):
                    raise  # the round was aggregated: the error is not the protocol's
                ok, error = False, f"{type(exc).__name__}: {exc}"
            else:
                error = None
            self.strategy.stage_seconds[stage.__name__.removesuffix("_stage")] = round(
                time.perf_counter() - started, 3)
            if not ok:
                sampled = len(getattr(state, "sampled_node_ids", ()))
                self.strategy.round_halted(round_, stage.__name__, sampled=sampled,
                                           failed=sampled - len(state.active_node_ids),
                                           error=error)
                return
