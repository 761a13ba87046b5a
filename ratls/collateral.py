"""Where a verifier gets DCAP collateral for a quote: a static bundle, Intel PCS/PCCS, or the
appliance itself.

Collateral is signed (TCB info and QE identity by the TCB signing key, CRLs by their CAs, all
chained to the trust root the verifier holds), so the transport it comes over needs no trust:
the appliance serving its own collateral keeps simulated mode working without Intel, and a
tampered answer fails DCAP verification, never passes it.
"""

from __future__ import annotations

import logging
import ssl
import threading
from datetime import datetime
from typing import Protocol

import httpx
from cryptography import x509

from attest.certs import load_pck_leaf
from attest.collateral import Collateral, pck_ca_of
from attest.collateral_load import collateral_from_bundle_json
from attest.errors import (
    AttestError,
    HttpStatusError,
    HttpTransportError,
    ResponseTooLargeError,
)
from attest.http_get import bounded_get
from attest.pck import pck_extension_of
from attest.quote import Quote
from ratls.errors import EvidenceUnavailableError

log = logging.getLogger(__name__)

COLLATERAL_PATH = "/v1/attestation/collateral"
# A bundle is ~15 KB; PCK CRLs can grow, but not to megabytes.
MAX_COLLATERAL_SIZE = 2 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 10.0


class CollateralSource(Protocol):
    """Collateral for `quote`'s platform, usable at `now` as far as the source can tell."""

    def collateral_for(self, quote: Quote, *, now: datetime) -> Collateral: ...


class PcsFetcher(Protocol):
    """`attest.pcs.CollateralFetcher`: PCS or PCCS, with its on-disk cache."""

    def collateral(self, fmspc: str | bytes, ca: str, *, now: datetime) -> Collateral: ...


def pck_leaf(quote: Quote) -> x509.Certificate:
    """The quote's PCK leaf; attest's CertificateError (check `pck_leaf`) when it is not one."""
    return load_pck_leaf(quote.pck_cert_chain[0])


def pck_fmspc(quote: Quote) -> str:
    """The FMSPC (hex) of the quote's platform, from its PCK leaf certificate."""
    return pck_extension_of(pck_leaf(quote)).fmspc.hex()


class StaticCollateral:
    """One collateral bundle for every quote (CLI `--collateral`, offline checks, tests)."""

    def __init__(self, collateral: Collateral) -> None:
        self._collateral = collateral

    def collateral_for(self, quote: Quote, *, now: datetime) -> Collateral:
        return self._collateral


class PcsCollateral:
    """Intel PCS or a PCCS, by the PCK certificate's FMSPC and CA."""

    def __init__(self, fetcher: PcsFetcher) -> None:
        self._fetcher = fetcher

    def collateral_for(self, quote: Quote, *, now: datetime) -> Collateral:
        return self._fetcher.collateral(pck_fmspc(quote), pck_ca_of(pck_leaf(quote)), now=now)


def _untrusted_transport_context() -> ssl.SSLContext:
    # Certificate checks off on purpose: collateral carries its own signatures (module docstring).
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class ServedCollateral:
    """`GET <base_url>/v1/attestation/collateral` on the appliance, over a separate connection.

    Keeps the last bundle while it is valid (until its earliest nextUpdate) and still matches
    the quote's FMSPC; a new fetch otherwise.
    """

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._url = base_url.rstrip("/").removesuffix("/v1") + COLLATERAL_PATH
        self._timeout = timeout
        self._lock = threading.Lock()
        self._cached: Collateral | None = None

    def collateral_for(self, quote: Quote, *, now: datetime) -> Collateral:
        fmspc = pck_fmspc(quote)
        with self._lock:
            cached = self._cached
            if cached is not None and _fits(cached, fmspc, now):
                return cached
            collateral = self._fetch()
            self._cached = collateral
            return collateral

    def _fetch(self) -> Collateral:
        try:
            with httpx.Client(
                verify=_untrusted_transport_context(), timeout=self._timeout
            ) as client:
                body = bounded_get(
                    client,
                    self._url,
                    max_size=MAX_COLLATERAL_SIZE,
                    headers={"Accept": "application/json"},
                ).body
        except HttpStatusError as exc:
            raise EvidenceUnavailableError(
                f"collateral request to {self._url} failed",
                check="http_status",
                expected=200,
                actual=exc.status_code,
            ) from None
        except ResponseTooLargeError:
            raise EvidenceUnavailableError(
                "collateral response too large",
                check="size",
                expected=f"<= {MAX_COLLATERAL_SIZE} bytes",
            ) from None
        except HttpTransportError as exc:
            raise EvidenceUnavailableError(
                f"collateral request to {self._url} failed: {exc.error}", check="transport"
            ) from exc.error
        try:
            collateral = collateral_from_bundle_json(body)
        except AttestError as exc:
            raise EvidenceUnavailableError(
                f"collateral from {self._url} is not a bundle: {exc}", check="bundle"
            ) from exc
        log.info("fetched collateral from %s (FMSPC %s)", self._url, collateral.identity.fmspc)
        return collateral


def earliest_next_update(collateral: Collateral) -> datetime:
    identity = collateral.identity
    return min(
        identity.tcb_info_next_update,
        identity.qe_identity_next_update,
        identity.pck_crl_next_update,
        identity.root_ca_crl_next_update,
    )


def _fits(collateral: Collateral, fmspc: str, now: datetime) -> bool:
    return collateral.identity.fmspc == fmspc and now < earliest_next_update(collateral)
