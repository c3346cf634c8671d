"""The federation's strategy: Flower's legacy `FedAvg`, extended (not forked) with reproducible
client sampling, update validation, a server optimizer, checkpoints and per-round records.

It lives on the `flwr.server.strategy` API because SecAgg+ (`SecAggPlusWorkflow`) in flwr 1.41
only runs there, inside `DefaultWorkflow` with a `LegacyContext`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.common import EvaluateIns, FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg

from fedrec.common.plan import RunPlan
from fedrec.server import checkpoint, records
from fedrec.server.accountant import UserLevelAccountant
from fedrec.server.optimizer import ServerOptimizer
from fedrec.server.validation import UpdateRejected, validate_update


class FedRecStrategy(FedAvg):
    """FedAvg over the shared head. Rounds are numbered from the start of the run, also after
    a resume (`start_round` = the checkpoint's round).

    `node_to_client`: Flower node id -> client index (0..num_clients-1), used to sample the same
    clients for the same (seed, round) in every run. `central_eval(round, arrays)`: optional
    evaluation of the global model by the simulation (None in a deployment). `record(kind,
    round, values)`: receives 'fit', 'central_eval' and 'federated_eval' records.

    Under DP (`privacy.mode` record or user) every accepted update has weight 1. Record-level:
    clients out of budget decline (`declined` metric, weight 0) and are counted. User-level:
    the mean has the fixed denominator m (clients per round) and each aggregate is charged to
    the server's accountant before it is used; a round that would exceed ε is not aggregated.
    """

    def __init__(
        self,
        plan: RunPlan,
        initial: list[np.ndarray],
        run_dir: Path,
        record: Callable[[str, int, dict], None],
        start_round: int = 0,
        server_opt_state: dict | None = None,
        central_eval: Callable[[int, list[np.ndarray]], dict] | None = None,
        ledger: Path | None = None,
    ):
        fed, cohort, num_clients = plan.federation, plan.cohort, plan.num_clients
        # configure_fit/configure_evaluate are overridden (exact, reproducible sampling), so the
        # FedAvg fractions below are unused; the node map waits until every client connected.
        super().__init__(
            fraction_fit=0.0,
            min_fit_clients=cohort,
            fraction_evaluate=0.0,
            min_evaluate_clients=1,
            min_available_clients=num_clients,
            initial_parameters=ndarrays_to_parameters(initial),
            accept_failures=True,
        )
        self.plan, self.fed, self.seed = plan, fed, plan.config.seed
        self.num_clients, self.cohort = num_clients, cohort
        self.keys, self.current = list(plan.keys), [a.copy() for a in initial]
        self.run_dir, self.record, self.central_eval = Path(run_dir), record, central_eval
        self.run_id = records.run_id(self.run_dir)
        self.start_round, self.total_rounds = start_round, fed.rounds
        self.last_checkpoint = start_round
        self.optimizer = ServerOptimizer.for_federation(fed)
        if server_opt_state:
            self.optimizer.load_state_arrays(server_opt_state)
        self.node_to_client: dict[int, int] = {}
        self._fit_started: dict[int, float] = {}
        self.privacy = plan.privacy
        self.exhausted: set[int] = set()  # clients that declined for lack of budget
        self.stage_seconds: dict[str, float] = {}  # filled by the SecAgg+ workflow
        self.secagg_state, self.secagg_params = None, {}  # the SecAgg+ round in progress
        self.closed_round = start_round  # the last round recorded
        self.accountant = None
        self.max_update_norm = plan.update_bound
        if self.privacy.mode == "user":
            self.accountant = UserLevelAccountant(self.privacy, cohort, num_clients,
                                                  Path(ledger or self.run_dir / "ledger.jsonl"))

    # --- sampling --------------------------------------------------------------------------
    def _sample(self, client_manager, round_: int, size: int, stream: int) -> list:
        proxies = {p.node_id: p for p in client_manager.all().values()}
        ordered = sorted(proxies, key=lambda n: self.node_to_client.get(n, n))
        rng = np.random.default_rng([self.seed, round_, 0, stream])  # 0: the server's streams
        if self.privacy.mode == "user" and stream == 0:
            # user-level accounting takes credit for sampling: it must be secret, not a
            # function of the run's public seed
            rng = np.random.default_rng(secrets.randbits(128))
        chosen = rng.choice(len(ordered), size=min(size, len(ordered)), replace=False)
        return [proxies[ordered[i]] for i in sorted(chosen)]

    def _round(self, flower_round: int) -> int:
        return self.start_round + flower_round

    def is_eval_round(self, round_: int) -> bool:
        """Rounds after which the model is evaluated: every `eval_every`-th and the last."""
        return round_ % self.fed.eval_every == 0 or round_ == self.total_rounds

    # --- training --------------------------------------------------------------------------
    def configure_fit(self, server_round, parameters, client_manager):
        round_ = self._round(server_round)
        self._fit_started[round_] = time.perf_counter()
        config = {"server_round": round_, "seed": self.seed, "run": self.run_id,
                  "checkpoint_round": self.last_checkpoint}
        fit_ins = FitIns(parameters, config)
        return [(p, fit_ins) for p in self._sample(client_manager, round_, self.cohort, 0)]

    def aggregate_fit(self, server_round, results, failures):
        round_ = self._round(server_round)
        results = sorted(results, key=lambda r: self.node_to_client.get(r[0].node_id, 0))
        accepted, rejected, losses, declined = [], [], [], 0
        # SecAgg+ and the batched engine hand every result the same aggregate (one Parameters
        # object): decode and validate it once, and weigh it by the results' summed weights
        checked: dict[int, tuple[list[np.ndarray] | None, str | None]] = {}
        for proxy, fit_res in results:
            if fit_res.metrics.get("declined"):
                declined += 1
                self.exhausted.add(self.node_to_client.get(proxy.node_id, proxy.node_id))
                continue
            key = id(fit_res.parameters)
            if key not in checked:
                checked[key] = self._checked_arrays(fit_res.parameters)
            arrays, problem = checked[key]
            if problem is not None:
                rejected.append(problem)
                continue
            if fit_res.num_examples > 0:
                weight = 1 if self.privacy.enabled else fit_res.num_examples
                accepted.append((key, weight))
                losses.append(float(fit_res.metrics.get("loss", np.nan)))
        aggregated = (len(accepted) >= self.plan.min_contributions
                      and sum(n for _, n in accepted) > 0)
        budget_exhausted = False
        if aggregated and self.accountant is not None:
            budget_exhausted = self.accountant.would_exceed(len(accepted))
            aggregated = not budget_exhausted
        if aggregated:
            # user-level DP: fixed denominator m, so one user moves the sum by at most C
            total = self.cohort if self.accountant else sum(n for _, n in accepted)
            weights: dict[int, float] = {}
            for key, n in accepted:
                weights[key] = weights.get(key, 0) + n
            delta = [sum((checked[key][0][i] - c) * (n / total) for key, n in weights.items())
                     for i, c in enumerate(self.current)]
            if self.accountant is not None:
                self.accountant.charge(round_, len(accepted))  # before the aggregate is used
            stepped = self.optimizer.step(self.current, delta, round_)
            self.current = [w.astype(np.float32) for w in stepped]
        sampled, completed = len(results) + len(failures), len(results)
        if self.secagg_state is not None:  # Flower lists some failures twice under SecAgg+
            sampled = len(self.secagg_state.sampled_node_ids)
            completed = len({proxy.node_id for proxy, _ in results})
        record = {
            "sampled": sampled,
            "completed": completed,
            "failed": sampled - completed,
            "rejected": len(rejected),
            "rejections": rejected[:5],
            "aggregated": aggregated,
            "train_loss": float(np.mean(finite)) if (finite := [x for x in losses if x == x])
            else float("nan"),
            "fit_seconds": round(time.perf_counter() - self._fit_started.pop(round_, 0.0), 3),
        }
        if self.privacy.mode == "record":
            record.update(declined=declined, clients_exhausted=len(self.exhausted))
        if self.accountant is not None:
            record.update(epsilon=self.accountant.epsilon, budget_exhausted=budget_exhausted,
                          noise_shortfall=1.0 - len(accepted) / self.cohort)
        self._close_round(round_, record)
        return (ndarrays_to_parameters(self.current) if aggregated else None), {}

    def _checked_arrays(self, parameters) -> tuple[list[np.ndarray] | None, str | None]:
        """(the update's arrays, None), or (None, why it is rejected)."""
        arrays = parameters_to_ndarrays(parameters)
        if self.fed.secagg:  # the unmasked weighted mean (float64), the same in every result
            arrays = [a.astype(np.float32) for a in arrays]
        try:
            validate_update(arrays, self.current, self.max_update_norm)
        except UpdateRejected as exc:
            return None, str(exc)
        return arrays, None

    def round_halted(self, flower_round: int, stage: str, sampled: int, failed: int,
                     error: str | None = None) -> None:
        """Secure aggregation gave up on this round (too many clients lost): nothing was
        aggregated or released; record it as such and let the run go on."""
        round_ = self._round(flower_round)
        self._close_round(round_, {
            "sampled": sampled, "completed": sampled - failed, "failed": failed, "rejected": 0,
            "rejections": [error] if error else [], "aggregated": False, "halted": stage,
            "train_loss": float("nan"),
            "fit_seconds": round(time.perf_counter() - self._fit_started.pop(round_, 0.0), 3),
        })

    @property
    def update_bound(self) -> float:
        """The largest update norm the server accepts (clients clip to it under SecAgg+)."""
        return self.max_update_norm

    def _close_round(self, round_: int, record: dict) -> None:
        if self.secagg_params:  # SecAgg+: its parameters, and where the round's time went
            record["secagg"] = self.secagg_params  # (the unmask stage is still running here)
            record["secagg_seconds"] = self.stage_seconds
            self.stage_seconds, self.secagg_params, self.secagg_state = {}, {}, None
        self.closed_round = round_
        self.record("fit", round_, record)  # first: a checkpoint's round always has its line
        if self.privacy.enabled or self._kept(round_):
            # under DP every round: a resume then redoes only the round in flight, which
            # devices replay from the same checkpoint instead of releasing anything new
            directory = self.run_dir / "checkpoints"
            checkpoint.save(directory, round_, dict(zip(self.keys, self.current)),
                            self.optimizer.state_arrays())
            self.last_checkpoint = round_
            checkpoint.prune(directory, self._kept)

    def _kept(self, round_: int) -> bool:
        """Rounds whose checkpoint stays: every `checkpoint_every`-th, the last, and every
        evaluated one (the round chosen by validation is served from its file)."""
        return (round_ % self.fed.checkpoint_every == 0 or round_ == self.total_rounds
                or self.is_eval_round(round_))

    # --- evaluation ------------------------------------------------------------------------
    def evaluate(self, server_round, parameters):
        """Central evaluation (simulation only). Flower calls it once before the first round:
        that evaluates the initial model, or after a resume the checkpoint's round if it is an
        evaluation round (its metrics line is rewritten), and is recorded as 'initial_eval'."""
        round_ = self._round(server_round)
        if self.central_eval is None:
            return None
        first = server_round == 0
        if not (self.is_eval_round(round_) or round_ == 0):
            return None
        started = time.perf_counter()
        metrics = self.central_eval(round_, parameters_to_ndarrays(parameters))
        metrics["eval_seconds"] = round(time.perf_counter() - started, 3)
        self.record("initial_eval" if first else "central_eval", round_, metrics)
        return 1.0 - metrics["ndcg@10"], metrics

    def configure_evaluate(self, server_round, parameters, client_manager):
        round_ = self._round(server_round)
        if not self.is_eval_round(round_):
            return []
        size = self.fed.eval_clients or self.num_clients
        if round_ == self.total_rounds:  # the final evaluation asks every client, up to
            # eval_users (a 100k-user run would ask 100k devices, one message at a time)
            size = max(size, self.fed.eval_users or self.num_clients)
        ins = EvaluateIns(parameters, {"server_round": round_})
        return [(p, ins) for p in self._sample(client_manager, round_, size, 1)]

    def aggregate_evaluate(self, server_round, results, failures):
        round_ = self._round(server_round)
        rows = [r.metrics for _, r in results if r.num_examples > 0]
        names = ("hr@10", "ndcg@10", "recall@20", "mrr@10")
        metrics = {k: float(np.mean([m[k] for m in rows])) if rows else float("nan") for k in names}
        metrics.update(users=len(rows), failed=len(failures))
        self.record("federated_eval", round_, metrics)
        return 1.0 - metrics["ndcg@10"], metrics
