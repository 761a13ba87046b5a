"""The gunicorn `ssl_context` hook in a real gunicorn process (sync worker), verified by a client.

Also checks the documented way for a WSGI app to learn which identity its connection presented
(`presented_identity(environ["gunicorn.socket"])`), which `/v1/attestation` must bind.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from support.ratls_fixtures import *  # noqa: F403 - fixtures
from support.ratls_world import NOW

from ratls.connection import probe
from ratls.requests_adapter import attested_session

pytestmark = pytest.mark.slow

APP = """
from ratls.server import presented_identity


def app(environ, start_response):
    identity = presented_identity(environ["gunicorn.socket"])
    body = identity.fingerprint.hex().encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"""

CONFIG = """
from datetime import datetime

from attest.simulated import SimulatedAuthority, SimulatedQuoteProvider
from ratls.issuer import IdentityIssuer
from ratls.profile import SubjectNames
from ratls.server import RotatingServerContext

NOW = datetime.fromisoformat({now!r})
_issuer = IdentityIssuer(
    SimulatedQuoteProvider(SimulatedAuthority.load({authority!r})),
    SubjectNames.parse(["127.0.0.1"]),
    clock=lambda: NOW,
)
bind = "127.0.0.1:{port}"
workers = 1
certfile = "/dev/null"  # gunicorn needs one to enable TLS; the hook never reads it
ssl_context = RotatingServerContext(_issuer).gunicorn_hook
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn_url(authority, tmp_path) -> Iterator[str]:
    port = free_port()
    (tmp_path / "ratls_app.py").write_text(APP)
    config = tmp_path / "gunicorn_conf.py"
    config.write_text(
        textwrap.dedent(
            CONFIG.format(now=NOW.isoformat(), authority=str(authority.directory), port=port)
        )
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(config),
            "--pythonpath",
            str(tmp_path),
            "ratls_app:app",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"gunicorn exited: {process.stdout.read().decode()}")
                time.sleep(0.1)
        yield f"https://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_gunicorn_serves_a_verifiable_ratls_identity(gunicorn_url, make_verifier, clock) -> None:
    verifier = make_verifier()
    result = probe(gunicorn_url, verifier, clock=clock)
    assert result.verified, result.errors
    assert result.tee == "simulated"
    with attested_session(verifier, clock=clock) as session:
        presented = session.get(f"{gunicorn_url}/").text
    assert presented == result.certificate.sha256_fingerprint
