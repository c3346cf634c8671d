"""The Flower `ClientApp` of every fedrec device: `client_app`, a thin adapter from messages to
`fedrec.client.local` and `fedrec.client.dp`. A simulation, `flwr run` and a deployment run
this same app; it reads the run's plan (`fedrec.common.plan`) from `context.run_config` and
opens the device it runs on (`fedrec.client.device`): a real device's SQLite store, or a
simulation's virtual device.

Replies are FitRes-shaped (`NumPyClient`), which is what `secaggplus_mod` needs. Without DP a
reply carries the shared arrays, the number of training positions bucketed to a power of two,
and the local loss (not under SecAgg+, where it would be the one plaintext number about the
data). Under DP it carries only the privatized arrays with a weight of 1 (the count and the
loss are functions of the raw data), or — a client whose budget is spent — the received
arrays unchanged with weight 0 and `declined = 1`. What may leave is fixed by the plan's
`WireSchema` and enforced by the egress guard. The personal vector, the privacy account and
the device's ledger stay in its store.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict

import numpy as np
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from fedrec.client.budget import AlreadyCharged, Charge, OverBudget, PrivacyAccount, digest
from fedrec.client.device import Device, open_device
from fedrec.common import privacy, wire
from fedrec.common.config import FederationConfig
from fedrec.common.plan import RunPlan


class InjectedFailure(RuntimeError):
    """Raised by clients chosen by --fail-rate, to exercise the failure path."""


def injected_failure(fed: FederationConfig, seed: int, round_: int, user: int) -> bool:
    """Whether `--fail-rate` makes this client fail in this round (seeded, engine-independent)."""
    return fed.fail_rate > 0 and (
        np.random.default_rng([seed, round_, 1, user, 0]).random() < fed.fail_rate)


def reply_metrics(loss: float, schema: wire.WireSchema) -> dict:
    """The metrics of a plain training reply: the local loss, where the run's schema allows it."""
    return {"loss": loss} if schema.send_loss else {}


class FedRecClient(NumPyClient):
    """One device's side of the federation, for the run `plan`.

    The training modules (torch, Opacus) are imported where a method trains or evaluates: a
    deployed device starts a fresh process for every message, and three of a SecAgg+ round's
    four messages (key exchange, unmasking) never reach this class — importing torch for
    them tripled each one's start-up (measured 1.7 s vs 5.0 s of CPU)."""

    def __init__(self, plan: RunPlan, device: Device):
        self.plan, self.device = plan, device

    def get_properties(self, config):
        """A virtual device's partition index (the simulation samples reproducibly by it); a
        real device reports nothing."""
        partition = self.device.partition
        return {} if partition is None else {"partition-id": partition}

    def _seed(self, seed: int, round_: int) -> int:
        """The local training seed: reproducible for a virtual device, secret on a real one."""
        from fedrec.client import local

        if self.device.partition is None:
            return secrets.randbits(62)
        return local.training_seed(seed, round_, self.device.partition)

    def fit(self, parameters, config):
        plan, round_ = self.plan, int(config["server_round"])
        seed = int(config["seed"])
        partition = self.device.partition
        if partition is not None and injected_failure(plan.federation, seed, round_, partition):
            raise InjectedFailure(f"injected failure in round {round_}")
        self.device.received_head(round_, parameters, plan)
        keep_from = int(config["checkpoint_round"])
        if plan.privacy.mode == "record":
            shared, weight, metrics = self._fit_record(parameters, round_, keep_from,
                                                       str(config.get("run", "")))
        else:
            shared, weight, metrics = self._fit_plain(parameters, round_, seed, keep_from)
        return self.reply(parameters, shared, weight, metrics)

    def reply(self, parameters, shared, weight, metrics):
        """The fit reply that leaves the device for the local result (`shared`, `weight`,
        `metrics`) trained from `parameters`: under SecAgg+ bounded and in float64; the
        weight bucketed."""
        from fedrec.client import dp

        plan = self.plan
        if plan.federation.secagg:
            # the server cannot check single updates under SecAgg+: bound them here, so the
            # protocol's clipping range never truncates anything (post-processing under DP)
            if np.isfinite(plan.update_bound):
                shared = dp.clip_update(shared, parameters, plan.update_bound)
            # float64: Flower quantizes in the arrays' dtype, and float32 biases every client
            # the same way (measured 17x the quantization step)
            shared = [np.asarray(a, np.float64) for a in shared]
        return shared, wire.bucket_count(weight, plan.schema.max_count), metrics

    def _fit_plain(self, parameters, round_: int, seed: int, keep_from: int):
        """Local training without DP, or user-level DP (clip + noise share) on top of it."""
        from fedrec.client import local
        from fedrec.client import personal as personal_state

        plan, fed, device = self.plan, self.plan.federation, self.device
        embeddings, user_data = device.catalog(), device.user_data()
        stored = personal_state.starting_point(device, round_, fed)
        local_seed = self._seed(seed, round_)
        if fed.local_optimizer == "sgd":
            update = local.sgd_update(plan.model, fed, embeddings, parameters, [stored],
                                      [user_data], [1.0], [local_seed],
                                      local.round_seed(seed, round_))
            shared, personal = update.shared, update.personal[0]
            num_examples, loss = update.num_examples[0], update.losses[0]
        else:
            shared, personal, num_examples, loss = local.fit_local(
                plan.model, plan.config.train, embeddings, parameters, stored, user_data,
                epochs=fed.local_epochs, seed=local_seed,
                proximal_mu=fed.proximal_mu if fed.strategy == "fedprox" else 0.0)
        return self.release_plain(parameters, round_, keep_from, shared, personal,
                                  num_examples, loss)

    def release_plain(self, parameters, round_: int, keep_from: int, shared, personal,
                      num_examples: int, loss: float):
        """After local training without record-level DP (new head `shared`, new personal
        state, training positions, mean loss): under user-level DP the update's released part
        (`privacy.trained`) clipped to C plus this device's noise share; the personal state
        saved on the device. Returns (arrays, weight, metrics) for `reply`."""
        from fedrec.client import dp
        from fedrec.client import personal as personal_state

        plan, fed = self.plan, self.plan.federation
        metrics = reply_metrics(loss, plan.schema)
        if plan.privacy.mode == "user":
            # every sampled client sends its share of the noise, also one with nothing to
            # train on (a zero update), so who had data is not visible in the noise
            subspace = dp.user_subspace(plan.privacy, list(plan.keys), self.device.catalog())
            shared, _ = dp.clip_and_noise(shared, parameters, plan.privacy.max_grad_norm,
                                          privacy.noise_share_std(plan.privacy, plan.cohort),
                                          secrets.randbits(62), plan.privacy.secure_rng,
                                          subspace)
            num_examples, metrics = 1, {}
        if personal_state.kept(fed):
            self.device.store.personal.save(round_, personal, keep_from=keep_from)
        return shared, num_examples, metrics

    def _fit_record(self, parameters, round_: int, keep_from: int, run: str):
        """Record-level DP-SGD with this device's own accountant and budget (see
        `fedrec.client.budget` for the order of charge, ledger line and training). `run`: the
        server's name for this federation run, so a resumed run's redone rounds replay."""
        from fedrec.client import dp

        plan, p, store = self.plan, self.plan.privacy, self.device.store
        user_data = self.device.user_data()
        if p.noise == "distributed":
            seed, train = self.distributed_charge(parameters, round_, keep_from, run, user_data)
            return dp.distributed_update(
                plan.model, p, self.device.catalog(), parameters, [user_data], [seed],
                self._round_seed(round_), [train]), 1, {}
        personal = store.personal.load(before_round=round_)
        mechanism = dp.plan(user_data, plan.config.train, p, plan.federation.local_epochs)
        # a replay must see exactly the same inputs, else the same noise would cover new data
        catalog = self.device.catalog()
        inputs = digest([*parameters, user_data.train_items, *(personal or {}).values(),
                         np.asarray(catalog), np.array([mechanism.sample_rate, mechanism.steps,
                                                        p.window, p.negatives, p.max_grad_norm])])
        charge, metrics = self._charge(round_, inputs, run, keep_from, mechanism.sample_rate,
                                       mechanism.steps, mechanism.records)
        if charge is None:
            return parameters, 0, metrics
        shared, personal, history = dp.fit_private(
            plan.model, plan.config.train, p, catalog, parameters, personal,
            user_data, plan.federation.local_epochs, charge.noise_multiplier, charge.seed,
        )
        expected = [(charge.noise_multiplier, charge.sample_rate, charge.steps)]
        if privacy.merge(history) != expected:  # never release more than was charged
            raise RuntimeError(f"DP-SGD took {history}, but {expected} was charged")
        store.personal.save(round_, personal, keep_from=keep_from)
        return shared, 1, {}

    def distributed_charge(self, parameters, round_: int, keep_from: int, run: str,
                           user_data) -> tuple[int, bool]:
        """Distributed noise: charge this device one participation (σ of the plan, its
        records' Poisson rate q, one step) and return (the secret seed of its records'
        sampling, dropout and noise share, whether it trains). A device with no budget left,
        or nothing to train on, still sends its noise share (a fresh secret seed, no
        records): the sum must hold every share the plan counts on, and a missing share
        would tell the server who is out of budget. `user_data`: the device's
        (`Device.user_data()`)."""
        from fedrec.common.train import disjoint_windows

        p = self.plan.privacy
        records = len(disjoint_windows(user_data.train_items, p.window))
        inputs = digest([*parameters, user_data.train_items, np.asarray(self.device.catalog()),
                         np.array([p.noise_multiplier, p.sample_rate, p.window, p.max_grad_norm,
                                   p.rank, p.max_records, p.shares]),
                         np.frombuffer(p.released.encode(), np.uint8)])
        charge, _ = self._charge(round_, inputs, run, keep_from, p.sample_rate, 1, records)
        if charge is None:
            return secrets.randbits(62), False
        return charge.seed, True

    def _round_seed(self, round_: int) -> int:
        from fedrec.client import local

        return local.round_seed(self.plan.config.seed, round_)

    def _charge(self, round_: int, inputs: str, run: str, keep_from: int, sample_rate: float,
                steps: int, records: int):
        """(the charge of this round's release, {}) — a replay of an earlier charge of the
        same inputs, or a new one — or (None, the reply's metrics) when the device releases
        nothing: no records, this round released before from other inputs (a server that
        redid it differently: a second release would spend the budget twice for one round),
        or not enough budget left."""
        p, store = self.plan.privacy, self.device.store
        account = PrivacyAccount(store, p.delta, p.accountant, budget=p.epsilon)
        self._log_last_charge(account)  # a charge of an older fedrec, logged after training
        charge = account.find(round_, inputs, run)
        if charge is not None:
            return charge, {}
        if records == 0:
            return None, {}  # nothing to learn from: nothing released
        if account.released(round_, run):
            return None, {"declined": 1}
        if p.noise == "distributed":  # the plan's σ: the shares add up to σC only if all use it
            sigma = p.noise_multiplier
        else:
            sigma = account.noise_multiplier or p.noise_multiplier or privacy.noise_for_epsilon(
                p.epsilon, p.delta, sample_rate, p.planned_rounds * steps, p.accountant)
        if account.would_spend(sigma, sample_rate, steps) > account.budget:
            return None, {"declined": 1}
        store.pseudonym()  # named before the charge's transaction, which writes its line
        try:
            return account.charge(round_, inputs, sigma, sample_rate, steps, run,
                                  self._ledger_line, keep_from), {}
        except (AlreadyCharged, OverBudget):  # another process charged meanwhile
            return None, {"declined": 1}

    def _ledger_line(self, charge) -> dict:
        """The device's ledger line of `charge` (`fedrec.common.privacy.Release`)."""
        p = self.plan.privacy
        return asdict(privacy.Release(
            "record", self.device.store.pseudonym(), charge.round, charge.noise_multiplier,
            charge.sample_rate, charge.steps, p.max_grad_norm, p.delta, p.accountant,
            charge.epsilon))

    def _log_last_charge(self, account: PrivacyAccount) -> None:
        """Write the ledger line of a charge made without one (a store written by a fedrec
        that logged after training, and crashed in between)."""
        if account.logged:
            return
        last = account.last
        self.device.store.append_release(self._ledger_line(
            Charge(last["round"], last["noise_multiplier"], last["sample_rate"], last["steps"],
                   last["epsilon"], 0, replay=True)))
        account.mark_logged()

    def evaluate(self, parameters, config):
        from fedrec.client import local
        from fedrec.client import personal as personal_state

        plan, device = self.plan, self.device
        round_ = int(config["server_round"])
        device.received_head(round_, parameters, plan)
        stored = personal_state.starting_point(device, round_ + 1, plan.federation)
        result = local.evaluate_local(plan.model, device.catalog(), parameters, stored,
                                      device.user_data(), plan.federation.reconstruct_steps,
                                      plan.federation.reconstruct_lr)
        if result is None:
            return 0.0, 0, {}
        return 1.0 - result["ndcg@10"], 1, result


def client_mods(secagg_required, schema) -> list:
    """The client's mods, outermost first: the egress log (it records the message as it finally
    leaves, masked under SecAgg+; the node's or the run's `egress-log` value names the file),
    SecAgg+ (it masks what the client returns; `secagg_required`, a bool or a function of the
    context), and the egress guard (it checks the plaintext reply against `schema`, a
    `WireSchema` or a function of the context; clipping and DP noise happen before, inside
    `fit`)."""
    from fedrec.client.egress_guard import egress_guard_mod
    from fedrec.client.egress_log import egress_log_mod

    return [egress_log_mod(), secure_aggregation_mod(required=secagg_required),
            egress_guard_mod(schema)]


class PlainUpdateRefused(PermissionError):
    """A client configured for secure aggregation was asked for an unmasked update."""


def secure_aggregation_mod(required):
    """Flower's `secaggplus_mod` for training messages of the SecAgg+ protocol; plain training
    messages pass through, unless `required` (a bool, or a function of the context): then the
    client refuses to send an update the server could read on its own."""
    from flwr.app.message_type import MessageType
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    def mod(msg, context, call_next):
        if msg.metadata.message_type == MessageType.TRAIN:
            if RECORD_KEY_CONFIGS in msg.content.config_records:
                return secaggplus_mod(msg, context, call_next)
            if required(context) if callable(required) else required:
                raise PlainUpdateRefused("this client sends updates only under SecAgg+")
        return call_next(msg, context)

    return mod


def _plan(context) -> RunPlan:
    return RunPlan.from_run_config(context.run_config)


def _client_fn(context):
    plan = _plan(context)
    return FedRecClient(plan, open_device(plan, context)).to_client()


def _secagg_required(context) -> bool:
    return _plan(context).federation.secagg


def _schema(context) -> wire.WireSchema:
    return _plan(context).schema


# masked when the plan runs SecAgg+ (a client then refuses to send a plain update); the egress
# log is on for a node started with --node-config "egress-log='PATH'" (or the run's key)
client_app = ClientApp(client_fn=_client_fn, mods=client_mods(_secagg_required, _schema))
