"""The receipt log: one consistent hash chain with several processes and threads appending."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from appliance.errors import ReceiptStoreError
from appliance.worker.receipt_log import PRUNE_EVERY, ReceiptLog, SealedReceipt


def chained_sealer(receipt_id: str):
    def seal(previous: str | None) -> SealedReceipt:
        document = json.dumps({"id": receipt_id, "previous": previous}, sort_keys=True).encode()
        return SealedReceipt(hash=hashlib.sha256(document).hexdigest(), document=document)
    return seal


def append_many(path: str, prefix: str, count: int) -> None:
    log = ReceiptLog(Path(path), max_receipts=10_000)
    threads = [
        threading.Thread(target=lambda t=t: [
            log.append(f"{prefix}-{t}-{i}", chained_sealer(f"{prefix}-{t}-{i}"))
            for i in range(count)
        ])
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def assert_one_chain(documents: list[bytes]) -> None:
    previous = json.loads(documents[0])["previous"]
    for raw in documents:
        document = json.loads(raw)
        assert document["previous"] == previous, "chain broken"
        previous = hashlib.sha256(raw).hexdigest()


def test_processes_and_threads_append_to_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "receipts.sqlite3"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=append_many, args=(str(path), f"w{n}", 25)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    documents = ReceiptLog(path, max_receipts=10_000).tail(1000)
    assert len(documents) == 3 * 4 * 25
    assert json.loads(documents[0])["previous"] is None
    assert_one_chain(documents)


def test_get_returns_the_stored_bytes_and_none_for_unknown(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path / "r.sqlite3", max_receipts=10)
    sealed = log.append("a" * 32, chained_sealer("a"))
    assert log.get("a" * 32) == sealed.document
    assert log.get("b" * 32) is None


def test_the_log_is_bounded_and_the_rest_still_chains(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path / "r.sqlite3", max_receipts=100)
    for i in range(PRUNE_EVERY * 2):
        log.append(f"id{i}", chained_sealer(f"id{i}"))
    remaining = log.tail(10_000)
    assert len(remaining) == 100
    assert log.get("id0") is None
    assert_one_chain(remaining)


def test_a_failing_sealer_appends_nothing(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path / "r.sqlite3", max_receipts=10)
    log.append("first", chained_sealer("first"))

    def broken(previous: str | None) -> SealedReceipt:
        raise RuntimeError("signing failed")

    with pytest.raises(RuntimeError):
        log.append("second", broken)
    log.append("third", chained_sealer("third"))
    assert [json.loads(d)["id"] for d in log.tail(10)] == ["first", "third"]
    assert_one_chain(log.tail(10))


def test_duplicate_id_is_a_store_error(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path / "r.sqlite3", max_receipts=10)
    log.append("same", chained_sealer("same"))
    with pytest.raises(ReceiptStoreError, match="same"):
        log.append("same", chained_sealer("same"))
    assert len(log.tail(10)) == 1


def test_the_database_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    previous = os.umask(0)
    try:
        path = tmp_path / "receipts.sqlite3"
        path.touch(mode=0o666)  # an earlier, wider file is narrowed too
        log = ReceiptLog(path, max_receipts=10)
        log.append("r-1", chained_sealer("r-1"))
        files = [p for p in tmp_path.iterdir() if p.name.startswith("receipts.sqlite3")]
        assert {p.name for p in files} >= {"receipts.sqlite3", "receipts.sqlite3-wal"}
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name
        log.close()
    finally:
        os.umask(previous)
