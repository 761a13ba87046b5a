"""Collateral sources over real HTTP(S): the appliance's own endpoint, and a PCCS (fake_pcs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support.fake_pcs import FakePcs
from support.ratls_fixtures import *  # noqa: F403 - fixtures
from support.ratls_world import NOW

from attest.errors import CollateralFormatError
from attest.pcs import CollateralFetcher, PcsClient, PcsEndpoint
from attest.quote import parse_quote
from attest.simulated import (
    SimulatedAuthority,
    SimulatedPlatform,
    SimulatedQuoteProvider,
)
from attest.verify import DcapVerifier
from ratls.collateral import PcsCollateral, ServedCollateral, pck_fmspc
from ratls.errors import EvidenceUnavailableError


@pytest.fixture
def quote(provider) -> object:
    return parse_quote(provider.get_quote(bytes(64)))


def test_served_collateral_is_fetched_once_while_valid(server, quote, authority) -> None:
    source = ServedCollateral(server.url)
    first = source.collateral_for(quote, now=NOW)
    assert first.identity.fmspc == authority.platform.fmspc.hex() == pck_fmspc(quote)
    assert source.collateral_for(quote, now=NOW + timedelta(days=29)) is first
    assert len(server.connections) == 1
    source.collateral_for(quote, now=NOW + timedelta(days=30))  # past its nextUpdate
    assert len(server.connections) == 2


def test_served_collateral_is_refetched_for_another_platform(server, quote, tmp_path) -> None:
    other = SimulatedAuthority.create(
        tmp_path / "other", now=NOW, platform=SimulatedPlatform(fmspc=bytes.fromhex("00806f000000"))
    )
    other_quote = parse_quote(SimulatedQuoteProvider(other).get_quote(bytes(64)))
    source = ServedCollateral(server.url)
    source.collateral_for(quote, now=NOW)
    source.collateral_for(other_quote, now=NOW)
    assert len(server.connections) == 2


@pytest.mark.parametrize(
    ("base", "body", "check"),
    [
        ("/elsewhere", None, "http_status"),
        ("", "not a bundle", "bundle"),
        ("", "x" * (2 * 1024 * 1024 + 1), "size"),
    ],
)
def test_served_collateral_failures_are_named(serve, issuer, quote, base, body, check) -> None:
    server = serve(issuer, **({"collateral_json": body} if body is not None else {}))
    with pytest.raises(EvidenceUnavailableError) as err:
        ServedCollateral(server.url + base).collateral_for(quote, now=NOW)
    assert err.value.check == check


def test_unreachable_appliance_is_a_transport_error(quote) -> None:
    with pytest.raises(EvidenceUnavailableError) as err:
        ServedCollateral("https://127.0.0.1:9", timeout=2).collateral_for(quote, now=NOW)
    assert err.value.check == "transport"


def test_pcs_collateral_for_a_real_intel_quote(vectors_dir, manifest) -> None:
    """PCCS collateral chosen by a real PCK certificate's FMSPC and CA, and DCAP-verified."""
    row = next(
        r
        for r in manifest["verification"]
        if r["quote"] == "dstack_verifier_quote-report_v4.bin"
        and r["bundle"] == "tinfoil_90c06f_2025-12"
    )
    now = datetime.fromtimestamp(row["now_unix"], UTC)
    quote = parse_quote((vectors_dir / "tdx" / "quotes" / row["quote"]).read_bytes())
    dataset = vectors_dir / "tdx" / "collateral" / "tinfoil-verifier" / "2025-12-17"
    with FakePcs(dataset) as pccs:
        source = PcsCollateral(CollateralFetcher(PcsClient(PcsEndpoint.pccs(pccs.url))))
        collateral = source.collateral_for(quote, now=now)
        assert pccs.requests["/tdx/certification/v4/tcb"] == 1
    assert collateral.identity.fmspc == "90c06f000000"
    verified = DcapVerifier().verify(quote, collateral, now=now)
    assert verified.tcb_status.value == row["independent_intel_algorithm_reimpl"]["status"]


def test_pcs_collateral_refuses_a_simulated_pck(quote) -> None:
    """A PCCS serves Intel's collateral only: a simulated PCK's CA is none it knows."""
    source = PcsCollateral(CollateralFetcher(offline=True))
    with pytest.raises(CollateralFormatError) as err:
        source.collateral_for(quote, now=NOW)
    assert "SIMULATED" in str(err.value)
