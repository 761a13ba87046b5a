"""The receipt log: a hash chain of signed receipts in SQLite (WAL), appended by every API worker.

Chaining needs one order: each receipt carries the hash of the one before it, so reading the tail
and appending must be one atomic step across all gunicorn workers. We do it in the workers (no
per-request round trip to the supervisor) inside `BEGIN IMMEDIATE`, which takes SQLite's write
lock. In front of it sits a kernel lock (`flock` on a lock file beside the database, plus a thread
lock in the process), because SQLite's own busy handler polls with sleeps of 1 ms and more: under
contention that adds milliseconds to every request, whereas a blocked `flock` wakes the moment the
holder releases it. The critical section is short: read the tail, sign, insert, commit.

Size is bounded: every `PRUNE_EVERY` appends, rows beyond `max_receipts` are deleted, oldest
first. A pruned chain still verifies from its first remaining receipt.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ReceiptStoreError

PRUNE_EVERY = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL,
    document BLOB NOT NULL
)
"""


@dataclass(frozen=True)
class SealedReceipt:
    """What the sealer returns: the receipt's own hash and its serialized, signed document."""

    hash: str
    document: bytes


# Given the previous receipt's hash (None for the first), builds and signs the next receipt.
Sealer = Callable[[str | None], SealedReceipt]


class ReceiptLog:
    """One per process; thread-safe. Opens its own SQLite connection per thread."""

    def __init__(self, path: Path, max_receipts: int) -> None:
        self._path = path
        self._max = max_receipts
        self._thread_lock = threading.Lock()
        self._local = threading.local()
        self._appends = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with self._exclusive():
            _owner_only(path)
            db = self._db()
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def append(self, receipt_id: str, seal: Sealer) -> SealedReceipt:
        """Seals the next receipt against the current tail and appends it, atomically."""
        with self._exclusive():
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute("SELECT hash FROM receipts ORDER BY seq DESC LIMIT 1").fetchone()
                sealed = seal(row[0] if row else None)
                db.execute(
                    "INSERT INTO receipts (id, hash, document) VALUES (?, ?, ?)",
                    (receipt_id, sealed.hash, sealed.document),
                )
                self._appends += 1
                if self._appends % PRUNE_EVERY == 0:
                    db.execute(
                        "DELETE FROM receipts WHERE seq <= (SELECT MAX(seq) FROM receipts) - ?",
                        (self._max,),
                    )
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise ReceiptStoreError(f"cannot append receipt {receipt_id}: {exc}") from exc
                raise
        return sealed

    def get(self, receipt_id: str) -> bytes | None:
        try:
            row = self._db().execute(
                "SELECT document FROM receipts WHERE id = ?", (receipt_id,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise ReceiptStoreError(f"cannot read receipt {receipt_id}: {exc}") from exc
        return bytes(row[0]) if row else None

    def tail(self, count: int) -> list[bytes]:
        """The last `count` receipts, oldest first (for chain checks and operators)."""
        rows = self._db().execute(
            "SELECT document FROM receipts ORDER BY seq DESC LIMIT ?", (count,)
        ).fetchall()
        return [bytes(row[0]) for row in reversed(rows)]

    def close(self) -> None:
        os.close(self._lock_fd)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE above).
            db = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, timeout=30
            )
            # WAL + NORMAL: a commit is durable once the WAL is checkpointed; a power cut can lose
            # the last receipts but never corrupt the chain.
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _exclusive(self) -> _Exclusive:
        return _Exclusive(self._thread_lock, self._lock_fd)


def _owner_only(path: Path) -> None:
    # Whatever the umask: the receipts name the tenant's request hashes and usage. SQLite gives
    # its -wal and -shm files the database file's mode, so creating (or narrowing) it first
    # covers all three.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class _Exclusive:
    def __init__(self, thread_lock: threading.Lock, fd: int) -> None:
        self._thread_lock = thread_lock
        self._fd = fd

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, *exc_info: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()
