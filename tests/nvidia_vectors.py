"""The real NVIDIA Hopper vectors (tests/vectors/nvidia, PROVENANCE.md there) by scenario.

Two reports, each with the device chain that signed it; four chain cases; NVIDIA's device root.
The certificates are valid from 2020-10-17 (leaf, BROM) or 2022-03-01 (the provisioner ICA) to
9999-12-31T23:59:59Z, so `NOW` is any time inside that window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from support.vectors import VECTORS

from attest.nvidia.chain import nvidia_device_identity_ca
from attest.nvidia.report import report_from_hex
from attest.roots import TrustRoot

NVIDIA = VECTORS / "nvidia"
MANIFEST: dict = json.loads((VECTORS / "MANIFEST.json").read_text())

NOW = datetime(2025, 6, 1, tzinfo=UTC)
# The latest instant before the certificates' notAfter has passed (9999-12-31T23:59:59Z).
AFTER_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
# Before the provisioner ICA's notBefore (2022-03-01).
BEFORE_ICA = datetime(2022, 2, 28, tzinfo=UTC)


@dataclass(frozen=True)
class ReportPair:
    """A report, the chain whose leaf signed it, and the nonce it was made for."""

    name: str
    report_file: str
    chain_file: str
    nonce_hex: str

    @property
    def raw(self) -> bytes:
        return report_from_hex(text(self.report_file))

    @property
    def chain(self) -> bytes:
        return (NVIDIA / self.chain_file).read_bytes()

    @property
    def nonce(self) -> bytes:
        return bytes.fromhex(self.nonce_hex)


# Nonces as trustee's tests give them (the CoCo one there is 48 bytes, of which SPDM carries the
# first 32: trustee truncates the expected report data to the SPDM nonce size).
HOPPER = ReportPair(
    "hopper",
    "hopperAttestationReport.txt",
    "hopper_cert_chain_case1.txt",
    "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb",
)
COCO = ReportPair(
    "coco",
    "hopper_coco_report1.txt",
    "hopper_coco_certs1.txt",
    "87d8e24ab336adafe228d49e83d745f6dba4ae505372b6a5704820856b343fec",
)
PAIRS = (HOPPER, COCO)


def text(name: str) -> str:
    return (NVIDIA / name).read_text()


@cache
def nvidia_root() -> TrustRoot:
    return nvidia_device_identity_ca()


def claims() -> dict:
    """trustee's claims for HOPPER (its verifier's output, compared field by field)."""
    return json.loads(text("hopperAttestationReport-claims.txt"))
