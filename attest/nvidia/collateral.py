"""What GPU verification takes besides the report and its chain, and how each piece applies.

- `GpuCcMode`: the GPU's confidential-computing mode as the driver reports it (NVML's CC
  state: feature on/off, DevTools on/off). A Hopper report does not carry it, so it is the
  driver's word, not the GPU's signature; NVIDIA's own verifiers read it the same way.
- `GpuCollateral.ocsp`: OCSP statuses of the device CAs, as established by whoever fetched and
  verified NVIDIA's OCSP responses (not this package: it does no I/O). The leaf, the GSP
  firmware's own certificate, is left out, as NVIDIA's verifiers leave it out (nvtrust's local
  verifier starts OCSP at the second certificate of a GPU attestation chain). Applying them
  (`revocation_of`) raises `GpuRevokedError` for a revoked CA and `GpuCollateralError` for a
  status that is missing, unknown or not current.
- `GpuCollateral.reference_measurements`: the values NVIDIA's reference integrity manifests
  (RIMs, driver and VBIOS) list per measurement index, as a RIM loader extracted them; which
  indices apply (NVIDIA skips index 35 while NVDEC0 is disabled) is the loader's business.
  `compare_measurements` records which indices differ; the policy decides.
Without a piece, the verified result says `not_checked` for what it would have checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from attest.errors import GpuCollateralError, GpuRevokedError
from attest.nvidia.chain import GpuChain
from attest.strict_json import format_utc_time


class GpuCcMode(StrEnum):
    ON = "on"
    DEVTOOLS = "devtools"  # CC on with debugging and profiling allowed: not confidential
    OFF = "off"
    NOT_REPORTED = "not_reported"


class OcspStatus(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class CheckState(StrEnum):
    CHECKED = "checked"  # revocation: every CA of the chain is good
    MATCHED = "matched"  # measurements: every reference index equals one of its values
    MISMATCHED = "mismatched"
    NOT_CHECKED = "not_checked"


@dataclass(frozen=True)
class CertificateStatus:
    """One certificate's OCSP status, valid from `this_update` to `next_update`."""

    certificate_sha256: str  # hex SHA-256 of the certificate's DER
    status: OcspStatus
    this_update: datetime
    next_update: datetime
    revocation_reason: str | None = None


@dataclass(frozen=True)
class ReferenceMeasurement:
    """The values a measurement index may take (RIMs list alternatives for some indices)."""

    index: int
    alternatives: tuple[bytes, ...]


@dataclass(frozen=True)
class ReferenceMeasurements:
    measurements: tuple[ReferenceMeasurement, ...]
    source: str  # which RIMs, for messages and logs (e.g. their ids)

    def __post_init__(self) -> None:
        indices = [m.index for m in self.measurements]
        if len(set(indices)) != len(indices) or any(not m.alternatives for m in self.measurements):
            raise GpuCollateralError(
                "reference measurements must list each index once, with at least one value",
                check="reference_measurements",
                actual=self.source,
            )


@dataclass(frozen=True)
class GpuCollateral:
    ocsp: tuple[CertificateStatus, ...] | None = None
    reference_measurements: ReferenceMeasurements | None = None


@dataclass(frozen=True)
class RevocationResult:
    state: CheckState  # CHECKED or NOT_CHECKED: a revoked CA never gets this far
    statuses: tuple[CertificateStatus, ...] = ()


@dataclass(frozen=True)
class MeasurementComparison:
    state: CheckState  # MATCHED, MISMATCHED or NOT_CHECKED
    mismatched: tuple[int, ...] = ()  # reference indices whose value differs or is absent
    source: str | None = None


def revocation_of(
    chain: GpuChain, ocsp: tuple[CertificateStatus, ...] | None, now: datetime
) -> RevocationResult:
    """Apply OCSP statuses to the CAs between the leaf and the root."""
    if ocsp is None:
        return RevocationResult(CheckState.NOT_CHECKED)
    by_certificate = {status.certificate_sha256.lower(): status for status in ocsp}
    applied = []
    for position in range(1, len(chain.certificates) - 1):
        fingerprint = chain.sha256[position]
        status = by_certificate.get(fingerprint)
        check = f"ocsp.chain[{position}]"
        if status is None:
            raise GpuCollateralError(
                "no OCSP status for a device CA certificate",
                check=check,
                expected=fingerprint,
                actual="absent",
            )
        if not status.this_update <= now <= status.next_update:
            raise GpuCollateralError(
                "OCSP status not current at the given time",
                check=f"{check}.validity",
                expected=f"{format_utc_time(status.this_update)}.."
                f"{format_utc_time(status.next_update)}",
                actual=format_utc_time(now),
            )
        if status.status is OcspStatus.REVOKED:
            raise GpuRevokedError(
                "device CA certificate is revoked",
                check=check,
                expected=OcspStatus.GOOD.value,
                actual=f"revoked ({status.revocation_reason or 'no reason given'})",
            )
        if status.status is not OcspStatus.GOOD:
            raise GpuCollateralError(
                "OCSP status of a device CA certificate is not good",
                check=check,
                expected=OcspStatus.GOOD.value,
                actual=status.status.value,
            )
        applied.append(status)
    return RevocationResult(CheckState.CHECKED, tuple(applied))


def compare_measurements(
    measurements: Mapping[int, bytes], reference: ReferenceMeasurements | None
) -> MeasurementComparison:
    """Which reference indices the report's measurements do not match (absent counts)."""
    if reference is None:
        return MeasurementComparison(CheckState.NOT_CHECKED)
    mismatched = tuple(
        entry.index
        for entry in reference.measurements
        if measurements.get(entry.index) not in entry.alternatives
    )
    state = CheckState.MISMATCHED if mismatched else CheckState.MATCHED
    return MeasurementComparison(state, mismatched, reference.source)
