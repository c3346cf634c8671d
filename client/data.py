"""Where a client's data comes from. In a simulation every virtual client is one user of a
data set: the process loads the data set once (cached per process) and hands each client only
its own user's record, through the same ingest scrubbing a device applies
(`fedrec.client.scrub`); the catalog's frozen embeddings are public and shared."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from fedrec.client import scrub
from fedrec.client.local import UserData
from fedrec.common.anonymity import Levels


@dataclass(frozen=True)
class DataSpec:
    """Identifies the data set and split a simulated federation runs on."""

    dataset: str
    cold_fraction: float
    seed: int
    encoder: str
    levels: Levels = field(default_factory=Levels)  # profile generalization at ingest
    keep_fields: tuple[str, ...] = ()  # further profile fields a device keeps (scrubbed)


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
