"""The console's state in SQLite (WAL): each enclave's last accepted status, and refusal counts.

Only an accepted push writes `enclave_status`; the replay check (a push must be later than the
last accepted one) and the write are one `BEGIN IMMEDIATE` transaction, so two pushes racing in
two threads or workers cannot both pass it. Refusals are counted in their own table, per enclave
(`''` for pushes that name no registered enclave) and reason. One connection per call: a push
every few seconds per appliance needs no pool.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from appliance.console.errors import ReplayedPush, StateStoreError

UNATTRIBUTED = ""  # the enclave id refusals are counted under when the push names no known one
MAX_MESSAGE_CHARS = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS enclave_status (
        enclave_id TEXT PRIMARY KEY,
        pushed_at_us INTEGER NOT NULL,  -- the payload's time: the replay order
        pushed_at TEXT NOT NULL,
        received_at TEXT NOT NULL,      -- the console's clock
        sequence INTEGER,
        certificate_sha256 TEXT NOT NULL,
        payload TEXT NOT NULL,          -- JSON, as signed
        attestation TEXT NOT NULL,      -- the certificate's AttestationResult, JSON
        pushes_accepted INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS refusals (
        enclave_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        count INTEGER NOT NULL,
        last_at TEXT NOT NULL,
        last_check TEXT,
        last_message TEXT NOT NULL,
        PRIMARY KEY (enclave_id, reason)
    )""",
)


@dataclass(frozen=True)
class AcceptedStatus:
    enclave_id: str
    pushed_at: datetime
    received_at: datetime
    sequence: int | None
    certificate_sha256: str
    payload: Mapping[str, Any] = field(repr=False)
    attestation: Mapping[str, Any] = field(repr=False)
    pushes_accepted: int = 0  # as stored, including this one; 0 before it is stored


@dataclass(frozen=True)
class RefusalTally:
    enclave_id: str
    reason: str
    count: int
    last_at: datetime
    last_check: str | None
    last_message: str


def microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


class ConsoleStore:
    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 whatever the umask; SQLite gives its -wal and -shm files the same mode.
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                db.execute(statement)

    def accept(self, status: AcceptedStatus) -> AcceptedStatus:
        """Stores `status` unless it is not later than the enclave's last accepted push (then
        raises ReplayedPush and changes nothing). Returns it with its accepted count."""
        pushed_us = microseconds(status.pushed_at)
        with self._connection() as db:
            try:
                db.execute("BEGIN IMMEDIATE")
                row = db.execute(
                    "SELECT pushed_at_us, pushed_at, pushes_accepted FROM enclave_status "
                    "WHERE enclave_id = ?", (status.enclave_id,),
                ).fetchone()
                if row is not None and pushed_us <= row[0]:
                    raise ReplayedPush(
                        "the push is not later than the last accepted one", check="time",
                        param="payload.time", expected=f"later than {row[1]}",
                        actual=status.pushed_at.isoformat())
                count = (row[2] if row else 0) + 1
                db.execute(
                    "INSERT OR REPLACE INTO enclave_status VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (status.enclave_id, pushed_us, status.pushed_at.isoformat(),
                     status.received_at.isoformat(), status.sequence,
                     status.certificate_sha256, json.dumps(status.payload),
                     json.dumps(status.attestation), count),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return replace(status, pushes_accepted=count)

    def count_refusal(self, *, enclave_id: str | None, reason: str, check: str | None,
                      message: str, at: datetime) -> None:
        with self._connection() as db:
            db.execute(
                "INSERT INTO refusals VALUES (?, ?, 1, ?, ?, ?) "
                "ON CONFLICT (enclave_id, reason) DO UPDATE SET count = count + 1, "
                "last_at = excluded.last_at, last_check = excluded.last_check, "
                "last_message = excluded.last_message",
                (enclave_id or UNATTRIBUTED, reason, at.isoformat(), check,
                 message[:MAX_MESSAGE_CHARS]),
            )

    def statuses(self) -> dict[str, AcceptedStatus]:
        with self._connection() as db:
            rows = db.execute(
                "SELECT enclave_id, pushed_at, received_at, sequence, certificate_sha256, "
                "payload, attestation, pushes_accepted FROM enclave_status"
            ).fetchall()
        return {
            row[0]: AcceptedStatus(
                enclave_id=row[0], pushed_at=datetime.fromisoformat(row[1]),
                received_at=datetime.fromisoformat(row[2]), sequence=row[3],
                certificate_sha256=row[4], payload=json.loads(row[5]),
                attestation=json.loads(row[6]), pushes_accepted=row[7],
            )
            for row in rows
        }

    def refusals(self) -> list[RefusalTally]:
        with self._connection() as db:
            rows = db.execute(
                "SELECT enclave_id, reason, count, last_at, last_check, last_message "
                "FROM refusals ORDER BY enclave_id, reason"
            ).fetchall()
        return [RefusalTally(row[0], row[1], row[2], datetime.fromisoformat(row[3]), row[4],
                             row[5]) for row in rows]

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            # Autocommit: the one multi-statement change above opens its own transaction.
            db = sqlite3.connect(self._path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open {self._path}: {exc}") from exc
        try:
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        except sqlite3.Error as exc:
            raise StateStoreError(f"console state {self._path}: {exc}") from exc
        finally:
            db.close()
