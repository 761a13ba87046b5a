"""What one client can hold of the real service (`appliance serve`, one worker, real TLS on a port):
a connection that never finishes its handshake or its request head, a body that stops, a stream
nobody reads, and connections over the worker's cap. Each is closed within its deadline plus
slack (a behaviour check with generous bounds, not a benchmark)."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.service import Service, pack_model, start_service, wait_for_status
from support.verifying import verifying_client

pytestmark = pytest.mark.slow

MODEL = "tiny"
HEAD_TIMEOUT = BODY_TIMEOUT = SEND_TIMEOUT = 2.0
MAX_CONNECTIONS = 4
SLACK = 5.0


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    work: Path = tmp_path_factory.mktemp("limits")
    models, roothash, _digest = pack_model(work, MODEL, {"config.json": '{"kind": "tiny"}'})
    service = start_service(work, models, roothash, args=[
        "--workers", "1", "--request-head-timeout", str(HEAD_TIMEOUT),
        "--request-body-timeout", str(BODY_TIMEOUT), "--response-send-timeout", str(SEND_TIMEOUT),
        "--max-connections", str(MAX_CONNECTIONS), "--engine-arg=--max-model-len=100000",
    ])
    with verifying_client(service) as operator:
        load = operator.http.post("/v1/models/load", json={"model": MODEL}, headers=service.auth())
        assert load.status_code == 202, load.text
        wait_for_status(operator.http, lambda s: s["proxy_status"] == "ready")
    yield service
    assert service.stop() == 0, service.log()[-3000:]


def connect(service: Service, *, tls: bool = True, receive_buffer: int | None = None):
    """A connection to the service (TLS without checks: the deadlines are not about trust)."""
    raw = socket.socket()
    if receive_buffer is not None:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    raw.settimeout(30)
    raw.connect(("127.0.0.1", service.port))
    if not tls:
        return raw
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(raw, server_hostname="localhost")


def seconds_until_closed(connection: socket.socket, limit: float) -> float:
    """Reads (and drops) what the server sends until it closes the connection."""
    started = time.monotonic()
    connection.settimeout(limit)
    try:
        while connection.recv(65536):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass  # an abort: a reset, or TLS without close_notify
    except TimeoutError:
        raise AssertionError(f"the connection is still open after {limit} s") from None
    finally:
        connection.close()
    return time.monotonic() - started


def response_head(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status and headers of the next response (and the body bytes read with them)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"closed before a response head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def whole_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    status, headers, body = response_head(connection)
    while len(body) < int(headers["content-length"]):
        body += connection.recv(65536)
    return status, headers, body


def get_healthz(connection: socket.socket) -> int:
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    return whole_response(connection)[0]


def get_json(service: Service, path: str) -> tuple[int, dict]:
    connection = connect(service)
    connection.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path.encode())
    status, _, body = whole_response(connection)
    connection.close()
    return status, json.loads(body)


def test_a_connection_that_never_starts_tls_is_closed(service: Service) -> None:
    elapsed = seconds_until_closed(connect(service, tls=False), HEAD_TIMEOUT + SLACK)
    assert elapsed > HEAD_TIMEOUT / 2  # the deadline, not a refusal


def test_a_tls_connection_that_sends_nothing_is_closed(service: Service) -> None:
    elapsed = seconds_until_closed(connect(service), HEAD_TIMEOUT + SLACK)
    assert elapsed > HEAD_TIMEOUT / 2


def test_a_request_head_sent_byte_by_byte_is_cut_at_the_head_deadline(service: Service) -> None:
    connection = connect(service)
    started = time.monotonic()
    connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    try:
        while time.monotonic() - started < HEAD_TIMEOUT + SLACK:
            connection.sendall(b"a")  # one header byte every 0.5 s: never a complete head
            time.sleep(0.5)
    except OSError:
        pass  # closed under our feet: what the test wants
    seconds_until_closed(connection, 1.0)
    assert time.monotonic() - started < HEAD_TIMEOUT + SLACK


def test_a_body_that_stops_is_cut_at_the_body_deadline(service: Service) -> None:
    connection = connect(service)
    connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                       b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                       b'{"model": ')  # 10 of the 100 bytes
    elapsed = seconds_until_closed(connection, BODY_TIMEOUT + SLACK)
    assert elapsed > BODY_TIMEOUT / 2


def test_a_kept_alive_connection_may_idle_past_the_head_deadline(service: Service) -> None:
    connection = connect(service)
    assert get_healthz(connection) == 200
    time.sleep(HEAD_TIMEOUT + 1)  # idle between requests: the keep-alive timeout governs
    assert get_healthz(connection) == 200
    connection.close()


def test_a_stream_nobody_reads_is_dropped_and_receipted_client_disconnected(
        service: Service) -> None:
    body = json.dumps({"model": MODEL, "prompt": "p", "max_tokens": 60000, "stream": True})
    connection = connect(service, receive_buffer=16 * 1024)
    connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(body), body.encode()))
    status, headers, _ = response_head(connection)
    assert status == 200
    stalled = time.monotonic()  # from here on, this client reads nothing
    receipt_url = f"/v1/receipts/{headers['x-receipt-id']}"
    while (answer := get_json(service, receipt_url))[0] == 404:
        assert time.monotonic() - stalled < SEND_TIMEOUT + 2 * SLACK, (
            "the stalled stream was never dropped")
        time.sleep(0.2)
    receipt = answer[1]
    assert (receipt["status"], receipt["outcome"]) == (200, "client_disconnected")
    seconds_until_closed(connection, SLACK)  # what was in flight, then the close


def test_connections_over_the_cap_get_503_and_are_closed(service: Service) -> None:
    held = [connect(service) for _ in range(MAX_CONNECTIONS)]
    try:
        over = connect(service)
        over.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, headers, body = whole_response(over)
        assert status == 503
        assert headers["connection"] == "close" and int(headers["retry-after"]) >= 1
        error = json.loads(body)["error"]
        assert error["code"] == "over_capacity" and set(error) == {"message", "type", "param",
                                                                   "code"}
        assert seconds_until_closed(over, SLACK) < SLACK
        # The connections within the cap are served.
        assert get_healthz(held[0]) == 200
    finally:
        for connection in held:
            connection.close()
    time.sleep(0.2)  # the worker sees them go
    fresh = connect(service)
    assert get_healthz(fresh) == 200
    fresh.close()
