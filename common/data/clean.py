"""The content rules every data set follows (docs/data.md, "Rules"):

- ids: no control or format characters, and nothing a spreadsheet would run as a formula
  (a leading `=`, `+` or `@`; a leading `-` unless the id is a plain number such as `-5`).
  Such ids are refused, never rewritten, so an id means the same thing in every file.
- interactions: an exact duplicate (same user, item and timestamp) is dropped. A later
  consumption of an item the user already consumed (a re-watch) is dropped too, unless the data
  set's `reconsumption` rule is "keep": leave-one-out assumes the held-out items are new.
- item texts and titles: cut to `MAX_TEXT_CHARS` characters.

`files.load_dir` applies them to files and counts what it changed (`Cleaning`); the split applies
the interaction rule again to any in-memory `Dataset` (`repeated_rows`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fedrec.common.text import printable

# The default encoder reads 256 word pieces, about 1,000 characters of English; 2,000 leaves
# room for encoders of up to ~512 tokens while bounding a catalog at 2,000 characters per item.
MAX_TEXT_CHARS = 2000
RECONSUMPTION = ("first", "keep")  # keep only a pair's first consumption / keep every one
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")
_FORMULA_START = "=+@"
_PLAIN_ASCII_ID = re.compile(r"[\x21-\x7e][\x20-\x7e]*")  # fast path; first character checked apart
_PLAIN_NUMBER = re.compile(r"-[0-9]+(?:\.[0-9]+)?")


@dataclass(frozen=True)
class Cleaning:
    """What loading dropped or cut (counts, for `fedrec data info`)."""

    exact_duplicates: int = 0  # interaction rows repeating an earlier (user, item, timestamp)
    reconsumptions: int = 0  # later consumptions of a user-item pair, dropped under "first"
    truncated_texts: int = 0  # item texts cut to MAX_TEXT_CHARS
    truncated_titles: int = 0  # item titles cut to MAX_TEXT_CHARS


def id_problem(value: str) -> str | None:
    """Why `value` cannot be a user or item id (a sentence), or None if it can."""
    if _PLAIN_ASCII_ID.fullmatch(value) and value[0] not in _FORMULA_START + "-":
        return None
    if not value:
        return "an id must not be empty"
    unsafe = next((ch for ch in value if unicodedata.category(ch) in _UNSAFE_CATEGORIES), None)
    if unsafe is not None:
        return (f"id '{printable(value)}' contains the control or format character"
                f" '{printable(unsafe)}'; ids must be printable text")
    if value[0] in _FORMULA_START or (value[0] == "-" and not _PLAIN_NUMBER.fullmatch(value)):
        return (f"id '{value}' starts with '{value[0]}', which a spreadsheet runs as a formula;"
                " ids must not start with =, + or @, nor with - unless they are a plain number")
    return None


def first_bad_id(ids: Iterable[str]) -> tuple[int, str] | None:
    """(position, reason) of the first id in `ids` that `id_problem` refuses, or None."""
    for position, value in enumerate(ids):
        problem = id_problem(value)
        if problem is not None:
            return position, problem
    return None


def repeated_rows(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which interactions repeat an earlier one of the same user and item. Inputs: (n,) each.

    Returns `exact`, `later`: (n,) bool. "Earlier" is by timestamp, then file order (the
    split's stable sort). `exact`: the row repeats an earlier row's (user, item, timestamp).
    `later`: not exact, but the user consumed the item before (a re-consumption). Each user-item
    pair's first consumption is neither.
    """
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    timestamps = np.asarray(timestamps)
    order = np.lexsort((np.arange(len(users)), timestamps, items, users))
    u, i, t = users[order], items[order], timestamps[order]
    same_pair = np.zeros(len(order), bool)
    same_pair[1:] = (u[1:] == u[:-1]) & (i[1:] == i[:-1])
    same_time = np.zeros(len(order), bool)
    same_time[1:] = t[1:] == t[:-1]
    exact, later = np.zeros(len(order), bool), np.zeros(len(order), bool)
    exact[order] = same_pair & same_time
    later[order] = same_pair & ~same_time
    return exact, later


def rows_to_keep(
    users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, reconsumption: str
) -> tuple[np.ndarray, Cleaning]:
    """(n,) bool of the interactions the rule `reconsumption` keeps, and what it dropped."""
    check_reconsumption(reconsumption)
    exact, later = repeated_rows(users, items, timestamps)
    drop_later = reconsumption == "first"
    keep = ~exact & ~(later & drop_later)
    return keep, Cleaning(int(exact.sum()), int(later.sum()) if drop_later else 0)


def cap_texts(texts: Iterable[str]) -> tuple[list[str], int]:
    """Each text cut to its first MAX_TEXT_CHARS characters, and how many were cut."""
    texts = list(texts)
    cut = sum(len(text) > MAX_TEXT_CHARS for text in texts)
    return [text[:MAX_TEXT_CHARS] for text in texts], cut


def check_reconsumption(value: str) -> str:
    """`value` if it is a reconsumption rule; ValueError naming the choices otherwise."""
    if value not in RECONSUMPTION:
        raise ValueError(f"reconsumption '{value}': expected 'first' or 'keep'")
    return value
