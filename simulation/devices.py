"""The simulation's virtual devices: each is one user of a data set, behind the same `Device`
interface a real device has (`fedrec.client.device`).

The process loads the data set once (cached per process) and hands each device only its own
user's record, through the same ingest scrubbing a device applies (`fedrec.client.scrub`); the
catalog's frozen embeddings are public and shared. A device's local state (personal vector,
privacy account, ledger, pseudonym) lives in its own `DeviceStore`,
`RUN/clients/NNNNNN.sqlite`, opened only when the device first needs it, so a run that keeps no
state on devices writes no files for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fedrec.client import scrub
from fedrec.client.local import UserData
from fedrec.common.anonymity import Levels
from fedrec.common.plan import RUN_DIR_KEY, RunPlan

CLIENTS_DIR = "clients"
IN_PROCESS_KEY = "in-process"  # node config of a device in the driver process


@dataclass(frozen=True)
class DataSpec:
    """Identifies the data set and split a simulated federation runs on."""

    dataset: str
    cold_fraction: float
    seed: int
    encoder: str
    levels: Levels = field(default_factory=Levels)  # profile generalization at ingest
    keep_fields: tuple[str, ...] = ()  # further profile fields a device keeps (scrubbed)

    @classmethod
    def of(cls, plan: RunPlan) -> DataSpec:
        cfg = plan.config
        return cls(cfg.dataset, cfg.cold_fraction, cfg.seed, cfg.encoder, plan.levels,
                   tuple(cfg.anonymization.keep_fields))


@lru_cache(maxsize=2)
def _load(spec: DataSpec):
    from fedrec.common.data.registry import load_dataset
    from fedrec.common.embeddings import encode_catalog
    from fedrec.common.split import leave_one_out

    dataset = load_dataset(spec.dataset)
    split = leave_one_out(dataset, spec.cold_fraction, spec.seed)
    embeddings = torch.as_tensor(encode_catalog(dataset.item_texts, spec.encoder, progress=False))
    return dataset, split, embeddings


def user_partition(spec: DataSpec, user: int) -> UserData:
    """This user's record as the device holds it: training sequence, held-out items and the
    generalized profile (no user id, name or contact)."""
    dataset, split, _ = _load(spec)
    raw = {"user": str(dataset.user_ids[user])}
    if dataset.profiles is not None:
        raw.update(dataset.profiles.iloc[user].to_dict())
    return scrub.ingest(raw, np.asarray(split.train_sequences[user]),
                        int(split.valid_items[user]), int(split.test_items[user]),
                        spec.levels, spec.keep_fields)


def catalog_embeddings(spec: DataSpec) -> torch.Tensor:
    """(n_items, d) frozen, public item embeddings."""
    return _load(spec)[2]


def num_users(spec: DataSpec) -> int:
    return _load(spec)[1].num_users


def store_path(run_dir: str | Path, user: int) -> Path:
    """Where virtual device `user` of the run in `run_dir` keeps its local state."""
    return Path(run_dir) / CLIENTS_DIR / f"{user:06d}.sqlite"


class VirtualDevice:
    """User `partition` of the plan's data set, as a device."""

    def __init__(self, spec: DataSpec, partition: int, store_path: Path):
        self.spec, self.partition, self._path = spec, partition, Path(store_path)
        self._store = None

    @property
    def store(self):
        if self._store is None:  # opened (and created) on first use only
            from fedrec.client.store import DeviceStore

            self._store = DeviceStore(self._path, fsync=False)  # see `DeviceStore`
        return self._store

    def close(self) -> None:
        """Close the store, if open (it reopens on next use)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def user_data(self) -> UserData:
        return user_partition(self.spec, self.partition)

    def catalog(self) -> torch.Tensor:
        return catalog_embeddings(self.spec)

    def received_head(self, round_, arrays, plan) -> None:
        """The server keeps every head of a simulation: devices need not cache one."""


def open_device(plan: RunPlan, context) -> VirtualDevice:
    """The virtual device of a simulation node (`partition-id` from Flower's node config;
    named by the run-config key `devices`). A Ray actor runs one client at a time on one CPU,
    so it trains with one torch thread; in-process devices (`InProcessGrid`) leave the
    simulation's setting alone."""
    if not context.node_config.get(IN_PROCESS_KEY) and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    user = int(context.node_config["partition-id"])
    return VirtualDevice(DataSpec.of(plan), user,
                         store_path(context.run_config[RUN_DIR_KEY], user))
