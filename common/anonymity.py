"""How identifying a profile table is, and how to generalize it until it is not.

Quasi-identifiers (QIs) are profile fields that are harmless alone but single people out in
combination (87 % of Americans are unique by zip, birth date and gender). Each QI has a
generalization hierarchy, level 0 = as recorded, the last level = suppressed ("*"):

- age: years · 5-year bands · the MovieLens-1M groups (<18, 18-24, 25-34, 35-44, 45-49, 50-55,
  56+) · three groups (<25, 25-44, 45+) · *
- zip: 5 digits · 3-digit prefix · 1-digit region · *
- gender: as recorded · *
- occupation: as recorded · 8 sectors (technical, business, arts and media, health,
  education, student, not employed, other) · *

A table is *k-anonymous* when every combination of generalized QIs is shared by at least k
users, and *ℓ-diverse* (distinct ℓ) when each such group holds at least ℓ different values of
the sensitive field: k stops re-identification by linkage, ℓ stops learning the sensitive
value of a group whose members all share it. Here every profile field counts toward k, and ℓ
is the diversity of (raw) occupation among users who share the other generalized fields: what
an attacker who knows someone's age, zip and gender learns about their occupation.
"""

from __future__ import annotations

import decimal
import itertools
import re
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fedrec.common.errors import ConfigError

if TYPE_CHECKING:  # pandas is imported where a table is needed; a device generalizes without it
    import pandas as pd

SUPPRESSED = "*"
DIRECT_IDENTIFIER = re.compile(
    r"(^|_)(user|uid|uuid|guid|id|name|first|last|surname|full|nick|nickname|handle|e?mail|"
    r"phone|mobile|cell|tel|telephone|device|imei|idfa|mac|ip|address|street|ssn|passport|"
    r"account|customer|member|username|login)(?=$|_|id|name|number|addr|num)", re.IGNORECASE)
QUASI_IDENTIFIERS = ("age", "zip", "gender", "occupation")
SENSITIVE = "occupation"
AGE_CUTS = {1: list(range(5, 100, 5)), 2: [18, 25, 35, 45, 50, 56], 3: [25, 45]}
ZIP_DIGITS = {0: 5, 1: 3, 2: 1}
MAX_LEVEL = {"age": 4, "zip": 3, "gender": 1, "occupation": 2}
SECTORS = {
    "technical": "engineer programmer scientist technician",
    "business": "administrator executive lawyer marketing salesman",
    "arts and media": "artist entertainment writer",
    "health": "doctor healthcare",
    "education": "educator librarian",
    "student": "student",
    "not employed": "homemaker none retired",
}
SECTOR_OF = {job: sector for sector, jobs in SECTORS.items() for job in jobs.split()}


def _missing(value) -> bool:
    """`pandas.isna` for one value, without importing pandas on a device: a pandas missing
    value (pd.NA, pd.NaT) can only exist once pandas is imported, so until then it is None or
    a NaN (float, numpy, complex, Decimal) or NaT (numpy)."""
    if value is None:
        return True
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        return pandas.isna(value)
    if isinstance(value, (float, complex, np.floating, np.complexfloating, np.datetime64,
                          np.timedelta64, decimal.Decimal)):
        return bool(value != value)
    return False


def is_direct_identifier(field: str) -> bool:
    """True for a field name that names a person, an account, a device or an address
    ('user', 'name', 'e-mail', 'phone_number', 'device_id', ...): such fields never enter
    device data."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(field).strip())  # camelCase -> camel_Case
    return bool(DIRECT_IDENTIFIER.search(re.sub(r"[\s.-]+", "_", words)))


@dataclass(frozen=True)
class Levels:
    """A generalization level per quasi-identifier (0 = as recorded, MAX_LEVEL = suppressed)."""

    age: int = 2
    zip: int = 3
    gender: int = 0
    occupation: int = 1

    def __post_init__(self) -> None:
        for name in QUASI_IDENTIFIERS:
            level = getattr(self, name)
            if not 0 <= level <= MAX_LEVEL[name]:
                raise ConfigError(f"anonymization level {name} = {level}; expected 0 to "
                                  f"{MAX_LEVEL[name]}")

    def loss(self) -> float:
        """Information lost: the sum of each field's level / its top level, 0 (nothing
        generalized) to 4 (everything suppressed)."""
        return sum(getattr(self, n) / MAX_LEVEL[n] for n in QUASI_IDENTIFIERS)

    def describe(self) -> str:
        return ", ".join(f"{n} {LEVEL_NAMES[n][getattr(self, n)]}" for n in QUASI_IDENTIFIERS)


LEVEL_NAMES = {
    "age": ("in years", "in 5-year bands", "in MovieLens-1M groups", "in 3 groups", "suppressed"),
    "zip": ("5 digits", "3-digit prefix", "1-digit region", "suppressed"),
    "gender": ("as recorded", "suppressed"),
    "occupation": ("as recorded", "in 8 sectors", "suppressed"),
}


def generalize_age(age, level: int) -> str:
    """One age (years) at `level`: '34', '30-34', '25-34', '25-44', '<25', '56+' or '*'."""
    if level == MAX_LEVEL["age"] or _missing(age):
        return SUPPRESSED
    age = int(age)
    if level == 0:
        return str(age)
    cuts = AGE_CUTS[level]
    i = int(np.searchsorted(cuts, age, side="right"))
    if i == 0:
        return f"<{cuts[0]}"
    if i == len(cuts):
        return f"{cuts[-1]}+"
    return f"{cuts[i - 1]}-{cuts[i] - 1}"


def generalize_zip(zip_code, level: int) -> str:
    """A zip code (any string) at `level`: its first 5, 3 or 1 characters, or '*'."""
    if level == MAX_LEVEL["zip"] or _missing(zip_code):
        return SUPPRESSED
    text = str(zip_code).strip()
    return text[:ZIP_DIGITS[level]] or SUPPRESSED


def generalize_gender(gender, level: int) -> str:
    if level == MAX_LEVEL["gender"] or _missing(gender):
        return SUPPRESSED
    return str(gender).strip() or SUPPRESSED


def generalize_occupation(occupation, level: int) -> str:
    if level == MAX_LEVEL["occupation"] or _missing(occupation):
        return SUPPRESSED
    text = str(occupation).strip().lower()
    return text if level == 0 else SECTOR_OF.get(text, "other")


GENERALIZE = {"age": generalize_age, "zip": generalize_zip, "gender": generalize_gender,
              "occupation": generalize_occupation}


def generalize(profiles: pd.DataFrame, levels: Levels) -> pd.DataFrame:
    """The quasi-identifier columns of `profiles` at `levels`, as strings; a field the table
    does not have is '*' for everyone."""
    import pandas as pd

    return pd.DataFrame({n: _column(profiles, n, getattr(levels, n)) for n in QUASI_IDENTIFIERS},
                        index=profiles.index)


def _column(profiles: pd.DataFrame, name: str, level: int) -> list[str]:
    if name not in profiles:
        return [SUPPRESSED] * len(profiles)
    values = profiles[name].tolist()
    done = {v: GENERALIZE[name](v, level) for v in set(values)}  # few distinct values
    return [done[v] for v in values]


class _Table:
    """Integer codes of every field at every level, computed once for a lattice search."""

    def __init__(self, profiles: pd.DataFrame):
        import pandas as pd

        self.n = len(profiles)
        self.codes = {(n, lv): pd.factorize(pd.Series(_column(profiles, n, lv)))[0]
                      for n in QUASI_IDENTIFIERS for lv in range(MAX_LEVEL[n] + 1)}
        self.sensitive = (pd.factorize(profiles[SENSITIVE].astype(str))[0]
                          if SENSITIVE in profiles else None)

    def classes(self, levels: Levels, fields=QUASI_IDENTIFIERS) -> np.ndarray:
        """(n,) an equivalence-class id per user (users sharing all `fields`)."""
        key = np.zeros(self.n, np.int64)
        for name in fields:
            codes = self.codes[name, getattr(levels, name)]
            key = key * (int(codes.max(initial=0)) + 1) + codes
        return np.unique(key, return_inverse=True)[1].reshape(-1)

    def sizes(self, levels: Levels) -> np.ndarray:
        classes = self.classes(levels)
        return np.bincount(classes)[classes]

    def ell(self, levels: Levels) -> int | None:
        if self.sensitive is None or self.n == 0:
            return None
        others = tuple(n for n in QUASI_IDENTIFIERS if n != SENSITIVE)
        pairs = np.unique(np.stack([self.classes(levels, others), self.sensitive]), axis=1)
        return int(np.bincount(pairs[0]).min())


def class_sizes(profiles: pd.DataFrame, levels: Levels) -> np.ndarray:
    """(n_users,) the size of each user's equivalence class at `levels`."""
    return _Table(profiles).sizes(levels)


def anonymity(profiles: pd.DataFrame, levels: Levels) -> dict:
    """k-anonymity and ℓ-diversity of `profiles` at `levels`: k (smallest class), users
    unique (a class of 1) and in classes smaller than 5, the number of classes, and distinct
    ℓ of occupation among users sharing the other fields (None without an occupation)."""
    table = _Table(profiles)
    sizes = table.sizes(levels)
    return {
        "levels": {n: getattr(levels, n) for n in QUASI_IDENTIFIERS},
        "generalization": levels.describe(),
        "users": table.n,
        "k": int(sizes.min()) if table.n else 0,
        "unique": int((sizes == 1).sum()),
        "below_5": int((sizes < 5).sum()),
        "classes": int(len(np.unique(table.classes(levels)))) if table.n else 0,
        "l_diversity": table.ell(levels),
    }


def choose_levels(profiles: pd.DataFrame, k: int) -> Levels:
    """The least generalization (smallest `Levels.loss`, then the largest k) under which
    every class holds at least `k` users. Everything suppressed always qualifies when the
    table has at least k users."""
    if k < 1:
        raise ConfigError(f"anonymization.k = {k}; expected at least 1")
    if len(profiles) < k:
        raise ConfigError(f"the profile table has {len(profiles)} users, fewer than "
                          f"anonymization.k = {k}: no generalization can reach k")
    table, best = _Table(profiles), None
    for combo in itertools.product(*(range(MAX_LEVEL[n] + 1) for n in QUASI_IDENTIFIERS)):
        levels = Levels(*combo)
        if best is not None and levels.loss() > best[0][0]:
            continue
        smallest = int(table.sizes(levels).min())
        if smallest >= k and (best is None or (levels.loss(), -smallest) < best[0]):
            best = ((levels.loss(), -smallest), levels)
    return best[1]


COMMON_POLICY = Levels(age=2, zip=1, gender=0, occupation=0)  # age groups + 3-digit zip


def report(profiles: pd.DataFrame, k: int = 5) -> dict:
    """How identifying `profiles` is: the direct identifiers devices drop, and `anonymity`
    as recorded, under a common release policy (age groups, 3-digit zip) and at the least
    generalization reaching `k` (what `auto` levels apply)."""
    rows = [("as recorded", Levels(0, 0, 0, 0)), ("age groups, zip3", COMMON_POLICY),
            (f"least for k={k}", choose_levels(profiles, k))]
    return {
        "direct_identifiers": [c for c in profiles.columns if is_direct_identifier(c)],
        "quasi_identifiers": [c for c in QUASI_IDENTIFIERS if c in profiles],
        "dropped": [c for c in profiles.columns
                    if not is_direct_identifier(c) and c not in QUASI_IDENTIFIERS],
        "k_target": k,
        "rows": [{"name": name, **anonymity(profiles, levels)} for name, levels in rows],
    }


@dataclass
class AnonymizationConfig:
    """`[anonymization]`: how devices generalize profile fields at ingest. With `auto` the
    levels are the least generalization under which the data set's profiles are
    `k`-anonymous (`choose_levels`); otherwise the given levels, which must reach `k`."""

    k: int = 5
    auto: bool = True
    age: int = 2
    zip: int = 3
    gender: int = 0
    occupation: int = 1
    keep_fields: list[str] = field(default_factory=list)  # further fields kept (text scrubbed)

    def validate(self) -> AnonymizationConfig:
        if self.k < 1:
            raise ConfigError(f"anonymization.k = {self.k}; expected at least 1")
        self.levels()
        return self

    def levels(self) -> Levels:
        return Levels(self.age, self.zip, self.gender, self.occupation)

    def resolve(self, profiles: pd.DataFrame | None) -> Levels:
        """The levels devices apply to `profiles` (the population's table, where it is known:
        a simulation, or the report an app team runs before shipping a policy)."""
        if profiles is None or len(profiles) == 0:
            return self.levels()
        if self.auto:
            return choose_levels(profiles, self.k)
        reached = int(class_sizes(profiles, self.levels()).min())
        if reached < self.k:
            raise ConfigError(
                f"anonymization levels ({self.levels().describe()}) leave a group of {reached} "
                f"users, below anonymization.k = {self.k}; generalize further or set auto = true"
                " (see `fedrec data privacy-report`)")
        return self.levels()
