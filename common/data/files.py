"""The on-disk data-set format and its validating loader.

A data-set directory holds:
- `interactions.csv` or `interactions.parquet`: columns `user,item,timestamp[,rating]`, one row
  per interaction, kept in file order. `timestamp`: unix seconds (a fractional number is floored)
  or an ISO 8601 date/time (UTC unless it names a zone). `rating`: a number.
- `items.csv`: columns `item,text[,title]`; the catalog, in this order (item index = row).
- `users.csv` (optional): column `user` plus any profile columns.
- `meta.json`: written last by `save_dir` (name, counts, sha256 of each file, the
  `reconsumption` rule), so a directory whose files do not match it was modified or
  half-written. User data needs no meta.json; one written by hand may hold settings only
  (`{"reconsumption": "keep"}`), and without `sha256` no file is checked.

Extra columns are ignored. Ids are strings with surrounding whitespace removed. User index =
order of first appearance in the interactions. The content rules of `clean` apply: unsafe ids
are refused; exact duplicate interactions, and re-consumptions unless `reconsumption` is "keep",
are dropped; item texts and titles are cut to `clean.MAX_TEXT_CHARS` (the `Dataset`'s `cleaning`
counts both). Every problem raises `DataError` naming the file, the 1-based line (the header is
line 1) and the column; values from the files are shown with control characters escaped.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from fedrec.common.atomic import atomic_path, write_text
from fedrec.common.data import clean
from fedrec.common.data.dataset import Dataset
from fedrec.common.errors import DataError, DatasetNotFound
from fedrec.common.text import printable

INTERACTIONS_CSV, INTERACTIONS_PARQUET = "interactions.csv", "interactions.parquet"
ITEMS_CSV, USERS_CSV, META_JSON = "items.csv", "users.csv", "meta.json"
FORMAT = "fedrec-dataset/1"
_MAX_ABS_TIMESTAMP = 2**62
_PYARROW_MIN_BYTES = 8 << 20


@dataclass
class _Table:
    """A file's rows as a DataFrame, plus where each row is in the file (for error messages)."""

    path: Path
    frame: pd.DataFrame
    line_of: Callable[[int], int]
    row_note: str = ""

    def error(self, row: int, column: str | None, message: str) -> DataError:
        note = f" ({self.row_note} {row + 1})" if self.row_note else ""
        return DataError(self.path, message + note, line=self.line_of(row), column=column)

    def text(self, column: str) -> pd.Series:
        """The column as stripped strings; missing values become ''."""
        series = self.frame[column]
        if pd.api.types.is_string_dtype(series):
            return series.fillna("").astype(str).str.strip()
        return series.map(_cell_text).astype(str)

    def require_values(self, column: str) -> pd.Series:
        values = self.text(column)
        empty = np.flatnonzero((values == "").to_numpy())
        if len(empty):
            raise self.error(int(empty[0]), column, f"missing value: '{column}' must not be empty")
        return values


def load_dir(path: str | Path, name: str | None = None) -> Dataset:
    """Load and validate the data set in directory `path` (see the module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetNotFound(f"no data-set directory at {path}")
    meta = _check_meta(path)
    reconsumption = _reconsumption(meta, path / META_JSON)
    interactions = _interactions_file(path)
    inter = _read(interactions, ("user", "item", "timestamp"), ("rating",), fast=True)
    item_ids, texts, titles, cut = _catalog(_read(path / ITEMS_CSV, ("item", "text"), ("title",)))
    users, user_ids, items, timestamps = _interactions(inter, item_ids)
    ratings = _ratings(inter) if "rating" in inter.frame else None
    profiles = None
    if (path / USERS_CSV).exists():
        profiles = _profiles(path / USERS_CSV, user_ids, users, inter, meta)
    keep, dropped = clean.rows_to_keep(users, items, timestamps, reconsumption)
    if not keep.all():  # user indices stay in order of first appearance in the file
        users, items, timestamps = users[keep], items[keep], timestamps[keep]
        ratings = None if ratings is None else ratings[keep]
    return Dataset(
        name=name or meta.get("name") or path.resolve().name,
        item_ids=np.array(item_ids.tolist(), dtype=str),
        item_texts=texts,
        user_ids=np.array(list(user_ids), dtype=str),
        users=users,
        items=items,
        timestamps=timestamps,
        ratings=ratings,
        profiles=profiles,
        item_titles=titles,
        reconsumption=reconsumption,
        cleaning=replace(dropped, truncated_texts=cut[0], truncated_titles=cut[1]),
    )


def save_dir(dataset: Dataset, path: str | Path, extra_meta: dict | None = None) -> Path:
    """Write `dataset` to directory `path`: each file atomically, meta.json last."""
    path = Path(path)
    for kind, ids in (("item", dataset.item_ids), ("user", dataset.user_ids)):
        bad = clean.first_bad_id(ids.astype(str))
        if bad is not None:
            raise DataError(path, f"cannot save {kind} {bad[0] + 1} of '{dataset.name}': {bad[1]}")
    path.mkdir(parents=True, exist_ok=True)
    (path / META_JSON).unlink(missing_ok=True)  # from here until the end the set is incomplete
    (path / INTERACTIONS_PARQUET).unlink(missing_ok=True)
    columns = {
        "user": dataset.user_ids[dataset.users],
        "item": dataset.item_ids[dataset.items],
        "timestamp": np.asarray(dataset.timestamps, dtype=np.int64),
    }
    if dataset.ratings is not None:
        columns["rating"] = np.asarray(dataset.ratings, dtype=np.float32).astype(str)
    frames = {
        INTERACTIONS_CSV: pd.DataFrame(columns),
        ITEMS_CSV: pd.DataFrame(
            {"item": dataset.item_ids, "text": dataset.item_texts, "title": dataset.item_titles}
        ),
    }
    profile_dtypes = {}
    if dataset.profiles is not None:
        users = dataset.profiles.reset_index(drop=True).copy()
        users.insert(0, "user", dataset.user_ids)
        frames[USERS_CSV] = users
        profile_dtypes = {c: _dtype_name(dataset.profiles[c]) for c in dataset.profiles.columns}
    else:
        (path / USERS_CSV).unlink(missing_ok=True)
    hashes = {}
    for file_name, frame in frames.items():
        with atomic_path(path / file_name) as tmp:
            frame.to_csv(tmp, index=False, lineterminator="\n")
        hashes[file_name] = _sha256(path / file_name)
    meta = {
        "format": FORMAT,
        "name": dataset.name,
        "num_users": dataset.num_users,
        "num_items": dataset.num_items,
        "num_interactions": dataset.num_interactions,
        "sha256": hashes,
        "profile_dtypes": profile_dtypes,
        "reconsumption": dataset.reconsumption,
        **(extra_meta or {}),
    }
    write_text(path / META_JSON, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return path


def _check_meta(path: Path) -> dict:
    """meta.json's content (or {} without one), after checking every file's sha256 against it."""
    meta_path = path / META_JSON
    if not meta_path.exists():
        return {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise TypeError(f"a JSON object is expected, not {type(meta).__name__}")
        hashes = dict(meta.get("sha256", {}))  # a hand-written meta.json may hold settings only
    except (ValueError, TypeError) as exc:
        raise DataError(
            meta_path, f"not a fedrec meta.json ({printable(exc)}); delete it to load the files"
        ) from None
    for file_name, expected in hashes.items():
        file_path = path / file_name
        if not file_path.exists() or _sha256(file_path) != expected:
            raise DataError(
                file_path,
                "missing or changed since meta.json was written (modified or half-written"
                " directory); re-create the data set, or delete meta.json to load the files as is",
            )
    return meta


def _interactions_file(path: Path) -> Path:
    csv_path, parquet_path = path / INTERACTIONS_CSV, path / INTERACTIONS_PARQUET
    if csv_path.exists() and parquet_path.exists():
        raise DataError(path, f"both {INTERACTIONS_CSV} and {INTERACTIONS_PARQUET}; keep one")
    if csv_path.exists() or parquet_path.exists():
        return csv_path if csv_path.exists() else parquet_path
    raise DataError(path, f"no {INTERACTIONS_CSV} or {INTERACTIONS_PARQUET} in this directory")


def _reconsumption(meta: dict, meta_path: Path) -> str:
    """The data set's rule for repeated user-item pairs: meta.json's `reconsumption`, or "first"."""
    value = meta.get("reconsumption", "first")
    if value not in clean.RECONSUMPTION:
        raise DataError(
            meta_path,
            f"reconsumption {json.dumps(value)}: expected \"first\" (only a user's first"
            " consumption of an item counts) or \"keep\" (re-consumptions are interactions)",
        )
    return value


def _catalog(items: _Table) -> tuple[pd.Series, list[str], list[str], tuple[int, int]]:
    """items.csv's ids, texts and titles (a missing title is the text), both cut to
    `clean.MAX_TEXT_CHARS`, and how many texts and titles were cut."""
    item_ids = items.require_values("item")
    _check_ids(items, "item", *pd.factorize(item_ids))
    _check_unique(items, item_ids, "item")
    texts, cut_texts = clean.cap_texts(items.require_values("text"))
    if "title" not in items.frame:
        return item_ids, texts, [], (cut_texts, 0)
    given = items.text("title")
    titles, cut_titles = clean.cap_texts(given.where(given != "", pd.Series(texts, given.index)))
    return item_ids, texts, titles, (cut_texts, cut_titles)


def _interactions(
    inter: _Table, item_ids: pd.Series
) -> tuple[np.ndarray, pd.Index, np.ndarray, np.ndarray]:
    """`users` (n,) int64 indices into `user_ids` (distinct ids, in order of first appearance),
    `items` (n,) int64 indices into `item_ids`, `timestamps` (n,) int64 seconds."""
    user_values = inter.require_values("user")
    item_values = inter.require_values("item")
    codes, distinct = pd.factorize(item_values)  # few distinct ids: look those up only
    item_index = pd.Index(item_ids).get_indexer(distinct)[codes]
    unknown = np.flatnonzero(item_index < 0)
    if len(unknown):
        row = int(unknown[0])
        value = printable(item_values.iloc[row])
        raise inter.error(row, "item", f"item '{value}' is not in {ITEMS_CSV}")
    timestamps = _timestamps(inter)
    users, user_ids = pd.factorize(user_values)
    _check_ids(inter, "user", users, user_ids)
    return users.astype(np.int64), user_ids, item_index.astype(np.int64), timestamps


def _check_ids(table: _Table, column: str, codes: np.ndarray, distinct) -> None:
    """`DataError` at the first row whose id `clean.id_problem` refuses. `distinct`: the ids in
    order of first appearance; `codes`: (rows,) each row's position in `distinct`."""
    bad = clean.first_bad_id(distinct)
    if bad is not None:
        position, problem = bad
        raise table.error(int(np.flatnonzero(codes == position)[0]), column, problem)


def _read(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...], fast: bool = False
) -> _Table:
    if not path.exists():
        raise DataError(path, f"file not found; expected columns {', '.join(required)}")
    table = _read_parquet(path) if path.suffix == ".parquet" else _read_csv(path, fast)
    names = [str(c).strip().lstrip("\ufeff") for c in table.frame.columns]
    if path.suffix != ".parquet":
        header = [c.strip() for c in _csv_header(path)]
        if header and len(header) != len(names):  # e.g. a stray carriage return splits a line
            raise DataError(path, f"the header line has {len(header)} fields but the rows are "
                            f"read as {len(names)} columns: expected one header line of column "
                            "names separated by commas", line=1)
        names = header or names
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise DataError(path, f"repeated column name(s) {', '.join(repeated)}", line=1)
    table.frame.columns = names
    lower = {c.lower(): c for c in reversed(names)}
    canonical = {lower[c]: c for c in required + optional if c in lower and c not in names}
    table.frame = table.frame.rename(columns=canonical)
    missing = [c for c in required if c not in table.frame.columns]
    if missing:
        found = ", ".join(table.frame.columns) or "none"
        wanted = ", ".join(required) + "".join(f"[, {c}]" for c in optional)
        raise DataError(
            path,
            f"missing required column(s) {', '.join(missing)}: found {found}; expected {wanted}",
            line=1,
        )
    if len(table.frame) == 0:
        raise DataError(path, "no rows: the file has a header but no data")
    return table


def _read_csv(path: Path, fast: bool = False) -> _Table:
    """All columns as text. With `fast`, a large file goes through pyarrow's multi-threaded reader
    when it is installed; the C reader is the reference and reports every problem (with its line).
    """
    options = {"dtype": str, "keep_default_na": False}
    frame = None
    if fast and path.stat().st_size > _PYARROW_MIN_BYTES and importlib.util.find_spec("pyarrow"):
        try:
            frame = pd.read_csv(path, engine="pyarrow", **options)
        except Exception:  # any problem: the reference reader below finds and reports it
            frame = None
    try:
        if frame is None:
            frame = pd.read_csv(path, na_filter=False, encoding="utf-8-sig", **options)
    except pd.errors.EmptyDataError:
        raise DataError(path, "empty file: expected a header line and data rows") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (pd.errors.ParserError, ValueError, OverflowError, csv.Error) as exc:
        found = re.search(r"line (\d+)", str(exc))
        line = int(found.group(1)) if found else None
        raise DataError(path, f"not valid CSV: {printable(str(exc).strip())}", line=line) from None
    table = _Table(path, frame, lambda row: _csv_line(path, row))
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took the extra first field as index
        raise table.error(0, None, f"the row has more fields than the header ({frame.shape[1]})")
    return table


def _cell_text(value) -> str:
    """A parquet cell as text: missing -> '', 3.0 -> '3'."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return ""
        if float(value).is_integer():
            return str(int(value))
    return str(value).strip()


def _csv_header(path: Path) -> list[str]:
    """The header's fields as the csv module reads them ([] if it cannot)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            for record in csv.reader(fh):
                if record and (len(record) > 1 or record[0].strip()):
                    return record
    except (csv.Error, UnicodeError, ValueError):
        pass
    return []


def _csv_line(path: Path, row: int) -> int:
    """1-based file line where data row `row` starts (blank lines are skipped, as pandas does)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            last_line, data_row = 0, -2  # -2: the header is still to come
            for record in reader:
                start, last_line = last_line + 1, reader.line_num
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                data_row += 1
                if data_row == row:
                    return start
    except (csv.Error, UnicodeError, ValueError):
        pass
    return row + 2


def _read_parquet(path: Path) -> _Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            path, "reading Parquet needs pyarrow: pip install pyarrow (or 'fedrec[parquet]')"
        ) from None
    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(path, f"not a readable Parquet file: {exc}") from None
    return _Table(path, frame, lambda row: row + 1, row_note="line = table row")


def _check_unique(table: _Table, ids: pd.Series, column: str) -> None:
    repeated = np.flatnonzero(ids.duplicated().to_numpy())
    if len(repeated):
        second = int(repeated[0])
        first = int(np.flatnonzero((ids == ids.iloc[second]).to_numpy())[0])
        raise table.error(
            second,
            column,
            f"duplicate {column} id '{printable(ids.iloc[second])}' (lines {table.line_of(first)}"
            f" and {table.line_of(second)})",
        )


def _timestamps(table: _Table) -> np.ndarray:
    """int64 unix seconds from numbers, ISO 8601 dates, or parquet datetimes."""
    series = table.frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(series):
        seconds = _datetime_seconds(series)
    elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        seconds = series.astype("float64")
    else:
        text = table.require_values("timestamp")
        seconds = _to_float(text)
        dates = seconds.isna() & text.str.match(r"\d{4}-\d\d")  # ISO 8601 only: no "now"
        if dates.any():
            parsed = pd.to_datetime(text[dates], format="ISO8601", utc=True, errors="coerce")
            seconds[dates] = _datetime_seconds(parsed)
    values = seconds.to_numpy(dtype="float64")
    bad = np.flatnonzero(~np.isfinite(values) | (np.abs(values) >= _MAX_ABS_TIMESTAMP))
    if len(bad):
        row = int(bad[0])
        value = printable(table.frame["timestamp"].iloc[row])
        raise table.error(
            row,
            "timestamp",
            f"'{value}' is not a timestamp: expected unix seconds"
            " (a number) or an ISO 8601 date/time such as 2021-03-04T05:06:07",
        )
    if pd.api.types.is_integer_dtype(series):  # exact, also beyond 2**53
        return series.to_numpy(dtype=np.int64)
    return np.floor(values).astype(np.int64)


def _to_float(text: pd.Series) -> pd.Series:
    """Numbers as float64, NaN where a value is not a number."""
    if getattr(text.dtype, "storage", None) == "pyarrow":  # a vectorized cast: fast when all parse
        import pyarrow as pa
        import pyarrow.compute as pc

        try:
            values = pc.cast(pa.array(text.array), pa.float64()).to_numpy(zero_copy_only=False)
            return pd.Series(values, index=text.index)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    with np.errstate(invalid="ignore"):
        return pd.to_numeric(text, errors="coerce").astype("float64")


def _datetime_seconds(series: pd.Series) -> pd.Series:
    if getattr(series.dt, "tz", None) is None:
        series = series.dt.tz_localize("UTC")
    epoch = pd.Timestamp(0, tz="UTC")
    return ((series - epoch) // pd.Timedelta(seconds=1)).astype("float64")


def _ratings(table: _Table) -> np.ndarray:
    series = table.frame["rating"]
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        series = _to_float(table.require_values("rating"))
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        value = printable(table.frame["rating"].iloc[row])
        raise table.error(row, "rating", f"'{value}' is not a number (ratings must be numeric)")
    return values.astype(np.float32)


def _profiles(
    path: Path, user_ids: np.ndarray, users: np.ndarray, inter: _Table, meta: dict
) -> pd.DataFrame:
    """users.csv rows in user-index order (users without interactions are dropped)."""
    table = _read(path, ("user",), ())
    ids = table.require_values("user")
    _check_ids(table, "user", *pd.factorize(ids))
    _check_unique(table, ids, "user")
    position = pd.Index(ids).get_indexer(user_ids)
    missing = np.flatnonzero(position < 0)
    if len(missing):
        row = int(np.flatnonzero(users == missing[0])[0])
        raise inter.error(row, "user", f"user '{user_ids[missing[0]]}' has no row in {path}")
    frame = table.frame.drop(columns="user").iloc[position].reset_index(drop=True)
    for column, dtype in meta.get("profile_dtypes", {}).items():
        if column in frame and dtype != "str":
            try:
                frame[column] = frame[column].astype(dtype)
            except (ValueError, TypeError) as exc:
                message = f"cannot read as {dtype}: {printable(exc)}"
                raise DataError(path, message, column=column) from None
    return frame


def _dtype_name(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series) or pd.api.types.is_float_dtype(series):
        return str(series.dtype)
    return "str"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
