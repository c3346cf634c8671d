"""The Flower `ClientApp`: a thin adapter from messages to `fedrec.client.local` and
`fedrec.client.dp`.

Replies are FitRes-shaped (`NumPyClient`), which is what `secaggplus_mod` needs. Without DP a
reply carries the shared arrays, the number of training positions bucketed to a power of two,
and the local loss (not under SecAgg+, where it would be the one plaintext number about the
data). Under DP it carries only the privatized arrays with a weight of 1 (the count and the
loss are functions of the raw data), or — a client whose budget is spent — the received
arrays unchanged with weight 0 and `declined = 1`. What may leave is fixed by the run's
`WireSchema` and enforced by the egress guard. The personal vector stays in the device's
`PersonalStore`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from fedrec.client import data, dp, local
from fedrec.client import personal as personal_state
from fedrec.client.budget import PrivacyAccount, digest
from fedrec.client.identity import pseudonym
from fedrec.client.store import PersonalStore
from fedrec.common import privacy, wire
from fedrec.common.config import FederationConfig
from fedrec.common.model import ModelConfig
from fedrec.common.train import TrainConfig


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs, fixed for the run (small: pickled with every message)."""

    model: ModelConfig
    train: TrainConfig
    federation: FederationConfig
    data: data.DataSpec
    store_root: str
    privacy: privacy.PrivacyConfig = field(default_factory=privacy.PrivacyConfig)
    cohort: int = 1  # m, clients per round (user-level DP: each adds 1/m of the noise variance)
    ledger_path: str = ""  # where this device appends its releases (record-level DP)
    update_bound: float = 0.0  # SecAgg+: clip the outgoing update to this norm (0: no clip)
    schema: wire.WireSchema = field(default_factory=lambda: wire.WireSchema(()))  # what may leave
    store_fsync: bool = True  # False for simulated devices (see `PersonalStore`)


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
    def __init__(self, settings: ClientSettings, user: int):
        self.settings, self.user = settings, user
        self.store = PersonalStore(Path(settings.store_root) / f"{user:06d}", settings.store_fsync)

    def get_properties(self, config):
        """Only the simulation's partition index, used to sample reproducibly."""
        return {"partition-id": self.user}

    def fit(self, parameters, config):
        s, round_ = self.settings, int(config["server_round"])
        seed = int(config["seed"])
        if injected_failure(s.federation, seed, round_, self.user):
            raise InjectedFailure(f"injected failure in round {round_}")
        keep_from = int(config["checkpoint_round"])
        if s.privacy.mode == "record":
            shared, weight, metrics = self._fit_record(parameters, round_, keep_from)
        else:
            shared, weight, metrics = self._fit_plain(parameters, round_, seed, keep_from)
        if s.federation.secagg:
            # the server cannot check single updates under SecAgg+: bound them here, so the
            # protocol's clipping range never truncates anything (post-processing under DP)
            if s.update_bound > 0:
                shared = dp.clip_update(shared, parameters, s.update_bound)
            # float64: Flower quantizes in the arrays' dtype, and float32 biases every client
            # the same way (measured 17x the quantization step)
            shared = [np.asarray(a, np.float64) for a in shared]
        return shared, wire.bucket_count(weight, s.schema.max_count), metrics

    def _fit_plain(self, parameters, round_: int, seed: int, keep_from: int):
        """Local training without DP, or user-level DP (clip + noise share) on top of it."""
        s, fed = self.settings, self.settings.federation
        embeddings, user_data = data.catalog_embeddings(s.data), data.user_partition(s.data, self.user)
        stored = personal_state.starting_point(self.store, round_, fed)
        local_seed = local.training_seed(seed, round_, self.user)
        if fed.local_optimizer == "sgd":
            update = local.sgd_update(s.model, fed, embeddings, parameters, [stored], [user_data],
                                      [1.0], [local_seed], local.round_seed(seed, round_))
            shared, personal = update.shared, update.personal[0]
            num_examples, loss = update.num_examples[0], update.losses[0]
        else:
            shared, personal, num_examples, loss = local.fit_local(
                s.model, s.train, embeddings, parameters, stored, user_data,
                epochs=fed.local_epochs, seed=local_seed,
                proximal_mu=fed.proximal_mu if fed.strategy == "fedprox" else 0.0)
        metrics = reply_metrics(loss, s.schema)
        if s.privacy.mode == "user":
            # every sampled client sends its share of the noise, also one with nothing to
            # train on (a zero update), so who had data is not visible in the noise
            shared, _ = dp.clip_and_noise(shared, parameters, s.privacy.max_grad_norm,
                                          privacy.noise_share_std(s.privacy, s.cohort),
                                          secrets.randbits(62))
            num_examples, metrics = 1, {}
        if personal_state.kept(fed):
            self.store.save(round_, personal, keep_from=keep_from)
        return shared, num_examples, metrics

    def _fit_record(self, parameters, round_: int, keep_from: int):
        """Record-level DP-SGD with this device's own accountant and budget (see
        `fedrec.client.budget` for the order of charge, training and ledger line)."""
        s, p = self.settings, self.settings.privacy
        user_data = data.user_partition(s.data, self.user)
        account = PrivacyAccount(self.store.root, p.delta, p.accountant)
        self._log_last_charge(account)  # a charge from a crashed attempt is logged first
        personal = self.store.load(before_round=round_)
        mechanism = dp.plan(user_data, s.train, p, s.federation.local_epochs)
        # a replay must see exactly the same inputs, else the same noise would cover new data
        inputs = digest([*parameters, user_data.train_items, *(personal or {}).values(),
                         np.array([mechanism.sample_rate, mechanism.steps, p.window,
                                   p.negatives, p.max_grad_norm])])
        charge = account.find(round_, inputs)
        if charge is None:
            if mechanism.records == 0:
                return parameters, 0, {}  # nothing to learn from: nothing released
            sigma = account.noise_multiplier or p.noise_multiplier or privacy.noise_for_epsilon(
                p.epsilon, p.delta, mechanism.sample_rate,
                p.planned_rounds * mechanism.steps, p.accountant)
            if account.would_spend(sigma, mechanism.sample_rate, mechanism.steps) > p.epsilon:
                return parameters, 0, {"declined": 1}
            charge = account.charge(round_, inputs, sigma, mechanism.sample_rate,
                                    mechanism.steps)
        shared, personal, history = dp.fit_private(
            s.model, s.train, p, data.catalog_embeddings(s.data), parameters, personal,
            user_data, s.federation.local_epochs, charge.noise_multiplier, charge.seed,
        )
        expected = [(charge.noise_multiplier, charge.sample_rate, charge.steps)]
        if privacy.merge(history) != expected:  # never release more than was charged
            raise RuntimeError(f"DP-SGD took {history}, but {expected} was charged")
        self._log_last_charge(account)
        self.store.save(round_, personal, keep_from=keep_from)
        return shared, 1, {}

    def _log_last_charge(self, account: PrivacyAccount) -> None:
        """Write the ledger line of the account's last charge, if not written yet."""
        if account.logged:
            return
        p, last = self.settings.privacy, account.last
        privacy.append_release(Path(self.settings.ledger_path), privacy.Release(
            "record", pseudonym(self.store.root), last["round"], last["noise_multiplier"],
            last["sample_rate"], last["steps"], p.max_grad_norm, p.delta, p.accountant,
            last["epsilon"]))
        account.mark_logged()

    def evaluate(self, parameters, config):
        s = self.settings
        stored = personal_state.starting_point(self.store, int(config["server_round"]) + 1,
                                               s.federation)
        result = local.evaluate_local(s.model, data.catalog_embeddings(s.data), parameters,
                                      stored, data.user_partition(s.data, self.user),
                                      s.federation.reconstruct_steps, s.federation.reconstruct_lr)
        if result is None:
            return 0.0, 0, {}
        return 1.0 - result["ndcg@10"], 1, result


def client_mods(secagg_required: bool, schema, egress_log: str | Path | None = None) -> list:
    """The client's mods, outermost first: the egress log (it records the message as it finally
    leaves, masked under SecAgg+; without a path, the node's `egress-log` config decides),
    SecAgg+ (it masks what the client returns), and the egress guard (it checks the plaintext
    reply against `schema`, a `WireSchema` or a function of the context; clipping and DP
    noise happen before, inside `fit`)."""
    from fedrec.client.egress_guard import egress_guard_mod
    from fedrec.client.egress_log import egress_log_mod

    return [egress_log_mod(egress_log), secure_aggregation_mod(required=secagg_required),
            egress_guard_mod(schema)]


class PlainUpdateRefused(PermissionError):
    """A client configured for secure aggregation was asked for an unmasked update."""


def secure_aggregation_mod(required: bool):
    """Flower's `secaggplus_mod` for training messages of the SecAgg+ protocol; plain training
    messages pass through, unless `required`: then the client refuses to send an update the
    server could read on its own."""
    from flwr.app.message_type import MessageType
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    def mod(msg, context, call_next):
        if msg.metadata.message_type == MessageType.TRAIN:
            if RECORD_KEY_CONFIGS in msg.content.config_records:
                return secaggplus_mod(msg, context, call_next)
            if required:
                raise PlainUpdateRefused("this client sends updates only under SecAgg+")
        return call_next(msg, context)

    return mod


def make_client_app(settings: ClientSettings, mods: list | None = None,
                    torch_threads: int | None = 1) -> ClientApp:
    """The ClientApp of a simulated device. `torch_threads`: what each client sets (1 for a
    Ray actor with one CPU; None in-process, where the simulation decides)."""

    def client_fn(context):
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        user = int(context.node_config["partition-id"])
        return FedRecClient(settings, user).to_client()

    return ClientApp(client_fn=client_fn, mods=mods or [])
