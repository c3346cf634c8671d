"""The device's store: one SQLite file per device holding everything fedrec keeps on it — the
user's interactions, the public catalog, the newest global head, the personal state, the
record-level privacy account, the device's own ledger, its pseudonym, and caches derived from
them. Nothing in here is ever sent anywhere.

Durability: every write is one transaction (WAL journal), so a crash leaves the state before
or after it, never half of it. `fsync=False` (simulated devices) sets `synchronous=OFF`: a
killed process still loses nothing committed; only a power loss could cost the newest writes.
On a real device keep the default (`synchronous=FULL`): the privacy account's charge must be
on disk before an update leaves (`fedrec.client.budget`).

The schema is plain SQL, versioned by `PRAGMA user_version` (`SCHEMA_VERSION`), so an auditor
can read a device's account and ledger with `sqlite3` alone:

    interactions(seq, item, timestamp)     the user's history; order = (timestamp, seq)
    catalog(name, num_items, dim, digest, embeddings)   (n, d) float32, public
    head(round, model_config, digest, arrays)           newest global head (safetensors)
    personal(round, state)                 personal state per round (safetensors)
    account(state)                         the privacy account (JSON, `PrivacyAccount`)
    releases(seq, line)                    the device ledger (JSON, `fedrec.common.privacy.Release`)
    identity(pseudonym)
    cache(name, key, personal, value)      derived arrays; `personal` = derived from user data

"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from fedrec.client.budget import digest
from fedrec.common.errors import FedrecError
from fedrec.common.privacy import LEDGER_KEYS

SCHEMA_VERSION = 1
STORE_FILE = "device.sqlite"
_SQLITE_HEADER = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE interactions (seq INTEGER PRIMARY KEY AUTOINCREMENT, item INTEGER NOT NULL,
                           timestamp REAL NOT NULL);
CREATE INDEX interactions_by_time ON interactions (timestamp, seq);
CREATE INDEX interactions_by_item ON interactions (item);
CREATE TABLE catalog (only INTEGER PRIMARY KEY CHECK (only = 0), name TEXT NOT NULL,
                      num_items INTEGER NOT NULL, dim INTEGER NOT NULL, digest TEXT NOT NULL,
                      embeddings BLOB NOT NULL);
CREATE TABLE head (only INTEGER PRIMARY KEY CHECK (only = 0), round INTEGER NOT NULL,
                   model_config TEXT NOT NULL, digest TEXT NOT NULL, arrays BLOB NOT NULL);
CREATE TABLE personal (round INTEGER PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE account (only INTEGER PRIMARY KEY CHECK (only = 0), state TEXT NOT NULL);
CREATE TABLE releases (seq INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL);
CREATE TABLE identity (only INTEGER PRIMARY KEY CHECK (only = 0), pseudonym TEXT NOT NULL);
CREATE TABLE cache (name TEXT PRIMARY KEY, key TEXT NOT NULL, personal INTEGER NOT NULL,
                    value BLOB NOT NULL);
"""


class StoreError(FedrecError):
    """A device store file that cannot be used as one (the message names the file)."""


class StoreVersionError(StoreError):
    """A device store written by a newer fedrec (a newer schema version)."""


class NoHead(FedrecError):
    """The device has no global head (or no catalog) yet, so it cannot recommend."""


def default_path() -> Path:
    """Where a device keeps its store unless told otherwise: the user's app data directory."""
    import platformdirs  # small, but only needed when no path is given

    return Path(platformdirs.user_data_dir("fedrec")) / STORE_FILE


@dataclass(frozen=True)
class Head:
    """The newest global head the device received: its round, its shared arrays (wire order),
    the model config they belong to (`ModelConfig` fields) and their digest."""

    round: int
    arrays: list[np.ndarray]
    model_config: dict
    digest: str


class DeviceStore:
    """The store at `path` (a file; created with its schema when missing, unless `create` is
    False). Several `DeviceStore` objects, in one process or several, may use one file: SQLite
    serializes their writes (each waits up to `timeout` seconds for the others)."""

    def __init__(self, path: str | Path | None = None, fsync: bool = True, create: bool = True,
                 timeout: float = 30.0):
        self.path = Path(path) if path is not None else default_path()
        self.fsync, self.timeout = fsync, timeout
        if not self.path.exists() and not create:
            raise StoreError(f"{self.path}: no device store there")
        _check_header(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                   check_same_thread=False)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path}: not a usable device store ({exc})") from None
        except BaseException:
            self._db.close()
            raise
        self.personal = PersonalVersions(self)

    def _open(self) -> None:
        self._check_version(self._version())
        self._switch_to_wal()
        self._db.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'OFF'}")
        self._db.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not freed
        if self._version() == 0:
            with self.transaction():
                version = self._version()  # another process may have created it meanwhile
                if version == 0:
                    tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                    if tables:
                        raise StoreError(f"{self.path}: an SQLite database, but not a fedrec "
                                         "device store")
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                else:
                    self._check_version(version)

    def _switch_to_wal(self) -> None:
        """Write-ahead logging. Switching the journal mode takes an exclusive lock and SQLite
        does not wait for it (no busy handler): retry while another connection holds the
        file, e.g. two processes opening a new store at once, up to the store's timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"{self.path}: device store schema version {version} is newer than this "
                f"fedrec's (version {SCHEMA_VERSION}); upgrade fedrec to open it")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DeviceStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all (an exception
        rolls it back). Nested uses join the outermost one."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls some errors back by itself
                    self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- interactions (private) -------------------------------------------------------------
    def add_interaction(self, item: int, timestamp: float) -> None:
        """Record an interaction with catalog item `item` at `timestamp` (seconds)."""
        self.add_interactions([item], [timestamp])

    def add_interactions(self, items, timestamps) -> None:
        """Record several interactions at once (one transaction)."""
        rows = [(_item(i), _timestamp(t)) for i, t in zip(items, timestamps, strict=True)]
        with self.transaction() as db:
            db.executemany("INSERT INTO interactions (item, timestamp) VALUES (?, ?)", rows)

    def interactions(self) -> tuple[np.ndarray, np.ndarray]:
        """(items int64, timestamps float64) in time order; equal timestamps in the order they
        were added (the evaluation protocol's stable sort)."""
        rows = self._query("SELECT item, timestamp FROM interactions ORDER BY timestamp, seq")
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        items, stamps = zip(*rows)
        return np.array(items, np.int64), np.array(stamps, np.float64)

    def forget(self, item: int) -> int:
        """Delete every interaction with `item`; returns how many. The personal state and the
        cached user vectors were fitted to it, so they go too (reconstruction rebuilds them
        from what is left). Updates already released cannot be recalled: what they reveal
        about the item is bounded by the DP guarantee they were released under."""
        with self.transaction() as db:
            deleted = db.execute("DELETE FROM interactions WHERE item = ?", (_item(item),)).rowcount
            if deleted:
                self._drop_personal(db)
        self._purge_journal()
        return deleted

    def forget_all(self) -> None:
        """The right to be forgotten: delete every interaction, the personal state and every
        cached vector derived from them. The privacy account and the ledger stay: the budget
        already spent keeps counting (updates that left the device were trained on the data,
        and forgetting must not let a device spend its budget twice). The catalog, the head
        and the pseudonym stay too (rotate it with `rotate_pseudonym` if wanted)."""
        with self.transaction() as db:
            db.execute("DELETE FROM interactions")
            self._drop_personal(db)
        self._purge_journal()

    def _drop_personal(self, db) -> None:
        db.execute("DELETE FROM personal")
        db.execute("DELETE FROM cache WHERE personal = 1")

    def _purge_journal(self) -> None:
        """After deleting something the user wants gone: copy the journal into the file and
        truncate it, so no old page image of the deleted rows stays in the WAL (the file's
        freed space is zeroed by `secure_delete`). Best effort while other connections read;
        inside an enclosing transaction it happens at the next deletion."""
        if not self._depth:
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def user_data(self):
        """The device's data as training wants it (`fedrec.client.local.UserData`): its own
        sequence split by the evaluation protocol's rule (`fedrec.common.split.leave_one_out`:
        last item = test, one before = validation, the rest training; fewer than 3
        interactions: all training, no held-out items). No cold-item split; no profile."""
        # the training side's types pull torch and pandas: imported only when training asks
        from fedrec.client.local import UserData
        from fedrec.common.data.dataset import Dataset
        from fedrec.common.split import leave_one_out

        items, stamps = self.interactions()
        num_items = self.catalog_size or (int(items.max()) + 1 if len(items) else 0)
        one_user = Dataset("device", np.arange(num_items), [""] * num_items, np.array(["device"]),
                           np.zeros(len(items), np.int64), items, stamps)
        split = leave_one_out(one_user, cold_fraction=0.0)
        return UserData(np.asarray(split.train_sequences[0], np.int64), int(split.valid_items[0]),
                        int(split.test_items[0]), {})

    # --- catalog (public) -------------------------------------------------------------------
    def set_catalog(self, embeddings: np.ndarray, name: str) -> None:
        """Install the catalog's frozen text embeddings, (n_items, d), replacing any other.
        Item ids are row indices."""
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or not len(embeddings) or not np.isfinite(embeddings).all():
            raise ValueError(f"catalog embeddings must be a finite (n_items, d) array, got "
                             f"shape {embeddings.shape}")
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO catalog VALUES (0, ?, ?, ?, ?, ?)",
                       (str(name), len(embeddings), embeddings.shape[1], digest([embeddings]),
                        embeddings.tobytes()))

    def catalog(self) -> np.ndarray | None:
        """(n_items, d) float32, or None before a catalog is installed."""
        rows = self._query("SELECT num_items, dim, embeddings FROM catalog")
        if not rows:
            return None
        n, d, blob = rows[0]
        return np.frombuffer(bytearray(blob), np.float32).reshape(n, d)  # a writable copy

    def _catalog_field(self, column: str):
        rows = self._query(f"SELECT {column} FROM catalog")
        return rows[0][0] if rows else None

    @property
    def catalog_name(self) -> str | None:
        return self._catalog_field("name")

    @property
    def catalog_size(self) -> int | None:
        """Number of items of the installed catalog (None: none installed)."""
        return self._catalog_field("num_items")

    @property
    def catalog_digest(self) -> str | None:
        return self._catalog_field("digest")

    # --- the global head --------------------------------------------------------------------
    def save_head(self, round_: int, arrays: list[np.ndarray], model_config: dict) -> None:
        """Keep `arrays` (the shared head after round `round_`) as the newest head. Its digest
        covers the arrays and the model config."""
        arrays = [np.asarray(a, np.float32) for a in arrays]
        config = json.dumps(dict(model_config), sort_keys=True)
        head_digest = digest([*arrays, np.frombuffer(config.encode(), np.uint8)])
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO head VALUES (0, ?, ?, ?, ?)",
                       (int(round_), config, head_digest,
                        _encode({f"{i:04d}": a for i, a in enumerate(arrays)})))

    def head(self) -> Head | None:
        rows = self._query("SELECT round, model_config, digest, arrays FROM head")
        if not rows:
            return None
        round_, config, head_digest, blob = rows[0]
        arrays = _decode(blob)
        return Head(round_, [arrays[k] for k in sorted(arrays)], json.loads(config), head_digest)

    @property
    def head_digest(self) -> str | None:
        """The digest of the newest head, without reading its arrays."""
        rows = self._query("SELECT digest FROM head")
        return rows[0][0] if rows else None

    # --- caches (derived, safe to drop) -----------------------------------------------------
    def put_cached(self, name: str, key: str, arrays: dict[str, np.ndarray],
                   personal: bool) -> None:
        """Cache `arrays` under `name` (one entry per name: the newest `key` wins). `personal`:
        derived from the user's data, so `forget` and `forget_all` delete it."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)",
                       (name, key, int(personal), _encode(arrays)))

    def cached_key(self, name: str) -> str | None:
        """The key of what is cached under `name` (None: nothing), without reading it."""
        rows = self._query("SELECT key FROM cache WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def cached(self, name: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays cached under `name` if they were computed for `key`, else None."""
        rows = self._query("SELECT value FROM cache WHERE name = ? AND key = ?", (name, key))
        return _decode(rows[0][0]) if rows else None

    # --- privacy account and ledger ---------------------------------------------------------
    def read_account(self) -> dict | None:
        rows = self._query("SELECT state FROM account")
        return json.loads(rows[0][0]) if rows else None

    def write_account(self, state: dict) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO account VALUES (0, ?)", (json.dumps(state),))

    def append_release(self, line) -> None:
        """Append one release (a `fedrec.common.privacy.Release` or its dict) to the device's
        own ledger."""
        line = asdict(line) if is_dataclass(line) else dict(line)
        missing = [k for k in LEDGER_KEYS if k not in line]
        if missing:
            raise ValueError(f"a ledger line needs {list(LEDGER_KEYS)}; missing {missing}")
        with self.transaction() as db:
            db.execute("INSERT INTO releases (line) VALUES (?)", (json.dumps(line),))

    def releases(self) -> list[dict]:
        """The device's ledger lines, oldest first."""
        return [json.loads(line) for (line,) in
                self._query("SELECT line FROM releases ORDER BY seq")]

    # --- identity ---------------------------------------------------------------------------
    def pseudonym(self) -> str:
        """This device's pseudonym ("c-" + 16 random hex digits), created on first use.

        It is the only name a device ever uses off the device (ledger lines, logs). It is not
        derived from the user id, so nothing maps it back to a user except this store on the
        device itself."""
        rows = self._query("SELECT pseudonym FROM identity")
        if rows:
            return rows[0][0]
        with self.transaction() as db:  # two stores opening at once agree on one name
            rows = db.execute("SELECT pseudonym FROM identity").fetchall()
            return rows[0][0] if rows else self.rotate_pseudonym()

    def rotate_pseudonym(self) -> str:
        """Replace the pseudonym with a fresh random one (e.g. when the user asks, or on a
        schedule an app chooses); returns it. The old one is not kept anywhere, and later
        ledger lines carry the new name. The privacy account is not touched, so the budget
        keeps counting across rotations — and the cumulative ε in the next ledger line shows
        a reader that the new name continues some earlier device."""
        name = "c-" + secrets.token_hex(8)
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO identity VALUES (0, ?)", (name,))
        self._purge_journal()
        return name


class PersonalVersions:
    """The personal state in a `DeviceStore` (`store.personal`), versioned by round, so that a
    device resumed after a server crash continues from the state that matches the server's
    last checkpoint. A change drops the cached user vectors (they may have started from the
    state that changed)."""

    def __init__(self, store: DeviceStore):
        self.store = store

    def versions(self) -> list[int]:
        return [r for (r,) in self.store._query("SELECT round FROM personal ORDER BY round")]

    def load(self, before_round: int) -> dict[str, np.ndarray] | None:
        """The newest state saved in a round < `before_round`, or None (a new client)."""
        rows = self.store._query("SELECT state FROM personal WHERE round < ? ORDER BY round DESC "
                                 "LIMIT 1", (int(before_round),))
        return _decode(rows[0][0]) if rows else None

    def save(self, round_: int, state: dict[str, np.ndarray], keep_from: int = 0) -> None:
        """Save the state after `round_`; prune versions not needed to resume at `keep_from`
        (the server's last checkpoint round): everything older than the newest version <=
        `keep_from` goes, and so does any stale version > `round_` from a crashed run."""
        round_ = int(round_)
        with self.store.transaction() as db:
            db.execute("INSERT OR REPLACE INTO personal VALUES (?, ?)", (round_, _encode(state)))
            base = db.execute("SELECT max(round) FROM personal WHERE round <= ?",
                              (int(keep_from),)).fetchone()[0]
            if base is not None:
                db.execute("DELETE FROM personal WHERE round < ?", (base,))
            db.execute("DELETE FROM personal WHERE round > ?", (round_,))
            db.execute("DELETE FROM cache WHERE personal = 1")

    def discard_after(self, round_: int) -> None:
        """Delete versions saved after `round_` (a resumed run redoes those rounds)."""
        with self.store.transaction() as db:
            if db.execute("DELETE FROM personal WHERE round > ?", (int(round_),)).rowcount:
                db.execute("DELETE FROM cache WHERE personal = 1")


def _check_header(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    if path.is_dir():
        raise StoreError(f"{path}: a directory, not a device store file")
    with open(path, "rb") as fh:
        if fh.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
            raise StoreError(f"{path}: not a fedrec device store (not an SQLite database)")


def _item(item) -> int:
    if isinstance(item, bool) or not isinstance(item, (int, np.integer)) or item < 0:
        raise ValueError(f"an item id is a non-negative integer, got {item!r}")
    return int(item)


def _timestamp(timestamp) -> float:
    t = float(timestamp)
    if not math.isfinite(t):
        raise ValueError(f"a timestamp is a finite number, got {timestamp!r}")
    return t


def _encode(arrays: dict[str, np.ndarray]) -> bytes:
    return save_arrays({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def _decode(blob: bytes) -> dict[str, np.ndarray]:
    return load_arrays(bytes(blob))
