"""One bounded HTTP GET for collateral: status 200 required, body read up to a size limit.

Used by `attest.pcs.PcsClient` (Intel PCS or a PCCS) and `ratls.collateral.ServedCollateral` (the
appliance's own collateral endpoint). The caller brings the `httpx.Client`, so timeouts, TLS and
redirects stay its own, and the limit, as it knows how large its documents may be. Failures
raise `HttpGetError` subclasses by cause (status, size, transport); callers with their own
wording translate them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from attest.errors import HttpStatusError, HttpTransportError, ResponseTooLargeError


@dataclass(frozen=True)
class BoundedResponse:
    """A 200 response: its headers and the whole body (at most the caller's limit)."""

    url: str
    headers: httpx.Headers
    body: bytes


def bounded_get(
    client: httpx.Client,
    url: str,
    *,
    max_size: int,
    headers: Mapping[str, str] | None = None,
) -> BoundedResponse:
    """GET `url`; raise unless the status is 200 and the body is at most `max_size` bytes.

    The status is checked before any of the body is read, and reading stops as soon as the body
    passes `max_size`, so a hostile server costs at most one chunk beyond the limit.
    """
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                # Intel's PCS explains its errors in an Error-Message header.
                detail = response.headers.get("Error-Message") or response.reason_phrase
                raise HttpStatusError(
                    f"{url} answered HTTP {response.status_code} ({detail})",
                    status_code=response.status_code,
                    detail=detail,
                    check="http status",
                    expected=200,
                    actual=response.status_code,
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body.extend(chunk)
                if len(body) > max_size:
                    raise ResponseTooLargeError(
                        f"{url} sent more than {max_size} bytes",
                        max_size=max_size,
                        check="response size",
                        expected=f"<= {max_size} bytes",
                    )
            return BoundedResponse(url, response.headers, bytes(body))
    except httpx.HTTPError as exc:
        raise HttpTransportError(
            f"cannot fetch {url}: {type(exc).__name__}: {exc}", error=exc, check="http request"
        ) from exc
