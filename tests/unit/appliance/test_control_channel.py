"""The control channel over a real Unix socket: routing, error envelopes, permissions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.channel.control import ControlClient, ControlRequest, ControlServer
from appliance.channel.peer import PeerCredentials
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

    peers: list[PeerCredentials] = []

    def admit(peer: PeerCredentials) -> str | None:
        peers.append(peer)
        return None if peer.pid == os.getpid() else "not this test's process"

    path = tmp_path / "control.sock"
    server = ControlServer(path, {("POST", "/echo"): echo, ("GET", "/busy"): busy,
                                  ("GET", "/broken"): broken}, admit=admit)
    server.peers = peers
    server.start()
    yield ControlClient(path, timeout=5), server, seen
    server.stop()


def test_the_kernel_names_the_peer(channel) -> None:
    client, server, _ = channel
    client.call("POST", "/echo", {})
    assert server.peers == [PeerCredentials(pid=os.getpid(), uid=os.geteuid(), gid=os.getegid())]


def test_a_peer_that_is_not_admitted_gets_nothing(channel) -> None:
    _, server, seen = channel
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "try:\n"
        "    s.sendall(b'POST /echo HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 2\\r\\n\\r\\n{}')\n"
        "    print(repr(s.recv(100)))\n"
        "except (ConnectionResetError, BrokenPipeError):\n    print('reset')\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(server.socket_path)],
                         capture_output=True, text=True, timeout=30, check=True)
    assert run.stdout.strip() in ("b''", "reset")  # closed without an answer
    assert seen == []  # and without a route being run
    assert server.peers[-1].pid != os.getpid()


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
