"""Verification of NVIDIA GPU evidence (Hopper), at an injected time.

`GpuVerifier(root).verify(report, chain_pems, nonce=..., now=...)` returns a
`VerifiedGpuEvidence` or raises a `GpuVerificationError` subclass naming the check (see
`attest.errors`). It never returns a bool. `verify_gpu_evidence(...)` does the same with a
verifier of its own: nothing is cached from one call to the next.

Steps (the code below follows these numbers):
 0. Parse the report if given bytes (`GpuEvidenceFormatError`).
 1. Device chain: leaf first, each issued by the next, CAs above the leaf, ending in the trust
    root byte for byte; the leaf an end-entity P-384 certificate with a FWID
    (`attest.nvidia.chain`, checks 1-6; their verdict is cached per chain).
 2. Every certificate of the chain valid at `now` (check 7, on every call).
 3. The leaf's FWID equals the FWID the report carries: the key that signed is the key of the
    firmware the report describes.
 4. Signature: ECDSA P-384 with SHA-384 over request || response-without-signature, by the
    leaf's key (the raw r||s signature is the response's last 96 bytes).
 5. Nonce: the request's nonce equals the verifier's challenge.
 6. Revocation: OCSP statuses of the device CAs, if the collateral has them.
 7. Reference measurements: compared index by index, if the collateral has them (recorded; the
    policy decides, `attest.nvidia.policy`).
`cc_mode` is the driver's report of the GPU's CC mode, recorded as given (NOT_REPORTED when
absent): a Hopper report does not carry it (`attest.nvidia.collateral`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attest.errors import GpuCertificateError, GpuNonceError, GpuSignatureError
from attest.nvidia.chain import (
    DEFAULT_CACHE_SIZE,
    NVIDIA_DEVICE_IDENTITY_CA_SHA256,
    GpuChain,
    GpuChainChecker,
    nvidia_device_identity_ca,
    require_valid_at,
)
from attest.nvidia.collateral import (
    GpuCcMode,
    GpuCollateral,
    MeasurementComparison,
    RevocationResult,
    compare_measurements,
    revocation_of,
)
from attest.nvidia.report import NONCE_SIZE, SIGNATURE_SIZE, GpuReport, parse_gpu_report
from attest.roots import TrustRoot
from attest.strict_json import format_utc_time

_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())
_COORDINATE_SIZE = SIGNATURE_SIZE // 2


@dataclass(frozen=True)
class VerifiedGpuEvidence:
    """A GPU report that passed verification, and what verification established about it."""

    report: GpuReport
    chain: GpuChain
    cc_mode: GpuCcMode  # the driver's word (see `attest.nvidia.collateral`), not signed
    revocation: RevocationResult
    reference_measurements: MeasurementComparison
    root_sha256: str
    simulated: bool  # verified against a root other than NVIDIA's device identity CA
    verified_at: datetime

    @property
    def measurements(self) -> dict[int, bytes]:
        return self.report.measurements

    @property
    def nonce(self) -> bytes:
        return self.report.nonce

    @property
    def driver_version(self) -> str:
        return self.report.opaque.driver_version

    @property
    def vbios_version(self) -> str:
        return self.report.opaque.vbios_version

    @property
    def leaf_sha256(self) -> str:
        return self.chain.leaf_sha256

    def to_dict(self) -> dict[str, Any]:
        opaque = self.report.opaque
        return {
            "measurements": {str(i): v.hex() for i, v in sorted(self.measurements.items())},
            "nonce": self.nonce.hex(),
            "driver_version": opaque.driver_version,
            "vbios_version": opaque.vbios_version,
            "fwid": opaque.fwid.hex(),
            "chip_sku": opaque.chip_sku,
            "board_id": opaque.board_id.hex() if opaque.board_id is not None else None,
            "project": opaque.project,
            "project_sku": opaque.project_sku,
            "feature_flag": opaque.feature_flag.name if opaque.feature_flag else None,
            "cc_mode": self.cc_mode.value,
            "revocation": self.revocation.state.value,
            "reference_measurements": self.reference_measurements.state.value,
            "mismatched_indices": list(self.reference_measurements.mismatched),
            "leaf_sha256": self.leaf_sha256,
            "root_sha256": self.root_sha256,
            "simulated": self.simulated,
            "verified_at": format_utc_time(self.verified_at),
        }


class GpuVerifier:
    """Verifies GPU reports against a trust root (NVIDIA's device identity CA by default).

    Any other root makes every result `simulated=True`. Keeps the time-independent verdict of
    up to `cache_size` device chains. Safe to share between threads.
    """

    def __init__(
        self, root: TrustRoot | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        self._chains = GpuChainChecker(
            root if root is not None else nvidia_device_identity_ca(), cache_size
        )

    @property
    def root(self) -> TrustRoot:
        return self._chains.root

    @property
    def simulated(self) -> bool:
        return self.root.sha256 != NVIDIA_DEVICE_IDENTITY_CA_SHA256

    def verify(
        self,
        report: GpuReport | bytes,
        chain_pems: bytes | str,
        *,
        nonce: bytes,
        now: datetime,
        collateral: GpuCollateral | None = None,
        cc_mode: GpuCcMode | None = None,
    ) -> VerifiedGpuEvidence:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes, not {len(nonce)}")
        collateral = collateral if collateral is not None else GpuCollateral()
        # 0. Parse.
        if not isinstance(report, GpuReport):
            report = parse_gpu_report(report)

        # 1, 2. Device chain, and its validity now.
        chain = self._chains.verified_chain(chain_pems)
        require_valid_at(chain, now)

        # 3. The leaf certifies the firmware the report describes.
        if chain.fwid != report.opaque.fwid:
            raise GpuCertificateError(
                "leaf certificate's FWID differs from the report's",
                check="leaf.fwid",
                expected=report.opaque.fwid,
                actual=chain.fwid,
            )

        # 4. Signature by the leaf's key.
        signature = report.signature
        r = int.from_bytes(signature[:_COORDINATE_SIZE], "big")
        s = int.from_bytes(signature[_COORDINATE_SIZE:], "big")
        try:
            chain.leaf_key.verify(encode_dss_signature(r, s), report.signed_bytes, _ECDSA_SHA384)
        except (InvalidSignature, ValueError):
            raise GpuSignatureError(
                "report signature does not verify with the leaf certificate's key",
                check="report.signature",
                expected=f"signed by {chain.leaf_sha256}",
            ) from None

        # 5. Freshness.
        if report.nonce != nonce:
            raise GpuNonceError(
                "report was made for another nonce",
                check="request.nonce",
                expected=nonce,
                actual=report.nonce,
            )

        # 6, 7. Collateral.
        revocation = revocation_of(chain, collateral.ocsp, now)
        comparison = compare_measurements(report.measurements, collateral.reference_measurements)
        return VerifiedGpuEvidence(
            report=report,
            chain=chain,
            cc_mode=cc_mode if cc_mode is not None else GpuCcMode.NOT_REPORTED,
            revocation=revocation,
            reference_measurements=comparison,
            root_sha256=self.root.sha256,
            simulated=self.simulated,
            verified_at=now,
        )


def verify_gpu_evidence(
    report_bytes: bytes,
    chain_pems: bytes | str,
    *,
    root: TrustRoot,
    nonce: bytes,
    now: datetime,
    collateral: GpuCollateral | None = None,
    cc_mode: GpuCcMode | None = None,
) -> VerifiedGpuEvidence:
    """One verification with nothing cached (see `GpuVerifier` to keep chain verdicts)."""
    return GpuVerifier(root, cache_size=1).verify(
        report_bytes, chain_pems, nonce=nonce, now=now, collateral=collateral, cc_mode=cc_mode
    )
