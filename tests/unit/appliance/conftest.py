"""Fixtures for the worker app (helpers in support/worker_app.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from support.worker_app import (
    DIGEST,
    FakeEngine,
    SupervisorDouble,
    service_settings,
    start_fake_engine,
    stop_engine,
)

from appliance.channel.control import ControlServer
from attest.simulated.authority import SimulatedAuthority
from attest.simulated.provider import SimulatedQuoteProvider
from ratls.issuer import IdentityIssuer
from ratls.profile import SubjectNames


@pytest.fixture
def fake_engine(tmp_path: Path, request: pytest.FixtureRequest):
    # Faults: FAKE_VLLM_* settings, through `parametrize("fake_engine", [...], indirect=True)`.
    faults = getattr(request, "param", {"stream_delay": 0.01})
    engine = start_fake_engine(tmp_path, **faults)
    yield engine
    stop_engine(engine)


@pytest.fixture
def issuer(tmp_path: Path) -> IdentityIssuer:
    now = dt.datetime.now(dt.UTC)
    authority = SimulatedAuthority.create(tmp_path / "simulated", now=now)
    issuer = IdentityIssuer(SimulatedQuoteProvider(authority), SubjectNames.parse(["localhost"]),
                            clock=lambda: dt.datetime.now(dt.UTC))
    issuer.reissue(model_digest=bytes.fromhex(DIGEST))
    return issuer


@pytest.fixture
def supervisor_double(tmp_path: Path, fake_engine: FakeEngine, issuer: IdentityIssuer):
    settings = service_settings(tmp_path, fake_engine.port)
    double = SupervisorDouble(settings, issuer)
    double.publish()
    server = ControlServer(settings.control_socket, double.routes(), admit=lambda _peer: None)
    server.start()
    yield double
    server.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
