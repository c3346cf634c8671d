"""The one evaluation split: leave-one-out by time, plus a held-out cold-item set.

Protocol (docs/evaluation.md):
0. Repeated interactions follow the data set's rule (docs/data.md): an exact duplicate (same
   user, item and timestamp) is dropped, and so is every consumption of an item after the user's
   first one unless `dataset.reconsumption` is "keep". So without "keep" no user's validation or
   test item is one of its training items, and the two are different items.
1. A seeded `cold_fraction` of the items that have interactions become *cold*: every interaction
   with them is held out of training (they are scored from their text alone).
2. On the remaining (warm) interactions, each user's interactions are sorted by timestamp with a
   stable sort (equal timestamps keep the data file's order). The last one is the test item, the
   one before it the validation item, the rest is training. Users with fewer than 3 warm
   interactions keep them all for training and are not evaluated.
3. Cold evaluation: a user's last cold interaction is the cold target, ranked among the cold items
   (excluding the user's other cold items), given the user's training history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from fedrec.common.data.clean import repeated_rows
from fedrec.common.data.dataset import Dataset

NO_ITEM = -1


@dataclass(frozen=True, eq=False)
class Split:
    """Per-user chronological training sequences and held-out targets.

    `train_sequences[u]`: item indices, oldest first. `valid_items`, `test_items`, `cold_targets`:
    (n_users,) item index or NO_ITEM. `cold_items`: sorted item indices held out of training.
    `cold_other[u]`: the user's cold items other than the cold target (excluded when ranking it).
    """

    num_users: int
    num_items: int
    train_sequences: list[np.ndarray]
    valid_items: np.ndarray
    test_items: np.ndarray
    cold_items: np.ndarray
    cold_targets: np.ndarray
    cold_other: list[np.ndarray]

    def history(self, user: int, stage: str) -> np.ndarray:
        """Items the user interacted with before the `stage` target ('valid', 'test' or 'cold')."""
        seq = self.train_sequences[user]
        if stage == "test" and self.valid_items[user] != NO_ITEM:
            return np.append(seq, self.valid_items[user]).astype(np.int64)
        return seq

    def histories(self, users: np.ndarray, stage: str) -> list[np.ndarray]:
        return [self.history(int(u), stage) for u in users]

    def eval_users(self, stage: str) -> np.ndarray:
        """Users that have a target for `stage`."""
        return np.flatnonzero(self.targets(stage) != NO_ITEM)

    def targets(self, stage: str) -> np.ndarray:
        return {"valid": self.valid_items, "test": self.test_items, "cold": self.cold_targets}[stage]

    def train_matrix(self) -> sp.csr_matrix:
        """(n_users, n_items) binary CSR of training interactions."""
        rows = np.repeat(np.arange(self.num_users), [len(s) for s in self.train_sequences])
        cols = np.concatenate(self.train_sequences) if rows.size else np.zeros(0, np.int64)
        m = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(self.num_users, self.num_items)
        )
        m.data[:] = 1.0
        return m

    def item_popularity(self) -> np.ndarray:
        """(n_items,) number of training interactions per item. Training data only."""
        if not self.train_sequences:
            return np.zeros(self.num_items, np.int64)
        return np.bincount(np.concatenate(self.train_sequences), minlength=self.num_items)


def leave_one_out(dataset: Dataset, cold_fraction: float = 0.1, seed: int = 0) -> Split:
    """Split `dataset` by the protocol above. Deterministic in (`dataset`, `cold_fraction`, `seed`)."""
    if not 0.0 <= cold_fraction < 1.0:
        raise ValueError(f"cold_fraction must be in [0, 1), got {cold_fraction}")
    n_users, n_items = dataset.num_users, dataset.num_items
    users = np.asarray(dataset.users, np.int64)
    items = np.asarray(dataset.items, np.int64)
    timestamps = np.asarray(dataset.timestamps)
    exact, later = repeated_rows(users, items, timestamps)
    kept = np.flatnonzero(~exact if dataset.allows_reconsumption else ~(exact | later))
    # Stable chronological order per user: sort by (user, timestamp), ties keep file order.
    order = kept[np.lexsort((kept, timestamps[kept], users[kept]))]
    users, items = users[order], items[order]

    active = np.flatnonzero(np.bincount(items, minlength=n_items) > 0)
    rng = np.random.default_rng(seed)
    n_cold = int(round(cold_fraction * len(active)))
    cold_items = np.sort(rng.choice(active, size=n_cold, replace=False)) if n_cold else active[:0]
    is_cold = np.zeros(n_items, bool)
    is_cold[cold_items] = True

    bounds = np.searchsorted(users, np.arange(n_users + 1))
    train_sequences: list[np.ndarray] = []
    valid = np.full(n_users, NO_ITEM, np.int64)
    test = np.full(n_users, NO_ITEM, np.int64)
    cold_targets = np.full(n_users, NO_ITEM, np.int64)
    cold_other: list[np.ndarray] = []
    for u in range(n_users):
        seq = items[bounds[u] : bounds[u + 1]]
        cold_mask = is_cold[seq]
        warm, cold = seq[~cold_mask], seq[cold_mask]
        if len(warm) >= 3:
            train_sequences.append(warm[:-2])
            valid[u], test[u] = warm[-2], warm[-1]
        else:
            train_sequences.append(warm)
        if len(cold):
            cold_targets[u] = cold[-1]
            cold_other.append(np.setdiff1d(cold[:-1], cold[-1:]))
        else:
            cold_other.append(np.zeros(0, np.int64))
    return Split(n_users, n_items, train_sequences, valid, test, cold_items, cold_targets, cold_other)
