"""The time-dependent checks of DCAP verification: validity windows and revocation.

These run on every call of `attest.verify.DcapVerifier.verify`, never cached: the time is an
argument, and a result cached at one time says nothing about another.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509

from attest.collateral import RevocationList
from attest.errors import CertificateValidityError, CollateralExpiredError, RevokedError
from attest.strict_json import format_utc_time


def valid_at(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def require_valid_at(certificate: x509.Certificate, now: datetime, what: str) -> None:
    if not valid_at(certificate, now):
        raise CertificateValidityError(
            f"{what} certificate is not valid at the given time",
            check=f"{what}.validity",
            expected=validity_windows((certificate,)),
            actual=format_utc_time(now),
        )


def require_window(start: datetime, end: datetime, now: datetime, what: str) -> None:
    if not start <= now <= end:
        state = "expired" if now > end else "not yet valid"
        raise CollateralExpiredError(
            f"{what} {state}",
            check=f"{what}.validity",
            expected=f"{format_utc_time(start)}..{format_utc_time(end)}",
            actual=format_utc_time(now),
        )


def require_current(crl: RevocationList, now: datetime, what: str) -> None:
    require_window(crl.this_update, crl.next_update, now, what)


def require_not_revoked(certificate: x509.Certificate, crl: RevocationList, what: str) -> None:
    if certificate.serial_number in crl.revoked_serials:
        raise RevokedError(
            f"{what} certificate is revoked",
            check=f"{what}.revocation",
            expected="not on the CRL",
            actual=f"serial {certificate.serial_number:x}",
        )


def validity_windows(certificates: tuple[x509.Certificate, ...]) -> str:
    """The certificates' validity windows, for messages."""
    return ", ".join(
        f"{format_utc_time(c.not_valid_before_utc)}..{format_utc_time(c.not_valid_after_utc)}"
        for c in certificates
    )
