"""The bounded GET shared by the PCS client and the appliance-collateral source (over an
httpx mock transport; the real servers are in tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from attest.errors import (
    CollateralUnavailableError,
    HttpStatusError,
    HttpTransportError,
    ResponseTooLargeError,
)
from attest.http_get import bounded_get

URL = "https://pccs.example/tdx/certification/v4/qe/identity"


def client(handler) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_a_200_body_and_headers_are_returned_and_request_headers_sent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        chain = {"SGX-Enclave-Identity-Issuer-Chain": "x"}
        return httpx.Response(200, content=b"{}", headers=chain)

    response = bounded_get(client(handler), URL, max_size=2, headers={"Accept": "application/json"})
    assert (response.url, response.body) == (URL, b"{}")
    assert response.headers["sgx-enclave-identity-issuer-chain"] == "x"
    assert seen[0].headers["Accept"] == "application/json"


def test_a_body_of_exactly_the_limit_passes_and_one_byte_more_fails() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 11)

    assert bounded_get(client(handler), URL, max_size=11).body == b"x" * 11
    with pytest.raises(ResponseTooLargeError) as caught:
        bounded_get(client(handler), URL, max_size=10)
    assert caught.value.max_size == 10
    assert isinstance(caught.value, CollateralUnavailableError)


def test_reading_stops_at_the_limit() -> None:
    sent: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            sent.append(1)
            yield b"x" * 1024

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=endless())

    with pytest.raises(ResponseTooLargeError):
        bounded_get(client(handler), URL, max_size=4096)
    assert len(sent) == 5


def test_the_status_is_checked_before_the_body_is_read() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = b"x" * 100  # larger than the limit: a status error must win
        return httpx.Response(503, content=body, headers={"Error-Message": "maintenance"})

    with pytest.raises(HttpStatusError) as caught:
        bounded_get(client(handler), URL, max_size=10)
    assert (caught.value.status_code, caught.value.detail) == (503, "maintenance")
    assert f"{URL} answered HTTP 503 (maintenance)" in str(caught.value)


def test_without_an_error_message_header_the_reason_phrase_is_the_detail() -> None:
    with pytest.raises(HttpStatusError) as caught:
        bounded_get(client(lambda request: httpx.Response(404)), URL, max_size=10)
    assert caught.value.detail == "Not Found"


def test_a_transport_failure_keeps_the_client_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(HttpTransportError) as caught:
        bounded_get(client(handler), URL, max_size=10)
    assert isinstance(caught.value.error, httpx.ConnectError)
    assert caught.value.__cause__ is caught.value.error
    assert f"cannot fetch {URL}: ConnectError: refused" in str(caught.value)
