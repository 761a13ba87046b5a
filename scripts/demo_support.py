"""For scripts/demo.sh: an httpx client that verifies the appliance's RA-TLS evidence against
the demo's pinned policy.

SIMULATED evidence verifies only against the simulated root, passed explicitly; collateral comes
from the appliance itself (it is signed, so its transport needs no trust).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from attest.roots import TrustRoot
from attest.verify import DcapVerifier
from ratls.clock import system_clock
from ratls.collateral import ServedCollateral
from ratls.connection import ConnectionGate
from ratls.httpx_client import httpx_client_for
from ratls.policy import AppraisalPolicy
from ratls.verifier import RatlsVerifier


@contextmanager
def verified_client(url: str, sim_root: str, policy: str) -> Iterator[httpx.Client]:
    """`client.gate.last_result` is the AttestationResult of the last verified connection."""
    verifier = RatlsVerifier(dcap=DcapVerifier(TrustRoot.from_file(Path(sim_root))),
                             policy=AppraisalPolicy.load(Path(policy)),
                             collateral=ServedCollateral(url), clock=system_clock)
    gate = ConnectionGate(verifier, clock=system_clock)
    with httpx_client_for(gate, base_url=url, timeout=120) as client:
        client.gate = gate  # type: ignore[attr-defined]
        yield client
