"""The prediction cache: model outputs kept on each executor's local disk, keyed by the
image's bytes, so an unchanged image is never decoded and scored twice.

One SQLite database in WAL mode per cache directory (``$SQL_DL_CACHE/predictions``, on the
executor's machine), shared by every Python worker there: SQLite's locking keeps concurrent
workers from corrupting it, and WAL lets them read while one writes. A row's key is a keyed
BLAKE2b hash of the image's bytes, the key being the model's ``cache_key`` (its file's
content, the preprocessor, the code versions: see `sql_dl.driver.models`) and the layer; so a
rewritten image, a changed model file or a changed preprocessor finds no row, and can never
get a stale value. Each value carries a CRC-32: a row that fails it, or a file SQLite cannot
read, means the file is corrupt, and it is discarded and started afresh, never served.

The database is bounded: past the manifest's ``cache.max_size`` the least recently used rows
are deleted. Each worker process opens it once (`for_plan`) and keeps it open.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sqlite3
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sql_dl.executor.images import read_uri
from sql_dl.paths import cache_dir

__all__ = ["PredictionCache", "cache_path", "for_plan", "image_bytes", "shared"]

logger = logging.getLogger(__name__)

FILE_NAME = "outputs.sqlite3"
ROW_OVERHEAD = 64  # bytes a row costs beyond its key and value (page and index share)
EVICT_TO = 0.9  # eviction frees down to this fraction of the bound
SCHEMA_VERSION = 1  # PRAGMA user_version; a file of another version is started afresh
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    key BLOB PRIMARY KEY, model TEXT NOT NULL, value BLOB NOT NULL, crc INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS used (key BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_at ON used (at);
CREATE TABLE IF NOT EXISTS models (
    model TEXT PRIMARY KEY, name TEXT NOT NULL, hits INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (0, 0);
"""

_lock = threading.Lock()
_caches: dict[Path, PredictionCache] = {}


def cache_path() -> Path:
    """This machine's prediction cache file (under ``$SQL_DL_CACHE``, as models are)."""
    return cache_dir() / "predictions" / FILE_NAME


def for_plan(plan) -> PredictionCache | None:
    """The cache this process uses for ``plan`` (a `ModelPlan`), or None when its outputs
    are not cached."""
    if plan.cache_key is None:
        return None
    cache = shared(cache_path())
    cache.max_bytes = plan.cache_size
    return cache


def shared(path: Path) -> PredictionCache:
    """This process's `PredictionCache` of ``path``, opened on first use and kept."""
    with _lock:
        if path not in _caches:
            _caches[path] = PredictionCache(path)
        return _caches[path]


def image_bytes(value: Any) -> bytes | None:
    """The bytes an image input stands for: its encoded bytes, the file at a path, or a
    Spark image struct's pixels with their shape; None when unreadable (decoding then says
    why)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return read_uri(value)
        except OSError:
            return None
    if isinstance(value, dict):
        shape = [value.get(k) for k in ("height", "width", "nChannels", "mode")]
        return repr(shape).encode() + bytes(value["data"])
    return None


class PredictionCache:
    """One cache file, opened by this process. Every method is safe to call from several
    threads and several processes at once."""

    def __init__(self, path: Path, max_bytes: int = 1 << 30):
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._inode: int | None = None

    @staticmethod
    def keys(model_key: str, values: Sequence[Any]) -> list[bytes | None]:
        """Each value's row key for the output ``model_key`` names (a model and layer),
        None for NULL or unreadable values."""
        secret = hashlib.blake2b(model_key.encode(), digest_size=32).digest()
        keys: list[bytes | None] = []
        for value in values:
            data = None if value is None else image_bytes(value)
            keys.append(None if data is None else
                        hashlib.blake2b(data, digest_size=16, key=secret).digest())
        return keys

    def get(self, keys: Sequence[bytes | None], width: int) -> dict[bytes, np.ndarray]:
        """The cached outputs (float32 rows of ``width``) of the keys found."""
        wanted = sorted({k for k in keys if k is not None})
        if not wanted:
            return {}
        rows = self._run(lambda db: self._read(db, wanted), [])
        found: dict[bytes, np.ndarray] = {}
        for key, value, crc in rows:
            if zlib.crc32(value) != crc or len(value) != 4 * width:
                self._discard(f"corrupt: a stored output fails its checksum (key {key.hex()})")
                return {}
            found[key] = np.frombuffer(value, dtype=np.float32)
        return found

    def touch(self, model_key: str, name: str, keys: Sequence[bytes]) -> None:
        """Marks rows as just used and counts them as hits of the model."""
        if keys:
            self._run(lambda db: self._touch(db, model_key, name, keys), None)

    def put(self, model_key: str, name: str, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        """Stores outputs (evicting the least recently used rows past the bound)."""
        if items:
            self._run(lambda db: self._write(db, model_key, name, items), None)

    def stats(self) -> list[tuple[str, str, int, int, int]]:
        """``(host, model, entries, bytes, hits)`` per model name in this file."""
        rows = self._run(lambda db: db.execute(
            "SELECT m.name, count(o.key), coalesce(sum(length(o.key) + length(o.value)), 0), "
            "max(m.hits) FROM models m LEFT JOIN outputs o ON o.model = m.model "
            "GROUP BY m.name ORDER BY m.name").fetchall(), [])
        host = socket.gethostname()
        return [(host, name, entries, size, hits) for name, entries, size, hits in rows]

    def total_bytes(self) -> int:
        return self._run(lambda db: db.execute("SELECT bytes FROM totals").fetchone()[0], 0)

    @staticmethod
    def _read(db: sqlite3.Connection, keys: list[bytes]) -> list[tuple[bytes, bytes, int]]:
        marks = ",".join("?" * len(keys))
        return db.execute(f"SELECT key, value, crc FROM outputs WHERE key IN ({marks})",
                          keys).fetchall()

    @staticmethod
    def _touch(db: sqlite3.Connection, model_key: str, name: str, keys: Sequence[bytes]) -> None:
        marks = ",".join("?" * len(keys))
        with _transaction(db):
            db.execute(f"UPDATE used SET at = ? WHERE key IN ({marks})",
                       [time.time_ns(), *keys])
            db.execute("INSERT INTO models (model, name, hits) VALUES (?, ?, ?) ON CONFLICT "
                       "(model) DO UPDATE SET hits = hits + excluded.hits",
                       (model_key, name, len(keys)))

    def _write(self, db: sqlite3.Connection, model_key: str, name: str,
               items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        now = time.time_ns()
        with _transaction(db):
            db.execute("INSERT OR IGNORE INTO models (model, name) VALUES (?, ?)",
                       (model_key, name))
            added = 0
            for key, output in items:
                value = np.ascontiguousarray(output, dtype=np.float32).tobytes()
                inserted = db.execute("INSERT OR IGNORE INTO outputs VALUES (?, ?, ?, ?)",
                                      (key, model_key, value, zlib.crc32(value))).rowcount
                if inserted:
                    db.execute("INSERT OR REPLACE INTO used VALUES (?, ?)", (key, now))
                    added += len(key) + len(value) + ROW_OVERHEAD
            total = db.execute("UPDATE totals SET bytes = bytes + ? RETURNING bytes",
                               (added,)).fetchone()[0]
            if total > self.max_bytes:
                self._evict(db, total - int(self.max_bytes * EVICT_TO))

    @staticmethod
    def _evict(db: sqlite3.Connection, excess: int) -> None:
        """Deletes the least recently used rows that make up ``excess`` bytes."""
        freed, doomed = 0, []
        for key, size in db.execute("SELECT u.key, length(o.key) + length(o.value) FROM used u "
                                    "JOIN outputs o ON o.key = u.key ORDER BY u.at"):
            doomed.append(key)
            freed += size + ROW_OVERHEAD
            if freed >= excess:
                break
        db.executemany("DELETE FROM outputs WHERE key = ?", [(k,) for k in doomed])
        db.executemany("DELETE FROM used WHERE key = ?", [(k,) for k in doomed])
        db.execute("UPDATE totals SET bytes = max(0, bytes - ?)", (freed,))
        logger.debug("Prediction cache: evicted %d outputs (%d bytes)", len(doomed), freed)

    def _run(self, action, failed):
        """``action(connection)``; a file SQLite cannot read is discarded, and ``failed``
        returned (the caller then scores the images)."""
        with self._lock:
            try:
                return action(self._open())
            except sqlite3.DatabaseError as e:
                if type(e) is sqlite3.DatabaseError:  # not a database, malformed, ...
                    self._discard_locked(f"{type(e).__name__}: {e}")  # corrupt, or old
                else:  # locked past the timeout, disk full, ...
                    logger.warning("Prediction cache %s not used for this batch: %s: %s",
                                   self.path, type(e).__name__, e)
                return failed

    def _open(self) -> sqlite3.Connection:
        inode = _inode(self.path)
        if self._connection is not None and inode == self._inode:
            return self._connection
        self._close()  # another process discarded the file: open the new one
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                             check_same_thread=False)
        try:
            db.execute("PRAGMA page_size = 16384")  # a new file's: rows of 4 kB share pages
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA journal_size_limit = 16777216")  # the WAL, once checkpointed
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION and db.execute(
                    "SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                raise sqlite3.DatabaseError(f"a cache file of format {version}, not "
                                            f"{SCHEMA_VERSION}")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        self._connection, self._inode = db, _inode(self.path)
        return db

    def _discard(self, reason: str) -> None:
        with self._lock:
            self._discard_locked(reason)

    def _discard_locked(self, reason: str) -> None:
        logger.warning("Prediction cache %s cannot be used (%s): discarding it; the images are "
                       "scored again", self.path, reason)
        self._close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection = self._inode = None


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): writers queue on SQLite's
    lock instead of failing halfway."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, error, trace):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None
