"""DCAP verification of TDX quotes against collateral, at an injected time.

`DcapVerifier(root).verify(quote, collateral, now=...)` returns a `VerifiedQuote` or raises a
`VerificationError` subclass naming the check (see `attest.errors`). It never returns a bool.

Steps (the code below follows these numbers):
 0. Parse the quote if given bytes (`FormatError`); the QE vendor must be Intel's.
 1. Trust root valid at `now`; root CA CRL signed by the root, current, root not on it.
 2. TCB info: issuer chain ends in the root and its signing certificate is issued by the root,
    not revoked and valid at `now` (Intel re-issued it in 2025 with the same key: any listed
    signing certificate that is valid at `now` and verifies the signature will do); signature
    over the exact signed text; `now` within [issueDate, nextUpdate]; id "TDX", version 3.
 3. QE identity: the same, with id "TD_QE", version 2.
 4. PCK chain from the quote: exactly [PCK leaf, PCK CA, root]; the root is the trust root byte
    for byte; each certificate issued by the next and valid at `now`; the CA is a CA and not on
    the root CRL. (Intel's QVL also checks the leaf's CN; we require its SGX extension, step 6.)
 5. PCK CRL: issued by the leaf's CA (same name and key), signed, current; leaf not on it.
 6. PCK leaf SGX extension: FMSPC and PCE-ID equal the TCB info's.
 7. QE report signature by the PCK leaf key.
 8. QE report data = SHA-256(attestation key || QE auth data) || 32 zero bytes.
 9. QE identity: MRSIGNER, ISVPRODID, masked MISCSELECT and ATTRIBUTES.
10. Quote signature over header [+ v5 descriptor] + body by the attestation key.
11. TCB status: TDX module identity, platform, module and QE levels, merge (`attest.tcb`).

What does not depend on the quote or the time (parsed collateral, collateral signatures, CA
certificates verified against the root) is cached inside the verifier instance; validity at
`now` and revocation are checked on every call.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attest.certs import load_certificate
from attest.collateral import (
    QE_IDENTITY_ID_TD_QE,
    QE_IDENTITY_VERSION,
    TCB_INFO_ID_TDX,
    TCB_INFO_VERSION_TDX,
    CertificateChain,
    Collateral,
    CollateralIdentity,
    QeIdentity,
    RevocationList,
    TcbStatus,
)
from attest.errors import (
    CertificateError,
    CertificateValidityError,
    CollateralExpiredError,
    CollateralMismatchError,
    CollateralSignatureError,
    FormatError,
    KeyBindingError,
    QeIdentityError,
    RevokedError,
    SignatureError,
)
from attest.pck import PckExtension, pck_extension_of
from attest.quote import INTEL_QE_VENDOR_ID, EnclaveReport, Quote, parse_quote
from attest.roots import TrustRoot, intel_sgx_root_ca
from attest.tcb import TcbEvaluation, evaluate_tcb

PCK_CHAIN_LENGTH = 3
DEFAULT_CACHE_SIZE = 32

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_COORDINATE_SIZE = 32


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote that passed DCAP verification, and what verification established about it."""

    quote: Quote
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]
    platform_tcb_status: TcbStatus
    tdx_module_tcb_status: TcbStatus | None
    qe_tcb_status: TcbStatus
    tcb: TcbEvaluation
    pck: PckExtension
    collateral: CollateralIdentity
    root_sha256: str
    simulated: bool
    verified_at: datetime

    @property
    def fmspc(self) -> str:
        return self.pck.fmspc.hex()

    def to_dict(self) -> dict[str, Any]:
        body = self.quote.body
        return {
            "tcb_status": self.tcb_status.value,
            "advisory_ids": list(self.advisory_ids),
            "platform_tcb_status": self.platform_tcb_status.value,
            "tdx_module_tcb_status": (
                self.tdx_module_tcb_status.value if self.tdx_module_tcb_status else None
            ),
            "qe_tcb_status": self.qe_tcb_status.value,
            "tcb_date": _iso(self.tcb.platform_level.tcb_date),
            "fmspc": self.fmspc,
            "pce_id": self.pck.pce_id.hex(),
            "sgx_type": self.pck.sgx_type.name,
            "quote_version": self.quote.version,
            "mr_td": body.mr_td.hex(),
            "rtmr": [r.hex() for r in body.rtmr],
            "report_data": body.report_data.hex(),
            "td_attributes": body.td_attributes.hex(),
            "debug": body.debug,
            "collateral": self.collateral.to_dict(),
            "root_sha256": self.root_sha256,
            "simulated": self.simulated,
            "verified_at": _iso(self.verified_at),
        }


@dataclass(frozen=True)
class _CheckedCollateral:
    """The time-independent results of steps 2 and 3 for one collateral: the signing
    certificates (issued by the root) whose keys verify the TCB info and the QE identity."""

    tcb_signers: tuple[x509.Certificate, ...]
    qe_signers: tuple[x509.Certificate, ...]


_K = TypeVar("_K")
_V = TypeVar("_V")


class _Lru(Generic[_K, _V]):
    """A small thread-safe LRU map: the verifier's caches of time-independent results."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K) -> _V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: _K, value: _V) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class DcapVerifier:
    """Verifies TDX quotes against collateral and a trust root (Intel's SGX Root CA by default).

    Any other root makes every result `simulated=True`. Safe to share between threads.
    """

    def __init__(
        self, root: TrustRoot | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        self._root = root if root is not None else intel_sgx_root_ca()
        self._checked_collaterals: _Lru[Collateral, _CheckedCollateral] = _Lru(cache_size)
        # CA DER -> x509.Certificate issued by the root
        self._pck_cas: _Lru[bytes, x509.Certificate] = _Lru(cache_size)
        # (Collateral, CA DER) -> True
        self._pck_crl_issuers: _Lru[tuple[Collateral, bytes], bool] = _Lru(cache_size)

    @property
    def root(self) -> TrustRoot:
        return self._root

    @property
    def simulated(self) -> bool:
        return not self._root.is_intel

    def verify(
        self, quote: Quote | bytes, collateral: Collateral, *, now: datetime
    ) -> VerifiedQuote:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        # 0. Parse; only Intel's quoting enclave is supported.
        if not isinstance(quote, Quote):
            quote = parse_quote(quote)
        if quote.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
            raise QeIdentityError(
                "QE vendor is not Intel",
                check="header.qe_vendor_id",
                expected=INTEL_QE_VENDOR_ID,
                actual=quote.header.qe_vendor_id,
            )
        checked = self._checked_collateral(collateral)
        root = self._root.certificate

        # 1. Trust root and root CA CRL.
        _require_valid_at(root, now, "root")
        _require_current(collateral.root_ca_crl, now, "root_ca_crl")
        _require_not_revoked(root, collateral.root_ca_crl, "root")

        # 2. TCB info.
        tcb_info = collateral.tcb_info.tcb_info
        self._current_signer(checked.tcb_signers, collateral, now, "tcb_info_issuer_chain")
        _require_window(tcb_info.issue_date, tcb_info.next_update, now, "tcb_info")
        if (tcb_info.id, tcb_info.version) != (TCB_INFO_ID_TDX, TCB_INFO_VERSION_TDX):
            raise CollateralMismatchError(
                "TCB info is not TDX TCB info v3",
                check="tcb_info.id",
                expected=f"{TCB_INFO_ID_TDX} v{TCB_INFO_VERSION_TDX}",
                actual=f"{tcb_info.id} v{tcb_info.version}",
            )

        # 3. QE identity.
        qe_identity = collateral.qe_identity.qe_identity
        self._current_signer(checked.qe_signers, collateral, now, "qe_identity_issuer_chain")
        _require_window(qe_identity.issue_date, qe_identity.next_update, now, "qe_identity")
        if (qe_identity.id, qe_identity.version) != (QE_IDENTITY_ID_TD_QE, QE_IDENTITY_VERSION):
            raise CollateralMismatchError(
                "QE identity is not the TD quoting enclave's",
                check="qe_identity.id",
                expected=f"{QE_IDENTITY_ID_TD_QE} v{QE_IDENTITY_VERSION}",
                actual=f"{qe_identity.id} v{qe_identity.version}",
            )

        # 4. PCK certificate chain from the quote.
        leaf, pck_ca = self._pck_chain(quote, collateral.root_ca_crl, now)

        # 5. PCK CRL, issued by the leaf's CA.
        pck_crl = collateral.pck_crl
        self._require_pck_crl_of(collateral, pck_ca, ca_der=quote.pck_cert_chain[1])
        _require_current(pck_crl, now, "pck_crl")
        _require_not_revoked(leaf, pck_crl, "pck_leaf")

        # 6. PCK extension against the TCB info.
        try:
            pck = pck_extension_of(leaf)
        except FormatError as exc:
            raise CertificateError(
                f"PCK certificate: {exc}",
                check=exc.check or "pck.sgx_extension",
                expected=exc.expected,
                actual=exc.actual,
            ) from None
        for label, field, ours, theirs in (
            ("FMSPC", "fmspc", pck.fmspc, tcb_info.fmspc),
            ("PCE-ID", "pce_id", pck.pce_id, tcb_info.pce_id),
        ):
            if ours != theirs:
                raise CollateralMismatchError(
                    f"{label} of the PCK certificate and the TCB info differ",
                    check=f"tcb_info.{field}",
                    expected=ours,
                    actual=theirs,
                )

        # 7. QE report signature by the PCK key.
        certification = quote.certification_data
        qe_report_bytes = certification.qe_report.to_bytes()
        leaf_key = leaf.public_key()
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or not _raw_signature_valid(
            leaf_key, certification.qe_report_signature, qe_report_bytes
        ):
            raise SignatureError(
                "QE report signature does not verify with the PCK key", check="qe_report_signature"
            )

        # 8. QE report data binds the attestation key.
        qe_report = certification.qe_report
        expected_report_data = hashlib.sha256(
            quote.attestation_key + certification.qe_auth_data
        ).digest() + bytes(32)
        if qe_report.report_data != expected_report_data:
            raise KeyBindingError(
                "QE report data does not bind the attestation key",
                check="qe_report.report_data",
                expected=expected_report_data,
                actual=qe_report.report_data,
            )

        # 9. The quoting enclave is the one the QE identity describes.
        _check_qe_identity(qe_report, qe_identity)

        # 10. Quote signature by the attestation key.
        try:
            attestation_key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b"\x04" + quote.attestation_key
            )
        except ValueError:
            raise SignatureError(
                "attestation key is not a P-256 point",
                check="attestation_key",
                actual=quote.attestation_key,
            ) from None
        if not _raw_signature_valid(attestation_key, quote.signature, quote.signed_bytes):
            raise SignatureError(
                "quote signature does not verify with the attestation key", check="quote_signature"
            )

        # 11. TCB status.
        evaluation = evaluate_tcb(tcb_info, qe_identity, pck.tcb, quote.body, qe_report.isv_svn)
        return VerifiedQuote(
            quote=quote,
            tcb_status=evaluation.status,
            advisory_ids=evaluation.advisory_ids,
            platform_tcb_status=evaluation.platform_level.tcb_status,
            tdx_module_tcb_status=(
                evaluation.tdx_module_level.tcb_status if evaluation.tdx_module_level else None
            ),
            qe_tcb_status=evaluation.qe_level.tcb_status,
            tcb=evaluation,
            pck=pck,
            collateral=collateral.identity,
            root_sha256=self._root.sha256,
            simulated=self.simulated,
            verified_at=now,
        )

    # --- steps 1-5: certificates and collateral ---------------------------------------------------

    def _checked_collateral(self, collateral: Collateral) -> _CheckedCollateral:
        checked = self._checked_collaterals.get(collateral)
        if checked is not None:
            return checked
        root = self._root.certificate
        # 1. The root CA CRL is the root's.
        if collateral.root_ca_crl.issuer != root.subject or not _crl_signed_by(
            collateral.root_ca_crl, root
        ):
            raise CollateralSignatureError(
                "root CA CRL is not signed by the trust root",
                check="root_ca_crl.signature",
                expected=root.subject.rfc4514_string(),
                actual=collateral.root_ca_crl.issuer.rfc4514_string(),
            )
        # 2, 3. Signing certificates issued by the root that verify the signed text.
        tcb_signers = tuple(
            cert
            for cert in self._root_issued(collateral.tcb_info_issuer_chain, "tcb_info_issuer_chain")
            if _raw_signature_valid(
                cert.public_key(), collateral.tcb_info.signature, collateral.tcb_info.text.encode()
            )
        )
        if not tcb_signers:
            raise CollateralSignatureError(
                "TCB info signature does not verify", check="tcb_info_signature"
            )
        qe_signers = tuple(
            cert
            for cert in self._root_issued(
                collateral.qe_identity_issuer_chain, "qe_identity_issuer_chain"
            )
            if _raw_signature_valid(
                cert.public_key(),
                collateral.qe_identity.signature,
                collateral.qe_identity.text.encode(),
            )
        )
        if not qe_signers:
            raise CollateralSignatureError(
                "QE identity signature does not verify", check="qe_identity_signature"
            )
        # 5. The PCK CRL verifies with a CA of its own issuer chain (which ends in the root);
        # that this CA is also the quote's PCK CA is checked per quote.
        if not any(
            cert.subject == collateral.pck_crl.issuer and _crl_signed_by(collateral.pck_crl, cert)
            for cert in self._root_issued(collateral.pck_crl_issuer_chain, "pck_crl_issuer_chain")
        ):
            raise CollateralSignatureError(
                "PCK CRL signature does not verify with its issuer chain", check="pck_crl.signature"
            )
        checked = _CheckedCollateral(tcb_signers, qe_signers)
        self._checked_collaterals.put(collateral, checked)
        return checked

    def _require_pck_crl_of(
        self, collateral: Collateral, pck_ca: x509.Certificate, ca_der: bytes
    ) -> None:
        """5. The collateral's PCK CRL is issued by this CA: same name, signed by its key."""
        if self._pck_crl_issuers.get((collateral, ca_der)):
            return
        crl = collateral.pck_crl
        if crl.issuer != pck_ca.subject or not _crl_signed_by(crl, pck_ca):
            raise CollateralMismatchError(
                "PCK CRL is not from the PCK certificate's CA",
                check="pck_crl.issuer",
                expected=pck_ca.subject.rfc4514_string(),
                actual=crl.issuer.rfc4514_string(),
            )
        self._pck_crl_issuers.put((collateral, ca_der), True)

    def _root_issued(self, chain: CertificateChain, what: str) -> tuple[x509.Certificate, ...]:
        """The certificates of an issuer chain, which must be [issued by the root..., root]."""
        if chain.der[-1] != self._root.der:
            raise CollateralSignatureError(
                f"{what} does not end in the trust root",
                check=what,
                expected=self._root.sha256,
                actual=hashlib.sha256(chain.der[-1]).hexdigest(),
            )
        certificates = chain.certificates[:-1]
        if not certificates:
            raise CollateralSignatureError(f"{what} has no signing certificate", check=what)
        for certificate in certificates:
            if not _issued_by(certificate, self._root.certificate):
                raise CollateralSignatureError(
                    f"{what}: certificate not issued by the trust root",
                    check=what,
                    actual=certificate.subject.rfc4514_string(),
                )
        return certificates

    def _current_signer(
        self,
        signers: tuple[x509.Certificate, ...],
        collateral: Collateral,
        now: datetime,
        what: str,
    ) -> x509.Certificate:
        """A signing certificate valid at `now` and not revoked (step 2 and 3)."""
        for signer in signers:
            if _valid_at(signer, now):
                _require_not_revoked(signer, collateral.root_ca_crl, what)
                return signer
        raise CertificateValidityError(
            f"{what}: no signing certificate valid at the given time",
            check=f"{what}.validity",
            expected=_windows(signers),
            actual=_iso(now),
        )

    def _pck_chain(
        self, quote: Quote, root_crl: RevocationList, now: datetime
    ) -> tuple[x509.Certificate, x509.Certificate]:
        """4. The quote's [leaf, CA, root] chain; returns (leaf, CA)."""
        chain = quote.pck_cert_chain
        if len(chain) != PCK_CHAIN_LENGTH:
            raise CertificateError(
                "PCK chain must be [PCK leaf, PCK CA, root]",
                check="pck_chain.length",
                expected=PCK_CHAIN_LENGTH,
                actual=len(chain),
            )
        leaf_der, ca_der, root_der = chain
        if root_der != self._root.der:
            raise CertificateError(
                "PCK chain does not end in the trust root",
                check="pck_chain.root",
                expected=self._root.sha256,
                actual=hashlib.sha256(root_der).hexdigest(),
            )
        pck_ca = self._verified_ca(ca_der)
        try:
            leaf = load_certificate(leaf_der, parse_names=False)
        except ValueError as exc:
            raise CertificateError(
                "PCK leaf certificate is malformed", check="pck_leaf", actual=str(exc)
            ) from None
        if not _issued_by(leaf, pck_ca):
            raise CertificateError(
                "PCK leaf is not issued by the PCK CA",
                check="pck_leaf.signature",
                expected=f"issued by {pck_ca.subject.rfc4514_string()}",
            )
        _require_valid_at(pck_ca, now, "pck_ca")
        _require_valid_at(leaf, now, "pck_leaf")
        _require_not_revoked(pck_ca, root_crl, "pck_ca")
        return leaf, pck_ca

    def _verified_ca(self, der: bytes) -> x509.Certificate:
        """A PCK CA certificate issued by the root and marked as a CA (cached by DER)."""
        cached = self._pck_cas.get(der)
        if cached is not None:
            return cached
        try:
            certificate = load_certificate(der)
        except ValueError as exc:
            raise CertificateError(
                "PCK CA certificate is malformed", check="pck_ca", actual=str(exc)
            ) from None
        if not _issued_by(certificate, self._root.certificate):
            raise CertificateError(
                "PCK CA is not issued by the trust root",
                check="pck_ca.signature",
                expected=self._root.certificate.subject.rfc4514_string(),
                actual=certificate.issuer.rfc4514_string(),
            )
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CertificateError(
                "PCK CA certificate is not a CA",
                check="pck_ca.basic_constraints",
                expected="CA:TRUE",
                actual="CA:FALSE",
            )
        self._pck_cas.put(der, certificate)
        return certificate


# --- step 9 -------------------------------------------------------------------------------------


def _check_qe_identity(qe_report: EnclaveReport, qe_identity: QeIdentity) -> None:
    if qe_report.mr_signer != qe_identity.mr_signer:
        raise QeIdentityError(
            "QE MRSIGNER does not match the QE identity",
            check="qe_report.mr_signer",
            expected=qe_identity.mr_signer,
            actual=qe_report.mr_signer,
        )
    if qe_report.isv_prod_id != qe_identity.isv_prod_id:
        raise QeIdentityError(
            "QE ISVPRODID does not match the QE identity",
            check="qe_report.isv_prod_id",
            expected=qe_identity.isv_prod_id,
            actual=qe_report.isv_prod_id,
        )
    if qe_report.misc_select & qe_identity.miscselect_mask != qe_identity.miscselect:
        raise QeIdentityError(
            "QE MISCSELECT does not match the QE identity",
            check="qe_report.misc_select",
            expected=hex(qe_identity.miscselect),
            actual=hex(qe_report.misc_select & qe_identity.miscselect_mask),
        )
    masked = bytes(
        a & m for a, m in zip(qe_report.attributes, qe_identity.attributes_mask, strict=True)
    )
    if masked != qe_identity.attributes:
        raise QeIdentityError(
            "QE ATTRIBUTES do not match the QE identity",
            check="qe_report.attributes",
            expected=qe_identity.attributes,
            actual=masked,
        )


# --- helpers ------------------------------------------------------------------------------------


def _raw_signature_valid(public_key: Any, signature: bytes, data: bytes) -> bool:
    """ECDSA-P256-SHA256 over `data` with a raw r||s signature (as in quotes and collateral)."""
    if (
        not isinstance(public_key, ec.EllipticCurvePublicKey)
        or len(signature) != 2 * _COORDINATE_SIZE
    ):
        return False
    r = int.from_bytes(signature[:_COORDINATE_SIZE], "big")
    s = int.from_bytes(signature[_COORDINATE_SIZE:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _crl_signed_by(crl: RevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    try:
        return isinstance(key, ec.EllipticCurvePublicKey) and crl.crl.is_signature_valid(key)
    except (TypeError, UnsupportedAlgorithm):
        return False


def _valid_at(certificate: x509.Certificate, now: datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _require_valid_at(certificate: x509.Certificate, now: datetime, what: str) -> None:
    if not _valid_at(certificate, now):
        raise CertificateValidityError(
            f"{what} certificate is not valid at the given time",
            check=f"{what}.validity",
            expected=_windows((certificate,)),
            actual=_iso(now),
        )


def _require_window(start: datetime, end: datetime, now: datetime, what: str) -> None:
    if not start <= now <= end:
        state = "expired" if now > end else "not yet valid"
        raise CollateralExpiredError(
            f"{what} {state}",
            check=f"{what}.validity",
            expected=f"{_iso(start)}..{_iso(end)}",
            actual=_iso(now),
        )


def _require_current(crl: RevocationList, now: datetime, what: str) -> None:
    _require_window(crl.this_update, crl.next_update, now, what)


def _require_not_revoked(certificate: x509.Certificate, crl: RevocationList, what: str) -> None:
    if certificate.serial_number in crl.revoked_serials:
        raise RevokedError(
            f"{what} certificate is revoked",
            check=f"{what}.revocation",
            expected="not on the CRL",
            actual=f"serial {certificate.serial_number:x}",
        )


def _windows(certificates: tuple[x509.Certificate, ...]) -> str:
    return ", ".join(
        f"{_iso(c.not_valid_before_utc)}..{_iso(c.not_valid_after_utc)}" for c in certificates
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
