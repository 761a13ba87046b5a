"""The trust-domain services the supervisor uses: quotes, RTMR3 measurement, and collateral.

`--tee tdx`: configfs-tsm (falling back to libtdx_attest) for quotes, the sysfs or ioctl RTMR
interface, and collateral from Intel's PCS (or a PCCS) through an on-disk cache in the state
directory. `--tee simulated`: the simulated authority persisted in `<state-dir>/simulated/`
(created on first start, reused after, so clients can keep trusting its root), its in-memory
RTMRs, and collateral it signs itself. Nothing ever falls back from tdx to simulated.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from appliance.settings import Settings
from attest.collateral import Collateral
from attest.pck import pck_extension_of
from attest.pcs import CollateralCache, CollateralFetcher, PckCa, PcsEndpoint
from attest.providers import QuoteProvider, tdx_quote_provider, tdx_rtmr_extender
from attest.quote import parse_quote
from attest.rtmr import RtmrEvent, RtmrEventLog, RtmrExtender
from attest.simulated import SimulatedAuthority, SimulatedQuoteProvider, simulated_collateral
from ratls.profile import MODEL_EVENT_TYPE, MODEL_RTMR

log = logging.getLogger(__name__)

# Simulated collateral is re-signed this long before it expires.
_SIMULATED_REFRESH = timedelta(hours=1)


class TeeServices:
    def __init__(self, provider: QuoteProvider, extender: RtmrExtender,
                 collateral_source: CollateralSource) -> None:
        self.provider = provider
        self._extender = extender
        self._collateral = collateral_source
        self._event_log = RtmrEventLog()
        self._lock = threading.Lock()

    def measure_model(self, name: str, digest: bytes) -> None:
        """Extends RTMR3 with the model's root hash and records the event (description: name)."""
        event = RtmrEvent.from_data(MODEL_RTMR, MODEL_EVENT_TYPE, digest, description=name)
        with self._lock:
            self._event_log.measure(self._extender, event)
        log.info("measured model %s (root hash %s) into RTMR%d", name, digest.hex(), MODEL_RTMR)

    def event_log(self) -> RtmrEventLog:
        with self._lock:
            return RtmrEventLog(self._event_log.events)

    def collateral_bundle(self, quote: bytes, *, now: datetime) -> dict[str, Any]:
        """The DCAP collateral bundle (dcap-qvl JSON) that verifies this appliance's quotes."""
        return json.loads(self._collateral.bundle(quote, now=now))


class CollateralSource:
    def bundle(self, quote: bytes, *, now: datetime) -> str:
        raise NotImplementedError


class SimulatedCollateralSource(CollateralSource):
    def __init__(self, authority: SimulatedAuthority) -> None:
        self._authority = authority
        self._lock = threading.Lock()
        self._cached: tuple[datetime, str] | None = None

    def bundle(self, quote: bytes, *, now: datetime) -> str:
        with self._lock:
            if self._cached is None or now >= self._cached[0] - _SIMULATED_REFRESH:
                collateral = simulated_collateral(self._authority, now=now)
                self._cached = (collateral.next_update, collateral.to_bundle_json())
            return self._cached[1]


class PcsCollateralSource(CollateralSource):
    """Intel PCS / a PCCS for the FMSPC and CA of the quote's PCK certificate, cached on disk."""

    def __init__(self, fetcher: CollateralFetcher) -> None:
        self._fetcher = fetcher

    def bundle(self, quote: bytes, *, now: datetime) -> str:
        fmspc, ca = pck_identity(quote)
        collateral: Collateral = self._fetcher.collateral(fmspc, ca, now=now)
        return collateral.to_bundle_json()


def pck_identity(quote: bytes) -> tuple[bytes, PckCa]:
    """FMSPC and issuing CA of the PCK leaf in a quote's certification data."""
    leaf = x509.load_pem_x509_certificate(parse_quote(quote).pck_cert_chain[0])
    issuer = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    ca = PckCa.PROCESSOR if "Processor" in str(issuer) else PckCa.PLATFORM
    return pck_extension_of(leaf).fmspc, ca


def simulated_root_path(settings: Settings) -> Path:
    return settings.simulated_dir / "root-ca.pem"


def build_tee(settings: Settings, *, now: datetime) -> TeeServices:
    if settings.tee == "simulated":
        authority = SimulatedAuthority.load_or_create(settings.simulated_dir, now=now)
        provider = SimulatedQuoteProvider(authority)
        log.warning(
            "SIMULATED TEE: evidence verifies only against the simulated root %s (SHA-256 %s); "
            "pass it to clients with `appliance attest --sim-root %s`",
            simulated_root_path(settings), authority.root_sha256, simulated_root_path(settings),
        )
        return TeeServices(provider, provider, SimulatedCollateralSource(authority))
    endpoint = PcsEndpoint.pccs(settings.pccs_url) if settings.pccs_url else PcsEndpoint.intel()
    fetcher = CollateralFetcher(cache=CollateralCache(settings.state_dir / "collateral"),
                                endpoint=endpoint)
    return TeeServices(tdx_quote_provider(), tdx_rtmr_extender(), PcsCollateralSource(fetcher))
