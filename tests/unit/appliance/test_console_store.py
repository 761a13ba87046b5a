"""The console's SQLite state: the replay check and the write are one step; refusals are counted
apart and change no status; the state survives a restart and is private to its owner."""

from __future__ import annotations

import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.console.errors import ReplayedPush
from appliance.console.store import AcceptedStatus, ConsoleStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def status(at: datetime, model: str = "m", enclave_id: str = "e-a") -> AcceptedStatus:
    return AcceptedStatus(enclave_id=enclave_id, pushed_at=at, received_at=at, sequence=1,
                          certificate_sha256="ab" * 32, payload={"loaded_model": model},
                          attestation={"verified": True})


def test_racing_pushes_of_one_time_are_accepted_once(tmp_path: Path) -> None:
    path = tmp_path / "console.db"
    stores = [ConsoleStore(path) for _ in range(2)]  # two workers' views of one file
    outcomes: list[str] = []
    start = threading.Barrier(16)

    def push(index: int) -> None:
        start.wait()
        try:
            stores[index % 2].accept(status(T0, model=f"m{index}"))
            outcomes.append("accepted")
        except ReplayedPush:
            outcomes.append("replayed")

    threads = [threading.Thread(target=push, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["accepted"] + ["replayed"] * 15
    assert stores[0].statuses()["e-a"].pushes_accepted == 1


def test_a_refused_push_changes_no_status(tmp_path: Path) -> None:
    store = ConsoleStore(tmp_path / "console.db")
    store.accept(status(T0 + timedelta(seconds=2)))
    before = store.statuses()
    with pytest.raises(ReplayedPush, match="not later"):
        store.accept(status(T0 + timedelta(seconds=1), model="older"))
    with pytest.raises(ReplayedPush):
        store.accept(status(T0 + timedelta(seconds=2), model="same time"))
    store.count_refusal(enclave_id="e-a", reason="bad_signature", check="signature",
                        message="x" * 5000, at=T0)
    store.count_refusal(enclave_id="e-a", reason="bad_signature", check="signature",
                        message="again", at=T0 + timedelta(seconds=3))
    store.count_refusal(enclave_id=None, reason="invalid_token", check=None, message="m", at=T0)
    assert store.statuses() == before
    tallies = {(t.enclave_id, t.reason): t for t in store.refusals()}
    assert tallies["e-a", "bad_signature"].count == 2
    assert tallies["e-a", "bad_signature"].last_message == "again"
    assert tallies["", "invalid_token"].count == 1
    # Later is accepted; the state survives a new store on the same file.
    store.accept(status(T0 + timedelta(seconds=3), model="newer"))
    reopened = ConsoleStore(tmp_path / "console.db").statuses()["e-a"]
    assert reopened.payload == {"loaded_model": "newer"} and reopened.pushes_accepted == 2


def test_the_database_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "console.db"
    ConsoleStore(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
