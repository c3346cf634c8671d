"""The batched engine: a round's sampled virtual clients computed as one batched step.

With the `sgd` recipe and one local step, the server's weighted mean of the clients' updates
is θ − η·Σ w_b·∇L_b / Σ w_b: one backward pass over the cohort's windows
(`fedrec.client.local.sgd_update`, the function every device runs for itself). The batched
engine runs exactly that in this process, then hands the strategy what Flower's SecAgg+
workflow hands it: one `FitRes` per client carrying the aggregate, the client's own bucketed
count and loss. So Flower's `DefaultWorkflow`, the `FedRecStrategy` (sampling, weighting,
validation of the aggregate, server optimizer, checkpoints, records) and the run directory are
those of every other engine; only the transport of training messages is skipped. Everything
else (federated evaluation, discovery) goes through the real `ClientApp` and its mods on an
`InProcessGrid`.

It applies to runs with one local SGD step. Two DP mechanisms keep that shape:
- distributed record-level DP (`_fit_distributed`): each virtual device charges its own
  account, and the engine computes the sum SecAgg+ would reveal, the devices' clipped
  per-record gradient sums plus their noise shares, in one batched pass;
- user-level DP (`_fit_each`): each device's own update, from one catalog pass for the
  cohort (`sgd_update(per_client=True)`), then each device's own release (clip to C, noise
  share: `FedRecClient.release_plain`), without Flower's ~25 ms per message; under SecAgg+
  every reply carries the devices' mean, as SecAgg+ reveals it.
Local record-level DP (Opacus on each device), secure aggregation without DP, the
per-message egress guard and several local steps need one training message per client:
those runs use the Ray engine (`engine = "auto"` chooses). Same seed, same round: the same
aggregate as the clients computing one by one (a test checks it).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key

from fedrec.client import local
from fedrec.client import personal as personal_state
from fedrec.client.app import InjectedFailure, injected_failure, reply_metrics
from fedrec.common import wire
from fedrec.common.plan import RunPlan
from fedrec.simulation.devices import DataSpec, VirtualDevice, catalog_embeddings, store_path

OK = Status(Code.OK, "Success")


def open_store_limit() -> int:
    """How many device stores a batched run keeps open between rounds: at most 1,024 and an
    eighth of the process's file-descriptor limit (an SQLite store in WAL mode holds three)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 64
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1024 if soft == resource.RLIM_INFINITY else max(0, min(1024, soft // 8))


class BatchedDevices:
    """The simulation's virtual devices, trained a cohort at a time: each device's data
    partition and store, as `FedRecClient` reads and writes them. The stores of the devices
    used last stay open between rounds (`open_store_limit`, least recently used closed
    first): opening one costs ≈ 6 ms, which a cohort of every device would pay per round."""

    def __init__(self, plan: RunPlan, run_dir: Path):
        self.plan, self.run_dir, self.spec = plan, Path(run_dir), DataSpec.of(plan)
        self._open: OrderedDict[int, VirtualDevice] = OrderedDict()
        self._limit = open_store_limit()

    def device(self, user: int) -> VirtualDevice:
        """Virtual device `user`, its store kept open while it is among the last used."""
        device = self._open.pop(user, None) or VirtualDevice(
            self.spec, user, store_path(self.run_dir, user))
        self._open[user] = device
        while len(self._open) > self._limit:
            self._open.popitem(last=False)[1].close()
        return device

    def fit(self, users: list[int], shared, config) -> tuple[list, list]:
        """Train `users` (client indices) from the arrays `shared` with the round's `config`
        (server_round, seed, checkpoint_round). Returns (per client a FitRes or None for a
        failed one, per client the failure or None)."""
        plan, fed, schema = self.plan, self.plan.federation, self.plan.schema
        round_, seed = int(config["server_round"]), int(config["seed"])
        keep_from = int(config["checkpoint_round"])
        failed = [injected_failure(fed, seed, round_, u) for u in users]
        devices = [self.device(u) for u, f in zip(users, failed) if not f]
        errors = [InjectedFailure(f"injected failure in round {round_}") if f else None
                  for f in failed]
        if not devices:
            return [None] * len(users), errors
        if plan.privacy.noise == "distributed":
            return self._fit_distributed(devices, users, shared, config), errors
        if plan.privacy.enabled:
            return self._fit_each(devices, users, shared, config), errors
        partitions = [d.user_data() for d in devices]
        weights = [wire.bucket_count(max(0, len(p.train_items) - 1), schema.max_count)
                   for p in partitions]
        update = local.sgd_update(
            plan.model, fed, catalog_embeddings(self.spec), shared,
            [personal_state.starting_point(d, round_, fed) for d in devices],
            partitions, weights,
            [local.training_seed(seed, round_, d.partition) for d in devices],
            local.round_seed(seed, round_))
        parameters = ndarrays_to_parameters(update.shared)
        replies = {}
        for d, state, n, loss in zip(devices, update.personal, update.num_examples,
                                     update.losses):
            if personal_state.kept(fed):
                d.store.personal.save(round_, state, keep_from=keep_from)
            replies[d.partition] = FitRes(OK, parameters, wire.bucket_count(n, schema.max_count),
                                          reply_metrics(loss, schema))
        return [replies.get(u) for u in users], errors

    def _fit_distributed(self, devices: list[VirtualDevice], users: list[int], shared,
                         config) -> list:
        """Distributed record-level DP: each device charges its own account
        (`FedRecClient.distributed_charge`), then the engine computes what SecAgg+ would
        reveal — the mean of the devices' clipped sums and noise shares
        (`fedrec.client.dp.distributed_update`, the function each device runs for itself)."""
        from fedrec.client import dp
        from fedrec.client.app import FedRecClient

        plan, round_ = self.plan, int(config["server_round"])
        keep_from, run = int(config["checkpoint_round"]), str(config.get("run", ""))
        partitions = [d.user_data() for d in devices]
        charges = [FedRecClient(plan, d).distributed_charge(shared, round_, keep_from, run, u)
                   for d, u in zip(devices, partitions)]
        arrays = dp.distributed_update(
            plan.model, plan.privacy, catalog_embeddings(self.spec), shared,
            partitions, [seed for seed, _ in charges],
            local.round_seed(int(config["seed"]), round_), [train for _, train in charges])
        parameters = ndarrays_to_parameters([a.astype(np.float32) for a in arrays])
        replies = {d.partition: FitRes(OK, parameters, 1, {}) for d in devices}
        return [replies.get(u) for u in users]

    def _fit_each(self, devices: list[VirtualDevice], users: list[int], shared,
                  config) -> list:
        """User-level DP: each device's own update (`sgd_update(per_client=True)`: what it
        computes alone, from one catalog pass for the cohort), then each device's own release
        (`FedRecClient.release_plain` and `reply`: clipped to C, its noise share, its bound
        under SecAgg+), without the message transport. Under SecAgg+ every reply carries what
        SecAgg+ reveals: the weighted mean of the devices' updates."""
        from fedrec.client.app import FedRecClient

        plan, fed = self.plan, self.plan.federation
        round_, seed = int(config["server_round"]), int(config["seed"])
        keep_from = int(config["checkpoint_round"])
        update = local.sgd_update(
            plan.model, fed, catalog_embeddings(self.spec), shared,
            [personal_state.starting_point(d, round_, fed) for d in devices],
            [d.user_data() for d in devices], [1.0] * len(devices),
            [local.training_seed(seed, round_, d.partition) for d in devices],
            local.round_seed(seed, round_), per_client=True)
        fits = {}
        for d, head, state, n, loss in zip(devices, update.clients, update.personal,
                                           update.num_examples, update.losses):
            client = FedRecClient(plan, d)
            client.device.received_head(round_, shared, plan)
            fits[d.partition] = client.reply(shared, *client.release_plain(
                shared, round_, keep_from, head, state, n, loss))
        if fed.secagg and fits:
            weights = [weight for _, weight, _ in fits.values()]
            mean = ndarrays_to_parameters(
                [np.average([arrays[i] for arrays, _, _ in fits.values()], axis=0,
                            weights=weights) for i in range(len(shared))])
            replies = {p: FitRes(OK, mean, weight, {}) for p, (_, weight, _) in fits.items()}
        else:
            replies = {p: FitRes(OK, ndarrays_to_parameters(arrays), weight, metrics)
                       for p, (arrays, weight, metrics) in fits.items()}
        return [replies.get(u) for u in users]


class BatchedFitWorkflow:
    """A `fit_workflow` for Flower's `DefaultWorkflow` (as `SecAggPlusWorkflow` is one): the
    strategy samples and configures the round, `BatchedDevices` trains the cohort, and the
    strategy aggregates the results."""

    def __init__(self, strategy, devices: BatchedDevices):
        self.strategy, self.devices = strategy, devices

    def __call__(self, grid, context) -> None:
        round_ = int(context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        parameters = compat.arrayrecord_to_parameters(
            context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        instructions = self.strategy.configure_fit(round_, parameters, context.client_manager)
        if not instructions:
            return
        fit_ins = instructions[0][1]  # the same instructions for every sampled client
        proxies = [proxy for proxy, _ in instructions]
        users = [self.strategy.node_to_client[p.node_id] for p in proxies]
        replies, errors = self.devices.fit(users, parameters_to_ndarrays(fit_ins.parameters),
                                           fit_ins.config)
        results = [(p, r) for p, r in zip(proxies, replies) if r is not None]
        failures = [e for e in errors if e is not None]
        aggregated, metrics = self.strategy.aggregate_fit(round_, results, failures)
        if aggregated is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=round_, metrics=metrics)
