"""The control channel over a real Unix socket: routing, error envelopes, permissions."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from appliance.channel.control import ControlClient, ControlRequest, ControlServer
from appliance.errors import ApiError, Conflict, NotFound, ServiceUnavailable


@pytest.fixture
def channel(tmp_path: Path):
    seen: list[ControlRequest] = []

    def echo(request: ControlRequest) -> tuple[int, dict]:
        seen.append(request)
        return 202, {"query": request.query, "body": request.body}

    def busy(request: ControlRequest) -> tuple[int, dict]:
        raise Conflict("a load is already running", code="lifecycle_busy")

    def broken(request: ControlRequest) -> tuple[int, dict]:
        raise RuntimeError("secret detail")

    path = tmp_path / "control.sock"
    server = ControlServer(path, {("POST", "/echo"): echo, ("GET", "/busy"): busy,
                                  ("GET", "/broken"): broken})
    server.start()
    yield ControlClient(path, timeout=5), server, seen
    server.stop()


def test_round_trip_with_query_and_body(channel) -> None:
    client, _, seen = channel
    assert client.call("POST", "/echo?nonce=ab", {"model": "m"}) == {"query": {"nonce": "ab"},
                                                                    "body": {"model": "m"}}
    assert seen[0].method == "POST"


def test_errors_cross_with_status_type_and_code(channel) -> None:
    client, _, _ = channel
    with pytest.raises(Conflict) as caught:
        client.call("GET", "/busy")
    assert caught.value.status == 409 and caught.value.code == "lifecycle_busy"
    with pytest.raises(NotFound):
        client.call("GET", "/nope")


def test_an_unexpected_failure_is_a_500_without_details(channel) -> None:
    client, _, _ = channel
    with pytest.raises(ApiError) as caught:
        client.call("GET", "/broken")
    assert caught.value.status == 500
    assert "secret" not in caught.value.message


def test_socket_is_private_to_the_owner(channel) -> None:
    _, server, _ = channel
    mode = stat.S_IMODE(server.socket_path.stat().st_mode)
    assert mode & 0o077 == 0, oct(mode)


def test_no_supervisor_is_a_503(tmp_path: Path) -> None:
    with pytest.raises(ServiceUnavailable, match="supervisor"):
        ControlClient(tmp_path / "absent.sock", timeout=1).call("GET", "/status")
