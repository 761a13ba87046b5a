"""Collateral fetching from Intel's PCS or a PCCS (API v4), with an on-disk cache.

`PcsClient` makes the four requests a TDX quote's collateral needs and hands back the raw
responses; `CollateralFetcher` serves each part from a `CollateralCache` while it is valid at the
injected time (before its nextUpdate), fetches only what is missing or stale, assembles the
collateral with `attest.collateral_load.collateral_from_pcs_responses`, and caches what it fetched.
In offline mode it never touches the network. Nothing fetched is trusted: `attest.verify` checks
every signature, chain and window later.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import quote as url_quote
from urllib.parse import unquote

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from attest.collateral import Collateral
from attest.collateral_load import collateral_from_pcs_responses
from attest.errors import (
    CollateralFormatError,
    CollateralUnavailableError,
    FormatError,
    HttpStatusError,
    HttpTransportError,
    ResponseTooLargeError,
)
from attest.http_get import bounded_get

logger = logging.getLogger(__name__)

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
DEFAULT_TIMEOUT_SECONDS = 10.0
# The largest document seen is a ~5 KB TCB info; anything far bigger is not collateral.
MAX_RESPONSE_SIZE = 1 << 20

TCB_INFO_CHAIN_HEADERS = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_IDENTITY_CHAIN_HEADERS = ("SGX-Enclave-Identity-Issuer-Chain",)
PCK_CRL_CHAIN_HEADERS = ("SGX-PCK-CRL-Issuer-Chain",)


class PckCa(enum.StrEnum):
    """Which CA issued the PCK certificate, and so which PCK CRL applies."""

    PLATFORM = "platform"
    PROCESSOR = "processor"


class Part(enum.StrEnum):
    TCB_INFO = "tcb-info"
    QE_IDENTITY = "qe-identity"
    PCK_CRL = "pck-crl"
    ROOT_CA_CRL = "root-ca-crl"


@dataclass(frozen=True)
class PcsEndpoint:
    """Where the collateral lives: Intel's PCS, or a PCCS with the same v4 paths."""

    base_url: str
    root_ca_crl_url: str

    @classmethod
    def intel(cls) -> PcsEndpoint:
        # Intel's PCS has no root CA CRL endpoint; the CRL sits at the root's distribution point.
        return cls(INTEL_PCS_URL, INTEL_ROOT_CA_CRL_URL)

    @classmethod
    def pccs(cls, base_url: str) -> PcsEndpoint:
        base = base_url.rstrip("/")
        return cls(base, f"{base}/sgx/certification/v4/rootcacrl")

    def tcb_info_url(self, fmspc: str) -> str:
        return f"{self.base_url}/tdx/certification/v4/tcb?fmspc={url_quote(fmspc)}"

    def qe_identity_url(self) -> str:
        return f"{self.base_url}/tdx/certification/v4/qe/identity"

    def pck_crl_url(self, ca: PckCa) -> str:
        return f"{self.base_url}/sgx/certification/v4/pckcrl?ca={ca.value}&encoding=der"


@dataclass(frozen=True)
class PcsResponse:
    """One response as received: body bytes and the URL-decoded issuer chain (if any)."""

    url: str
    body: bytes
    issuer_chain: str | None = None


class PcsClient:
    """HTTP client for the four collateral requests, with timeouts and a response size bound
    (`attest.http_get.bounded_get`).

    Network and HTTP failures raise CollateralUnavailableError naming the URL (and status).
    """

    def __init__(
        self,
        endpoint: PcsEndpoint | None = None,
        *,
        http: httpx.Client | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.endpoint = endpoint or PcsEndpoint.intel()
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True)

    def close(self) -> None:
        """Close the HTTP client if this object made it (a caller's client stays open)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def tcb_info(self, fmspc: str) -> PcsResponse:
        return self._get(self.endpoint.tcb_info_url(fmspc), TCB_INFO_CHAIN_HEADERS)

    def qe_identity(self) -> PcsResponse:
        return self._get(self.endpoint.qe_identity_url(), QE_IDENTITY_CHAIN_HEADERS)

    def pck_crl(self, ca: PckCa) -> PcsResponse:
        return self._get(self.endpoint.pck_crl_url(ca), PCK_CRL_CHAIN_HEADERS)

    def root_ca_crl(self) -> PcsResponse:
        return self._get(self.endpoint.root_ca_crl_url, ())

    def _get(self, url: str, chain_headers: tuple[str, ...]) -> PcsResponse:
        # The errors keep this client's wording and the plain CollateralUnavailableError type.
        try:
            response = bounded_get(self._http, url, max_size=MAX_RESPONSE_SIZE)
        except HttpStatusError as exc:
            raise CollateralUnavailableError(
                f"{url} answered HTTP {exc.status_code} ({exc.detail})",
                check="pcs http status",
                expected=200,
                actual=exc.status_code,
            ) from None
        except ResponseTooLargeError:
            raise CollateralUnavailableError(
                f"{url} sent more than {MAX_RESPONSE_SIZE} bytes", check="pcs response size"
            ) from None
        except HttpTransportError as exc:
            raise CollateralUnavailableError(
                f"cannot fetch {url}: {type(exc.error).__name__}: {exc.error}", check="pcs request"
            ) from exc.error
        chain = None
        if chain_headers:
            chain = next(
                (response.headers[h] for h in chain_headers if h in response.headers), None
            )
            if chain is None:
                raise CollateralUnavailableError(
                    f"{url} sent no issuer chain header",
                    check="pcs issuer chain header",
                    expected=" or ".join(chain_headers),
                    actual="absent",
                )
        return PcsResponse(url, response.body, None if chain is None else _decode_chain(url, chain))


def _decode_chain(url: str, value: str) -> str:
    """Issuer chains arrive URL-encoded (PEM with %20, %0A, ...)."""
    try:
        return unquote(value.strip(), errors="strict")
    except UnicodeDecodeError as exc:
        raise CollateralUnavailableError(
            f"{url} sent an issuer chain that does not URL-decode", check="pcs issuer chain header"
        ) from exc


# -- the cache ------------------------------------------------------------------------------


class _CacheEntryJson(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: int
    url: str
    fetched_at: AwareDatetime
    next_update: AwareDatetime
    issuer_chain: str | None
    body_base64: str


CACHE_FORMAT = 1


@dataclass(frozen=True)
class CachedResponse:
    response: PcsResponse
    fetched_at: dt.datetime
    next_update: dt.datetime

    def valid_at(self, now: dt.datetime) -> bool:
        return now < self.next_update


class CollateralCache:
    """Responses on disk, one JSON file per part, keyed by endpoint and FMSPC / CA.

    Writes are atomic (temporary file in the same directory, fsync, rename). A file that cannot
    be read back is treated as absent and logged: the data is re-fetched, never trusted blindly
    (verification checks it anyway).
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path(self, endpoint: PcsEndpoint, key: str) -> Path:
        # One subdirectory per endpoint, so that switching PCCS never mixes their answers.
        scope = hashlib.sha256(f"{endpoint.base_url}\n{endpoint.root_ca_crl_url}".encode())
        return self.directory / scope.hexdigest()[:16] / f"{key}.json"

    def load(self, endpoint: PcsEndpoint, key: str) -> CachedResponse | None:
        path = self.path(endpoint, key)
        try:
            entry = _CacheEntryJson.model_validate_json(path.read_bytes())
            if entry.format != CACHE_FORMAT:
                raise ValueError(f"cache format {entry.format}")
            body = base64.b64decode(entry.body_base64, validate=True)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, ValidationError) as exc:
            logger.warning("ignoring unreadable collateral cache entry %s: %s", path, exc)
            return None
        return CachedResponse(
            PcsResponse(entry.url, body, entry.issuer_chain), entry.fetched_at, entry.next_update
        )

    def store(self, endpoint: PcsEndpoint, key: str, cached: CachedResponse) -> None:
        path = self.path(endpoint, key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = _CacheEntryJson(
            format=CACHE_FORMAT,
            url=cached.response.url,
            fetched_at=cached.fetched_at,
            next_update=cached.next_update,
            issuer_chain=cached.response.issuer_chain,
            body_base64=base64.b64encode(cached.response.body).decode(),
        )
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(entry.model_dump_json().encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


# -- the fetcher ----------------------------------------------------------------------------


def cache_key(part: Part, *, fmspc: str, ca: PckCa) -> str:
    if part is Part.TCB_INFO:
        return f"{part.value}-{fmspc}"
    if part is Part.PCK_CRL:
        return f"{part.value}-{ca.value}"
    return part.value


class CollateralFetcher:
    """Collateral for (FMSPC, PCK CA) at an injected time: from the cache while it is valid,
    otherwise from the PCS; `offline=True` never uses the network."""

    def __init__(
        self,
        client: PcsClient | None = None,
        cache: CollateralCache | None = None,
        *,
        endpoint: PcsEndpoint | None = None,
        offline: bool = False,
    ) -> None:
        if client is None and not offline:
            client = PcsClient(endpoint)
        self._client = client
        self._endpoint = client.endpoint if client else (endpoint or PcsEndpoint.intel())
        self._cache = cache
        self._offline = offline

    def collateral(self, fmspc: str | bytes, ca: PckCa | str, *, now: dt.datetime) -> Collateral:
        """Collateral for a platform (FMSPC) whose PCK certificate `ca` issued, at `now`.

        Raises CollateralUnavailableError when it cannot be had (network, HTTP status, offline
        with a cold or stale cache, TCB info for another FMSPC) and CollateralFormatError when a
        response is not collateral. Signatures, chains and windows are `attest.verify`'s job.
        """
        fmspc, ca = _normalise_fmspc(fmspc), _pck_ca(ca)
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        keys = {part: cache_key(part, fmspc=fmspc, ca=ca) for part in Part}
        # 1. Whatever the cache holds that is still valid at `now`.
        cached: dict[Part, PcsResponse] = {}
        missing: dict[Part, str] = {}
        for part, key in keys.items():
            entry = self._cache.load(self._endpoint, key) if self._cache else None
            if entry is not None and entry.valid_at(now):
                cached[part] = entry.response
            else:
                missing[part] = "not cached" if entry is None else f"expired {entry.next_update}"
        # 2. Offline: what is missing cannot be had.
        if missing and self._offline:
            state = ", ".join(f"{part.value} {why}" for part, why in missing.items())
            raise CollateralUnavailableError(
                f"offline, and collateral for FMSPC {fmspc} ({ca.value} CA) is incomplete: {state}",
                check="collateral cache",
            )
        # 3. Fetch the rest, and assemble: a malformed response fails here, before caching.
        fetched = {part: self._fetch(part, fmspc, ca) for part in missing}
        try:
            collateral = assemble({**cached, **fetched})
        except CollateralFormatError:
            if not cached or self._offline:
                raise
            # A cache entry that no longer assembles (damaged on disk): start from scratch.
            logger.warning("cached collateral for FMSPC %s is unusable; fetching it again", fmspc)
            fetched = {part: self._fetch(part, fmspc, ca) for part in Part}
            collateral = assemble(fetched)
        served_fmspc = collateral.tcb_info.tcb_info.fmspc.hex()
        if served_fmspc != fmspc:
            raise CollateralUnavailableError(
                "the PCS served TCB info for another FMSPC",
                check="tcb info fmspc",
                expected=fmspc,
                actual=served_fmspc,
            )
        # 4. Cache what was fetched, each part until its own nextUpdate.
        if self._cache is not None:
            identity = collateral.identity
            next_updates = {
                Part.TCB_INFO: identity.tcb_info_next_update,
                Part.QE_IDENTITY: identity.qe_identity_next_update,
                Part.PCK_CRL: identity.pck_crl_next_update,
                Part.ROOT_CA_CRL: identity.root_ca_crl_next_update,
            }
            for part, response in fetched.items():
                entry = CachedResponse(response, now, next_updates[part])
                try:
                    self._cache.store(self._endpoint, keys[part], entry)
                except OSError as exc:
                    # The collateral is good; only the next call will have to fetch it again.
                    logger.warning(
                        "cannot cache %s in %s: %s", part.value, self._cache.directory, exc
                    )
        return collateral

    def _fetch(self, part: Part, fmspc: str, ca: PckCa) -> PcsResponse:
        if self._client is None:  # online mode always has a client
            raise AssertionError("online collateral fetch without a PCS client")
        logger.info("fetching %s for FMSPC %s from %s", part.value, fmspc, self._endpoint.base_url)
        if part is Part.TCB_INFO:
            return self._client.tcb_info(fmspc)
        if part is Part.QE_IDENTITY:
            return self._client.qe_identity()
        if part is Part.PCK_CRL:
            return self._client.pck_crl(ca)
        return self._client.root_ca_crl()


def assemble(responses: Mapping[Part, PcsResponse]) -> Collateral:
    """Collateral from one response per part (structure checked, signatures not)."""
    tcb, qe, pck, root = (responses[p] for p in Part)
    return collateral_from_pcs_responses(
        tcb_info_body=tcb.body,
        tcb_info_issuer_chain=tcb.issuer_chain or "",
        qe_identity_body=qe.body,
        qe_identity_issuer_chain=qe.issuer_chain or "",
        pck_crl=pck.body,
        pck_crl_issuer_chain=pck.issuer_chain or "",
        root_ca_crl=root.body,
    )


def _pck_ca(ca: PckCa | str) -> PckCa:
    try:
        return PckCa(ca)
    except ValueError:
        raise FormatError(
            "unknown PCK CA", check="pck ca", expected=[c.value for c in PckCa], actual=ca
        ) from None


def _normalise_fmspc(fmspc: str | bytes) -> str:
    text = fmspc.hex() if isinstance(fmspc, bytes) else fmspc.lower()
    if len(text) != 12 or any(c not in "0123456789abcdef" for c in text):
        raise FormatError("FMSPC must be 6 bytes (12 hex digits)", check="fmspc", actual=fmspc)
    return text
