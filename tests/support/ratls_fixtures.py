"""A simulated TD serving RA-TLS on loopback, and verifiers that trust its simulated root.

Everything is real (TLS, DCAP verification, HTTP) except the TDX hardware, which the simulated
authority of `attest.simulated` stands in for. Time is injected (a ManualClock).

Test modules take these fixtures with `from support.ratls_fixtures import *`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from attest.collateral_load import collateral_from_bundle_json
from attest.roots import TrustRoot
from attest.simulated import SimulatedAuthority, SimulatedQuoteProvider, simulated_collateral
from attest.verify import DcapVerifier
from ratls.collateral import CollateralSource, StaticCollateral
from ratls.issuer import IdentityIssuer
from ratls.policy import AppraisalPolicy
from ratls.verifier import RatlsVerifier
from support.clock import ManualClock
from support.pinned import simulated_td_policy
from support.ratls_server import RatlsTestServer
from support.ratls_world import NAMES, NOW

__all__ = [
    "authority",
    "clock",
    "collateral_json",
    "issuer",
    "make_verifier",
    "provider",
    "serve",
    "server",
    "sim_root",
]


@pytest.fixture(scope="session")
def authority(tmp_path_factory) -> SimulatedAuthority:
    return SimulatedAuthority.create(tmp_path_factory.mktemp("sim") / "authority", now=NOW)


@pytest.fixture(scope="session")
def sim_root(authority) -> TrustRoot:
    return TrustRoot(authority.root_der)


@pytest.fixture(scope="session")
def collateral_json(authority) -> str:
    return simulated_collateral(authority, now=NOW).to_bundle_json()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def provider(authority) -> SimulatedQuoteProvider:
    return SimulatedQuoteProvider(authority)


@pytest.fixture
def issuer(provider, clock) -> IdentityIssuer:
    return IdentityIssuer(provider, NAMES, clock=clock)


@pytest.fixture
def serve(provider, collateral_json, clock) -> Iterator:
    """`serve(source, **options)` starts a RatlsTestServer; all are stopped after the test."""
    servers: list[RatlsTestServer] = []

    def start(source, **options) -> RatlsTestServer:
        options.setdefault("collateral_json", collateral_json)
        server = RatlsTestServer(
            source, options.pop("provider", provider), clock=clock, **options
        ).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(serve, issuer) -> RatlsTestServer:
    return serve(issuer)


@pytest.fixture
def make_verifier(sim_root, collateral_json, clock):
    """`make_verifier(root=sim_root, policy=default, collateral=static bundle)`."""

    def make(
        *,
        root: TrustRoot | None = sim_root,
        policy: AppraisalPolicy | None = None,
        collateral: CollateralSource | None = None,
    ) -> RatlsVerifier:
        return RatlsVerifier(
            dcap=DcapVerifier(root),
            policy=policy or simulated_td_policy(),
            collateral=collateral or StaticCollateral(collateral_from_bundle_json(collateral_json)),
            clock=clock,
        )

    return make
