"""Clients of the real service that verify its RA-TLS evidence: the ratls httpx client with the
simulated root passed explicitly and the collateral the appliance serves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509

from attest.roots import TrustRoot
from attest.verify import DcapVerifier
from ratls.clock import system_clock
from ratls.collateral import ServedCollateral
from ratls.connection import ConnectionGate
from ratls.httpx_client import httpx_client_for
from ratls.result import AttestationResult
from ratls.verifier import RatlsVerifier
from support.pinned import simulated_td_policy
from support.service import Service


@dataclass
class VerifyingClient:
    http: httpx.Client
    gate: ConnectionGate
    base_url: str

    def last_result(self) -> AttestationResult:
        result = self.gate.last_result
        assert result is not None, "no connection was verified yet"
        return result

    def last_result_after(self, request: Callable[[], Any]) -> AttestationResult:
        request()
        return self.last_result()

    def certificate(self) -> x509.Certificate:
        """The certificate this client verified (the one receipts must name)."""
        info = self.last_result().certificate
        assert info is not None
        return x509.load_pem_x509_certificate(info.pem.encode())

    def receipt(self, receipt_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/receipts/{receipt_id}")
        assert response.status_code == 200, response.text
        return response.json()


@contextmanager
def verifying_client(service: Service, *, require_nonce: bool = False) -> Iterator[VerifyingClient]:
    verifier = RatlsVerifier(
        dcap=DcapVerifier(TrustRoot.from_file(service.sim_root)),
        policy=simulated_td_policy(),
        collateral=ServedCollateral(service.url),
        clock=system_clock,
    )
    gate = ConnectionGate(verifier, clock=system_clock, require_nonce=require_nonce)
    with httpx_client_for(gate, base_url=service.url, timeout=30) as http:
        yield VerifyingClient(http, gate, service.url)
