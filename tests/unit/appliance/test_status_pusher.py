"""The status pusher against a real local HTTP receiver that fails for a while."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from support.push_receiver import PushReceiver

from appliance.metrics import Metrics
from appliance.supervisor.pusher import PUSH_PATH, Backoff, StatusPusher


@pytest.fixture
def receiver():
    r = PushReceiver()
    yield r
    r.close()


def make_pusher(url: str, interval: float = 60.0) -> tuple[StatusPusher, Metrics]:
    metrics = Metrics(CollectorRegistry())
    pusher = StatusPusher(
        management_url=url, token="mgmt-token", enclave_id="enclave-7", interval=interval,
        sign=lambda payload: {"payload": payload, "signature": "00"},
        clock=lambda: datetime(2025, 1, 2, tzinfo=UTC), metrics=metrics,
        backoff=Backoff(initial=0.02, maximum=0.1), rng=random.Random(1),
    )
    return pusher, metrics


def test_a_state_change_is_pushed_at_once_with_token_and_signature(receiver: PushReceiver) -> None:
    pusher, metrics = make_pusher(receiver.url)
    pusher.start()
    pusher.notify({"proxy_status": "loading", "loaded_model": None})
    receiver.wait_for(1)
    pusher.notify({"proxy_status": "ready", "loaded_model": "tiny"})
    receiver.wait_for(2)
    pusher.stop()
    path, auth, document = receiver.received[1]
    assert path == PUSH_PATH and auth == "Bearer mgmt-token"
    assert document["payload"]["proxy_status"] == "ready"
    assert document["payload"]["enclave_id"] == "enclave-7"
    assert document["payload"]["time"] == "2025-01-02T00:00:00+00:00"
    assert metrics.pushes._value.get() == 2


def test_failures_are_retried_with_backoff_and_pushes_resume(receiver: PushReceiver) -> None:
    receiver.fail_first = 3
    pusher, metrics = make_pusher(receiver.url)
    pusher.start()
    pusher.notify({"proxy_status": "idle"})
    receiver.wait_for(1)
    pusher.stop()
    assert receiver.calls == 4
    assert metrics.push_failures._value.get() == 3


def test_periodic_pushes_without_changes(receiver: PushReceiver) -> None:
    pusher, _ = make_pusher(receiver.url, interval=0.05)
    pusher.start()
    pusher.notify({"proxy_status": "idle"})
    receiver.wait_for(3)
    pusher.stop()
    sequences = [doc["payload"]["sequence"] for _, _, doc in receiver.received]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


def test_latest_state_wins_while_the_plane_is_down() -> None:
    pusher, metrics = make_pusher("http://127.0.0.1:9")  # discard port: nothing listens
    pusher.start()
    for state in ("loading", "ready", "unloading", "idle"):
        pusher.notify({"proxy_status": state})  # never blocks, whatever the plane does
    time.sleep(0.3)
    pusher.stop()
    assert metrics.push_failures._value.get() >= 2
    assert pusher._latest == {"proxy_status": "idle"}


def test_backoff_is_bounded_full_jitter() -> None:
    backoff = Backoff(initial=1, factor=2, maximum=8)
    rng = random.Random(0)
    delays = [backoff.delay(attempt, rng) for attempt in range(10) for _ in range(50)]
    assert all(0 <= d <= 8 for d in delays)
    assert max(backoff.delay(0, rng) for _ in range(100)) <= 1
