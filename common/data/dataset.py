"""The in-memory data set every part of fedrec shares.

Interactions are parallel arrays in the order of the source file (the evaluation protocol's
stable sort relies on that order for equal timestamps). Users and items are dense indices into
`user_ids` / `item_ids`, the external ids as the source spells them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedrec.common.data.clean import Cleaning, check_reconsumption
from fedrec.common.text import printable

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, eq=False)
class Dataset:
    """A catalog (public) plus interactions and user profiles (private).

    Shapes: `item_ids`, `item_texts`, `item_titles`: (n_items,); `user_ids`: (n_users,);
    `users`, `items`, `timestamps` (int64 seconds) and `ratings` (float32, or None): (n_interactions,).
    `profiles`: one row per user index (row i describes `user_ids[i]`), or None.
    `reconsumption`: the data set's rule for a user-item pair consumed more than once: "first"
    (only the first consumption counts; the split drops the others) or "keep" (re-consumptions
    are interactions, and may be held-out targets). `cleaning`: what loading dropped or cut.
    """

    name: str
    item_ids: np.ndarray
    item_texts: list[str]
    user_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    ratings: np.ndarray | None = None
    profiles: pd.DataFrame | None = None
    item_titles: list[str] = field(default_factory=list)
    reconsumption: str = "first"
    cleaning: Cleaning = field(default_factory=Cleaning)

    def __post_init__(self) -> None:
        n = len(self.users)
        if not (len(self.items) == len(self.timestamps) == n):
            raise ValueError("users, items and timestamps must have equal length")
        if self.ratings is not None and len(self.ratings) != n:
            raise ValueError("ratings must have one value per interaction")
        if len(self.item_texts) != len(self.item_ids):
            raise ValueError("item_texts must have one text per item")
        if not self.item_titles:
            object.__setattr__(self, "item_titles", list(self.item_texts))
        if self.profiles is not None and len(self.profiles) != len(self.user_ids):
            raise ValueError("profiles must have one row per user")
        check_reconsumption(self.reconsumption)

    @property
    def allows_reconsumption(self) -> bool:
        """Whether a user's held-out item may be one of its training items (a re-consumption)."""
        return self.reconsumption == "keep"

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return len(self.users)

    def user_index(self, user_id: str) -> int:
        """Dense index of the external user id `user_id` (as a string)."""
        hits = np.flatnonzero(self.user_ids.astype(str) == str(user_id))
        if len(hits) == 0:
            from fedrec.common.errors import FedrecError

            raise FedrecError(
                f"user '{printable(user_id)}' is not in data set '{printable(self.name)}'"
            )
        return int(hits[0])

    def summary(self) -> dict:
        per_user = np.bincount(self.users, minlength=self.num_users)
        per_item = np.bincount(self.items, minlength=self.num_items)
        return {
            "name": self.name,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "density": self.num_interactions / max(1, self.num_users * self.num_items),
            "interactions_per_user_median": float(np.median(per_user)) if len(per_user) else 0.0,
            "items_without_interactions": int((per_item == 0).sum()),
            "profile_fields": [] if self.profiles is None else list(self.profiles.columns),
            "reconsumption": self.reconsumption,
            "dropped_exact_duplicates": self.cleaning.exact_duplicates,
            "dropped_reconsumptions": self.cleaning.reconsumptions,
            "truncated_texts": self.cleaning.truncated_texts,
            "truncated_titles": self.cleaning.truncated_titles,
        }
