"""Ingest scrubbing: the only way a user's raw record becomes device data.

A raw record is a profile (any fields) plus the user's interactions. What comes out is
`UserData`: item indices in time order and a *generalized* profile. Along the way

- direct identifiers (user id, names, e-mail, phone, device id, addresses) are dropped: no
  field of `UserData` can hold them, so nothing downstream can send them;
- quasi-identifiers (age, zip, gender, occupation) are generalized to the run's `Levels`
  (`fedrec.common.anonymity`, chosen so that the population is k-anonymous);
- timestamps are used to order the interactions and then dropped (the coarsest time);
- any other field is dropped unless listed in `keep_fields`; kept text is scrubbed of PII
  (e-mails, phones, URLs, long digit runs, the profile's own names and identifiers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

from fedrec.client.local import UserData
from fedrec.common.anonymity import GENERALIZE, QUASI_IDENTIFIERS, Levels, is_direct_identifier

EMAIL = re.compile(r"[^\s@,;:<>()\[\]\"]{1,64}@[\w-]{1,63}(\.[\w-]{1,63}){1,8}")  # RFC 5322 sizes
URL = re.compile(r"\b[a-z][a-z0-9+.-]{0,15}://\S+|\bwww\.\S+"  # scheme://… or www.…
                 r"|\b(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,8}[a-z]{2,24}\b(?:/\S*)?",
                 re.IGNORECASE)  # host names; bounded labels keep matching linear
PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{6,}\d(?!\w)")
DIGITS = re.compile(r"\d{5,}")
PLACEHOLDER = {"email": "[email]", "url": "[url]", "phone": "[phone]", "digits": "[number]",
               "name": "[name]"}


def scrub_text(text: str, names: Iterable[str] = ()) -> str:
    """`text` with every value of `names` (whole, and each of its words of 2+ letters; case-
    insensitive) replaced by '[name]', then e-mails, URLs, phone numbers and runs of 5+
    digits by their placeholders."""
    values = {str(n).strip() for n in names if str(n).strip()}
    values |= {w for n in values for w in re.findall(r"[^\W\d_]{2,}", n)}
    if values:
        alternatives = "|".join(map(re.escape, sorted(values, key=len, reverse=True)))
        text = re.sub(rf"(?<!\w)({alternatives})(?!\w)", PLACEHOLDER["name"], str(text),
                      flags=re.IGNORECASE)
    text = EMAIL.sub(PLACEHOLDER["email"], str(text))
    text = URL.sub(PLACEHOLDER["url"], text)
    text = PHONE.sub(PLACEHOLDER["phone"], text)
    return DIGITS.sub(PLACEHOLDER["digits"], text)


def scrub_profile(profile: Mapping[str, object], levels: Levels,
                  keep_fields: Iterable[str] = ()) -> dict[str, str | float]:
    """The device's view of a profile: quasi-identifiers generalized to `levels` (missing
    ones '*'), `keep_fields` kept (text scrubbed, numbers as float), everything else —
    direct identifiers always — dropped."""
    lowered = {str(k).strip().lower(): v for k, v in profile.items()}
    names = [str(v) for k, v in profile.items() if is_direct_identifier(str(k)) and v is not None]
    out: dict[str, str | float] = {
        q: GENERALIZE[q](lowered.get(q), getattr(levels, q)) for q in QUASI_IDENTIFIERS}
    for field in keep_fields:
        key = field.strip().lower()
        if key in out or key not in lowered or is_direct_identifier(key):
            continue
        value = lowered[key]
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            out[key] = float(value)
        elif value is not None:
            out[key] = scrub_text(str(value), names)
    return out


def ingest(profile: Mapping[str, object] | None, train_items: np.ndarray, valid_item: int,
           test_item: int, levels: Levels, keep_fields: Iterable[str] = ()) -> UserData:
    """A user's raw record as device data. `train_items`: (n,) item indices in time order
    (the timestamps that ordered them are not kept); held-out items -1 if none."""
    items = np.asarray(train_items, dtype=np.int64)
    if items.ndim != 1:
        raise ValueError(f"train_items must be one-dimensional, got shape {items.shape}")
    return UserData(items, int(valid_item), int(test_item),
                    scrub_profile(profile or {}, levels, keep_fields))
