"""The built-in synthetic data set: a seeded generator of catalog, users and interactions.

Generative story:
- `NUM_TOPICS` latent topics; each item mixes 1-2 of them and gets an English title and
  description written from its topics' vocabulary (`synthetic_text`), so text embeddings carry
  the topic signal.
- Item base popularity is Zipf-like (weight ∝ 1 / rank ** POPULARITY_EXPONENT, ranks shuffled).
- Each user has a concentrated Dirichlet taste over topics (nudged by their zip region's
  favourite topic) that drifts toward a second taste across their timeline. The timeline is cut
  into `NUM_PHASES` phases; in each phase the user picks items without replacement with
  probability ∝ popularity × (TASTE_FLOOR + taste·topics) ** 2 (Gumbel top-k, so
  no item twice), in random order within the phase, at increasing timestamps.
- Ratings 1-5 rise with the item's affinity to the user's current taste.
Cost: O(num_users × num_items × NUM_PHASES) time, memory bounded by `_CHUNK_CELLS`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedrec.common.data.dataset import Dataset
from fedrec.common.data.synthetic_text import TOPIC_NAMES, item_texts
from fedrec.common.errors import ConfigError

NUM_TOPICS = len(TOPIC_NAMES)
TASTE_ALPHA = 0.2  # Dirichlet concentration: most users like 1-3 topics
REGION_ALPHA_BOOST = 0.6  # extra concentration on the zip region's favourite topic
MAX_DRIFT = 0.6  # at the end of the timeline, taste = (1-d)·first + d·second, d ~ U(0, MAX_DRIFT)
POPULARITY_EXPONENT = 1.3  # above 1: sampling without replacement flattens it
TASTE_FLOOR = 0.005  # weight ∝ popularity × (TASTE_FLOOR + taste·topics) ** 2
SECONDARY_TOPIC_PROB = 0.4
NUM_PHASES = 4
_CHUNK_CELLS = 2_000_000  # users × items cells per vectorized chunk (~16 MB per float array)
_START_S, _END_S = 1546300800, 1735689599  # 2019-01-01 .. 2024-12-31 23:59:59 UTC
_DAY_S = 86_400

FIRST_NAMES_F = (
    "Mary Patricia Jennifer Linda Elizabeth Susan Jessica Sarah Karen Nancy Lisa Emily Emma"
    " Olivia Ava Sophia Mia Isabella Grace Chloe Hannah Zoe Aisha Fatima Priya Mei Yuki Sofia"
    " Lucia Ingrid Amara Nadia Rosa Leah Maya Ana"
).split()
FIRST_NAMES_M = (
    "James Robert John Michael David William Richard Joseph Thomas Daniel Matthew Anthony Mark"
    " Paul Steven Andrew Joshua Kevin Brian Liam Noah Ethan Lucas Mateo Omar Ahmed Raj Wei"
    " Hiroshi Diego Carlos Ivan Lars Kwame Tariq Samuel"
).split()
FIRST_NAMES_X = "Alex Jordan Taylor Morgan Casey Riley Jamie Avery Quinn Rowan Sasha Robin".split()
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez"
    " Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White"
    " Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres"
    " Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts"
    " Kim Patel Chen Singh Müller Rossi Kowalski Okafor Haddad Silva Tanaka Novak Larsen"
).split()
EMAIL_DOMAINS = (
    "gmail.com yahoo.com outlook.com hotmail.com icloud.com protonmail.com aol.com"
    " fastmail.com mail.com"
).split()
EMAIL_DOMAIN_WEIGHTS = np.array([40, 15, 14, 8, 9, 5, 3, 3, 3], dtype=float)
OCCUPATIONS = (
    "administrator artist doctor educator engineer entertainment executive healthcare homemaker"
    " lawyer librarian marketing none other programmer retired salesman scientist student"
    " technician writer"
).split()
# 3-digit zip prefixes of a few metro regions (Boston, New York, Philadelphia, Washington,
# Atlanta, Miami, Chicago, Detroit, Minneapolis, Dallas, Houston, Austin, Denver, Phoenix,
# Los Angeles, San Diego, San Francisco, Seattle, Portland, Salt Lake City); weights ~ size.
ZIP_PREFIXES = (
    "021 100 191 200 303 331 606 482 554 752 770 787 802 850 900 921 941 981 972 841"
).split()
ZIP_WEIGHTS = np.array([6, 14, 5, 5, 5, 5, 9, 4, 3, 6, 6, 3, 3, 4, 12, 3, 6, 4, 2, 2], float)


# The built-in `--dataset synthetic`: small enough that the README's first command (three
# models, central training) takes about a minute on 2 cores.
DEFAULT_SIZE = {"num_users": 600, "num_items": 500, "interactions_per_user": 40}


def default() -> Dataset:
    """The built-in default data set (DEFAULT_SIZE, seed 0, name "synthetic")."""
    return generate(**DEFAULT_SIZE)


def item_topic_mixtures(num_items: int = 1000, seed: int = 0) -> np.ndarray:
    """The latent (num_items, NUM_TOPICS) topic mixtures behind `generate(num_items=, seed=)`.

    Ground truth for tests and diagnostics; the topics are not part of the `Dataset`.
    """
    return _item_topics(num_items, np.random.default_rng(seed))[0]


def generate(
    num_users: int = 1000,
    num_items: int = 1000,
    seed: int = 0,
    interactions_per_user: int = 50,
    name: str = "synthetic",
) -> Dataset:
    """A synthetic data set, identical for identical arguments (see the module docstring)."""
    if num_users < 1 or num_items < 10 or interactions_per_user < 1:
        raise ConfigError(
            f"synthetic data needs num_users >= 1, num_items >= 10, interactions_per_user >= 1;"
            f" got {num_users}, {num_items}, {interactions_per_user}"
        )
    rng = np.random.default_rng(seed)
    # _item_topics must draw first: item_topic_mixtures() replays it
    item_topics, primary, secondary = _item_topics(num_items, rng)
    titles, texts = item_texts(primary, secondary, rng)
    popularity = 1.0 / (rng.permutation(num_items) + 1.0) ** POPULARITY_EXPONENT
    profiles, region = _profiles(num_users, rng)
    favourite = rng.integers(NUM_TOPICS, size=len(ZIP_PREFIXES))
    alpha = np.full((num_users, NUM_TOPICS), TASTE_ALPHA)
    alpha[np.arange(num_users), favourite[region]] += REGION_ALPHA_BOOST
    taste_first = rng.gamma(alpha) + 1e-12  # a Dirichlet draw with per-user alpha
    taste_first /= taste_first.sum(axis=1, keepdims=True)
    taste_second = rng.dirichlet(np.full(NUM_TOPICS, TASTE_ALPHA), size=num_users)
    drift = rng.uniform(0.0, MAX_DRIFT, size=num_users)
    counts = _interaction_counts(num_users, num_items, interactions_per_user, rng)
    users, items, affinity = _choose_items(
        taste_first, taste_second, drift, counts, item_topics, popularity, rng
    )
    timestamps = _timestamps(counts, rng)
    user_bias = rng.normal(0.0, 0.4, size=num_users)
    noisy = 1.6 + 3.0 * affinity + user_bias[users] + rng.normal(0.0, 0.75, size=len(users))
    ratings = np.clip(np.rint(noisy), 1, 5).astype(np.float32)
    return Dataset(
        name=name,
        item_ids=np.array([f"i{i + 1:05d}" for i in range(num_items)]),
        item_texts=texts,
        user_ids=np.array([f"u{u + 1:06d}" for u in range(num_users)]),
        users=users,
        items=items,
        timestamps=timestamps,
        ratings=ratings,
        profiles=profiles,
        item_titles=titles,
    )


def _item_topics(num_items: int, rng: np.random.Generator):
    """(num_items, NUM_TOPICS) topic mixtures; primary topics are balanced across items."""
    primary = rng.permutation(np.arange(num_items) % NUM_TOPICS)
    has_second = rng.random(num_items) < SECONDARY_TOPIC_PROB
    offset = rng.integers(1, NUM_TOPICS, size=num_items)
    secondary = np.where(has_second, (primary + offset) % NUM_TOPICS, -1)
    weight_second = np.where(has_second, rng.uniform(0.2, 0.45, size=num_items), 0.0)
    mixture = np.zeros((num_items, NUM_TOPICS))
    rows = np.arange(num_items)
    mixture[rows, primary] = 1.0 - weight_second
    mixture[rows[has_second], secondary[has_second]] = weight_second[has_second]
    return mixture, primary, secondary


def _interaction_counts(num_users, num_items, per_user, rng) -> np.ndarray:
    """Log-normal around `per_user` (median), clipped to [min(5, cap), cap]."""
    cap = max(1, min(num_items // 2, 10 * per_user))
    counts = np.rint(per_user * rng.lognormal(0.0, 0.6, size=num_users)).astype(np.int64)
    return np.clip(counts, min(5, cap), cap)


def _choose_items(taste_first, taste_second, drift, counts, item_topics, popularity, rng):
    """Users' items, grouped by user in time order, and each item's relative affinity in [0, 1]."""
    num_users, num_items = len(counts), len(popularity)
    item_topics_t = item_topics.T.astype(np.float32)
    popularity = popularity.astype(np.float32)
    chunk = max(1, _CHUNK_CELLS // num_items)
    out_users, out_items, out_affinity = [], [], []
    for lo in range(0, num_users, chunk):
        hi = min(num_users, lo + chunk)
        chosen = np.zeros((hi - lo, num_items), dtype=bool)
        # position j of a user's n interactions is in phase floor(NUM_PHASES * j / n)
        ends = -(-np.outer(counts[lo:hi], np.arange(1, NUM_PHASES + 1)) // NUM_PHASES)
        per_phase = np.diff(ends, axis=1, prepend=0)
        parts = []
        for phase in range(NUM_PHASES):
            mix = drift[lo:hi, None] * phase / (NUM_PHASES - 1)
            taste = ((1.0 - mix) * taste_first[lo:hi] + mix * taste_second[lo:hi]).astype(
                np.float32
            )
            affinity = taste @ item_topics_t
            keys = np.square(affinity + np.float32(TASTE_FLOOR))
            keys *= popularity
            # Gumbel top-k in exponential form: top-k of weight / Exp(1) samples without replacement
            keys /= rng.standard_exponential(keys.shape, dtype=np.float32) + np.float32(1e-30)
            keys[chosen] = -1.0
            users, items = _top_k(keys, per_phase[:, phase])
            chosen[users, items] = True
            relative = affinity[users, items] / taste[users].max(axis=1)
            parts.append((users, items, relative, users * NUM_PHASES + phase))
        users, items, relative, group = (np.concatenate(x) for x in zip(*parts, strict=True))
        order = np.argsort(group + rng.random(len(group)))  # by user, phase, then random
        out_users.append(users[order] + lo)
        out_items.append(items[order])
        out_affinity.append(relative[order])
    return (
        np.concatenate(out_users).astype(np.int64),
        np.concatenate(out_items).astype(np.int64),
        np.concatenate(out_affinity).astype(np.float64),
    )


def _top_k(keys: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the k[r] largest keys of each row r (np.partition: no full sort)."""
    k_max = int(k.max()) if len(k) else 0
    if k_max == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = np.partition(keys, keys.shape[1] - k_max, axis=1)[:, -k_max:]
    top.sort(axis=1)  # ascending: the k-th largest of row r is top[r, k_max - k]
    threshold = top[np.arange(len(k)), np.minimum(k_max - k, k_max - 1)]
    threshold[k == 0] = np.inf
    rows, cols = np.nonzero(keys >= threshold[:, None])
    tied = np.flatnonzero(np.bincount(rows, minlength=len(k)) != k)  # equal keys: rare
    if len(tied):
        keep = ~np.isin(rows, tied)
        exact = [np.argsort(-keys[r], kind="stable")[: k[r]] for r in tied]
        rows = np.concatenate([rows[keep], np.repeat(tied, k[tied])])
        cols = np.concatenate([cols[keep], *exact])
    return rows, cols


def _timestamps(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted unix seconds per user within an active span of days to years, 2019-2024."""
    num_users = len(counts)
    span_s = np.clip(rng.lognormal(np.log(200), 0.8, size=num_users), 7, 1500) * _DAY_S
    start_s = _START_S + rng.random(num_users) * (_END_S - _START_S - span_s)
    user_of = np.repeat(np.arange(num_users), counts)
    fraction = np.sort(user_of + rng.random(len(user_of))) - user_of  # sorted within each user
    raw = start_s[user_of] + np.clip(fraction, 0.0, 1.0) * span_s[user_of]
    return np.floor(raw).astype(np.int64)


def _profiles(num_users: int, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """Profile table (name, email, zip, age, gender, occupation) and each user's zip region."""
    gender = rng.choice(np.array(["F", "M", "X"]), size=num_users, p=[0.49, 0.48, 0.03])
    first = np.empty(num_users, dtype=object)
    for code, names in (("F", FIRST_NAMES_F), ("M", FIRST_NAMES_M), ("X", FIRST_NAMES_X)):
        mask = gender == code
        first[mask] = np.array(names, dtype=object)[rng.integers(len(names), size=mask.sum())]
    last = np.array(LAST_NAMES, dtype=object)[rng.integers(len(LAST_NAMES), size=num_users)]
    age = np.clip(np.rint(rng.gamma(6.0, 6.0, size=num_users) + 10), 13, 80).astype(np.int64)
    occupation = np.array(OCCUPATIONS, dtype=object)[rng.integers(len(OCCUPATIONS), size=num_users)]
    occupation[(age < 23) & (rng.random(num_users) < 0.7)] = "student"
    occupation[(age >= 65) & (rng.random(num_users) < 0.7)] = "retired"
    region = rng.choice(len(ZIP_PREFIXES), size=num_users, p=ZIP_WEIGHTS / ZIP_WEIGHTS.sum())
    digits = rng.integers(100, size=num_users)
    zips = [f"{ZIP_PREFIXES[r]}{d:02d}" for r, d in zip(region, digits, strict=True)]
    domain_p = EMAIL_DOMAIN_WEIGHTS / EMAIL_DOMAIN_WEIGHTS.sum()
    domains = rng.choice(EMAIL_DOMAINS, size=num_users, p=domain_p)
    style, number = rng.integers(4, size=num_users), rng.integers(1, 100, size=num_users)
    emails = []
    for f, la, s, n, d, a in zip(first, last, style, number, domains, age, strict=True):
        f, la = f.lower(), la.lower().replace("ü", "ue")
        local = (f"{f}.{la}", f"{f[0]}{la}{n}", f"{f}_{la}{(2024 - a) % 100:02d}", f"{la}.{f}{n}")
        emails.append(f"{local[s]}@{d}")
    profiles = pd.DataFrame(
        {
            "name": [f"{f} {la}" for f, la in zip(first, last, strict=True)],
            "email": emails,
            "zip": zips,
            "age": age,
            "gender": gender,
            "occupation": occupation.astype(str),
        }
    )
    return profiles, region
