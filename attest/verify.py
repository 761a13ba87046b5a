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

The chain and signature work of steps 1-5 is `attest.chains`, which caches inside the verifier
instance what does not depend on the quote or the time (collateral signatures, CA certificates
verified against the root); validity at `now` and revocation (`attest.validity`) are checked on
every call. Step 11 is `attest.tcb`; raw ECDSA signatures (7, 10) are `attest.signatures`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from attest.chains import ChainChecker
from attest.collateral import Collateral, CollateralIdentity
from attest.collateral_documents import (
    QE_IDENTITY_ID_TD_QE,
    QE_IDENTITY_VERSION,
    TCB_INFO_ID_TDX,
    TCB_INFO_VERSION_TDX,
    QeIdentity,
    TcbStatus,
)
from attest.errors import (
    CertificateError,
    CollateralMismatchError,
    FormatError,
    KeyBindingError,
    QeIdentityError,
    SignatureError,
)
from attest.pck import PckExtension, pck_extension_of
from attest.quote import INTEL_QE_VENDOR_ID, EnclaveReport, Quote, parse_quote
from attest.roots import TrustRoot, intel_sgx_root_ca
from attest.signatures import raw_signature_valid
from attest.strict_json import format_utc_time
from attest.tcb import TcbEvaluation, evaluate_tcb
from attest.validity import require_current, require_not_revoked, require_valid_at, require_window

DEFAULT_CACHE_SIZE = 32


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
            "tcb_date": format_utc_time(self.tcb.platform_level.tcb_date),
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
            "verified_at": format_utc_time(self.verified_at),
        }


class DcapVerifier:
    """Verifies TDX quotes against collateral and a trust root (Intel's SGX Root CA by default).

    Any other root makes every result `simulated=True`. Safe to share between threads.
    """

    def __init__(
        self, root: TrustRoot | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        self._root = root if root is not None else intel_sgx_root_ca()
        self._chains = ChainChecker(self._root, cache_size)

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
        checked = self._chains.checked_collateral(collateral)
        root = self._root.certificate

        # 1. Trust root and root CA CRL.
        require_valid_at(root, now, "root")
        require_current(collateral.root_ca_crl, now, "root_ca_crl")
        require_not_revoked(root, collateral.root_ca_crl, "root")

        # 2. TCB info.
        tcb_info = collateral.tcb_info.tcb_info
        self._chains.current_signer(checked.tcb_signers, collateral, now, "tcb_info_issuer_chain")
        require_window(tcb_info.issue_date, tcb_info.next_update, now, "tcb_info")
        if (tcb_info.id, tcb_info.version) != (TCB_INFO_ID_TDX, TCB_INFO_VERSION_TDX):
            raise CollateralMismatchError(
                "TCB info is not TDX TCB info v3",
                check="tcb_info.id",
                expected=f"{TCB_INFO_ID_TDX} v{TCB_INFO_VERSION_TDX}",
                actual=f"{tcb_info.id} v{tcb_info.version}",
            )

        # 3. QE identity.
        qe_identity = collateral.qe_identity.qe_identity
        self._chains.current_signer(checked.qe_signers, collateral, now, "qe_identity_issuer_chain")
        require_window(qe_identity.issue_date, qe_identity.next_update, now, "qe_identity")
        if (qe_identity.id, qe_identity.version) != (QE_IDENTITY_ID_TD_QE, QE_IDENTITY_VERSION):
            raise CollateralMismatchError(
                "QE identity is not the TD quoting enclave's",
                check="qe_identity.id",
                expected=f"{QE_IDENTITY_ID_TD_QE} v{QE_IDENTITY_VERSION}",
                actual=f"{qe_identity.id} v{qe_identity.version}",
            )

        # 4. PCK certificate chain from the quote.
        leaf, pck_ca = self._chains.pck_chain(quote, collateral.root_ca_crl, now)

        # 5. PCK CRL, issued by the leaf's CA.
        pck_crl = collateral.pck_crl
        self._chains.require_pck_crl_of(collateral, pck_ca, ca_der=quote.pck_cert_chain[1])
        require_current(pck_crl, now, "pck_crl")
        require_not_revoked(leaf, pck_crl, "pck_leaf")

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
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or not raw_signature_valid(
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
        if not raw_signature_valid(attestation_key, quote.signature, quote.signed_bytes):
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
