"""DCAP collateral for TDX: the bundle of signed documents, issuer chains and CRLs.

The signed documents keep their **exact signed JSON text** (`SignedTcbInfo.text`,
`SignedQeIdentity.text`): Intel signs the bytes of the `tcbInfo` / `enclaveIdentity` value, so
re-serialising them would break the signature. The parsed models (`attest.collateral_documents`)
are derived from that text when the object is built, so they can never disagree with what was
signed.

Two input formats, both read by `attest.collateral_load`:
(a) the JSON bundle of dcap-qvl's `QuoteCollateralV3` (hex CRLs and signatures, PEM chains),
    written by `Collateral.to_bundle_json`;
(b) raw Intel PCS responses (`{"tcbInfo": ..., "signature": ...}` bodies, URL-encoded
    issuer-chain header values, DER/PEM/hex CRLs).

No signature is checked here: that is `attest.verify`'s job. Building these objects checks
structure only and raises `CollateralFormatError` naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attest.certs import X509_PARSE_ERRORS, common_name, load_certificate
from attest.collateral_documents import QeIdentity, TcbInfo, parse_qe_identity, parse_tcb_info
from attest.errors import CollateralFormatError
from attest.strict_json import format_utc_time, load_json

ECDSA_SIGNATURE_SIZE = 64

# The PCK CRL is issued per CA; a PCK certificate names its CA in its issuer CN.
PCK_PLATFORM_CA_CN = "Intel SGX PCK Platform CA"
PCK_PROCESSOR_CA_CN = "Intel SGX PCK Processor CA"
PCK_CA_BY_ISSUER_CN = {PCK_PLATFORM_CA_CN: "platform", PCK_PROCESSOR_CA_CN: "processor"}

# Bundle (dcap-qvl QuoteCollateralV3) keys, in dcap-qvl's order.
BUNDLE_KEYS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)


@dataclass(frozen=True)
class SignedTcbInfo:
    """The exact signed `tcbInfo` text, Intel's r||s signature over it, and the parsed model."""

    text: str
    signature: bytes
    tcb_info: TcbInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_signature(self.signature, "tcb_info_signature")
        object.__setattr__(self, "tcb_info", parse_tcb_info(load_json(self.text, "tcbInfo")))


@dataclass(frozen=True)
class SignedQeIdentity:
    """The exact signed `enclaveIdentity` text, its signature, and the parsed model."""

    text: str
    signature: bytes
    qe_identity: QeIdentity = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_signature(self.signature, "qe_identity_signature")
        object.__setattr__(
            self, "qe_identity", parse_qe_identity(load_json(self.text, "enclaveIdentity"))
        )


@dataclass(frozen=True)
class CertificateChain:
    """An issuer chain (DER, signer first, root last) and its parsed certificates."""

    der: tuple[bytes, ...]
    certificates: tuple[x509.Certificate, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.der:
            raise CollateralFormatError(
                "empty certificate chain",
                check="issuer_chain",
                expected=">= 1 certificate",
                actual=0,
            )
        try:
            certificates = tuple(load_certificate(d) for d in self.der)
        except ValueError as exc:
            raise CollateralFormatError(
                "malformed certificate in issuer chain", check="issuer_chain", actual=str(exc)
            ) from None
        object.__setattr__(self, "certificates", certificates)

    @classmethod
    def from_pem(cls, pem: str | bytes, what: str) -> CertificateChain:
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except (ValueError, *X509_PARSE_ERRORS) as exc:
            raise CollateralFormatError(
                f"{what}: not a PEM certificate chain", check=what, actual=str(exc)
            ) from None
        return cls(tuple(c.public_bytes(Encoding.DER) for c in certificates))

    def to_pem(self) -> str:
        return "".join(c.public_bytes(Encoding.PEM).decode() for c in self.certificates)


@dataclass(frozen=True)
class RevocationList:
    """A CRL (DER) and what verification needs from it."""

    der: bytes
    crl: x509.CertificateRevocationList = field(init=False, repr=False, compare=False)
    issuer: x509.Name = field(init=False, repr=False, compare=False)
    this_update: datetime = field(init=False, repr=False, compare=False)
    next_update: datetime = field(init=False, repr=False, compare=False)
    revoked_serials: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            crl = x509.load_der_x509_crl(self.der)
            revoked = frozenset(entry.serial_number for entry in crl)
            issuer, this_update, next_update = crl.issuer, crl.last_update_utc, crl.next_update_utc
        except (ValueError, *X509_PARSE_ERRORS) as exc:
            raise CollateralFormatError("malformed CRL", check="crl", actual=str(exc)) from None
        if next_update is None:
            raise CollateralFormatError(
                "CRL without nextUpdate",
                check="crl.next_update",
                expected="a time",
                actual="absent",
            )
        object.__setattr__(self, "crl", crl)
        object.__setattr__(self, "issuer", issuer)
        object.__setattr__(self, "this_update", this_update)
        object.__setattr__(self, "next_update", next_update)
        object.__setattr__(self, "revoked_serials", revoked)

    @property
    def issuer_cn(self) -> str:
        return common_name(self.issuer)


@dataclass(frozen=True)
class CollateralIdentity:
    """Which collateral a verification used: for results and logs."""

    fmspc: str
    tcb_evaluation_data_number: int
    qe_identity_evaluation_data_number: int
    tcb_info_issue_date: datetime
    tcb_info_next_update: datetime
    qe_identity_issue_date: datetime
    qe_identity_next_update: datetime
    pck_crl_this_update: datetime
    pck_crl_next_update: datetime
    root_ca_crl_this_update: datetime
    root_ca_crl_next_update: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            name: format_utc_time(value) if isinstance(value, datetime) else value
            for name, value in self.__dict__.items()
        }


@dataclass(frozen=True)
class Collateral:
    """Everything DCAP verification of a TDX quote needs besides the quote and the root."""

    tcb_info: SignedTcbInfo
    tcb_info_issuer_chain: CertificateChain
    qe_identity: SignedQeIdentity
    qe_identity_issuer_chain: CertificateChain
    pck_crl: RevocationList
    pck_crl_issuer_chain: CertificateChain
    root_ca_crl: RevocationList

    @property
    def identity(self) -> CollateralIdentity:
        tcb, qe = self.tcb_info.tcb_info, self.qe_identity.qe_identity
        return CollateralIdentity(
            fmspc=tcb.fmspc.hex(),
            tcb_evaluation_data_number=tcb.tcb_evaluation_data_number,
            qe_identity_evaluation_data_number=qe.tcb_evaluation_data_number,
            tcb_info_issue_date=tcb.issue_date,
            tcb_info_next_update=tcb.next_update,
            qe_identity_issue_date=qe.issue_date,
            qe_identity_next_update=qe.next_update,
            pck_crl_this_update=self.pck_crl.this_update,
            pck_crl_next_update=self.pck_crl.next_update,
            root_ca_crl_this_update=self.root_ca_crl.this_update,
            root_ca_crl_next_update=self.root_ca_crl.next_update,
        )

    def to_bundle_json(self) -> str:
        """The dcap-qvl `QuoteCollateralV3` JSON bundle (format (a))."""
        bundle = {
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain.to_pem(),
            "root_ca_crl": self.root_ca_crl.der.hex(),
            "pck_crl": self.pck_crl.der.hex(),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain.to_pem(),
            "tcb_info": self.tcb_info.text,
            "tcb_info_signature": self.tcb_info.signature.hex(),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain.to_pem(),
            "qe_identity": self.qe_identity.text,
            "qe_identity_signature": self.qe_identity.signature.hex(),
        }
        return json.dumps(bundle, indent=2) + "\n"


def pck_ca_of(pck_certificate: x509.Certificate) -> str:
    """ "platform" or "processor": which PCK CRL covers this PCK certificate."""
    issuer_cn = common_name(pck_certificate.issuer)
    if issuer_cn not in PCK_CA_BY_ISSUER_CN:
        raise CollateralFormatError(
            "PCK certificate issued by an unknown CA",
            check="pck.issuer_cn",
            expected=sorted(PCK_CA_BY_ISSUER_CN),
            actual=issuer_cn,
        )
    return PCK_CA_BY_ISSUER_CN[issuer_cn]


def _check_signature(signature: bytes, what: str) -> None:
    if not isinstance(signature, bytes) or len(signature) != ECDSA_SIGNATURE_SIZE:
        raise CollateralFormatError(
            f"{what} must be a 64-byte r||s signature",
            check=what,
            expected=ECDSA_SIGNATURE_SIZE,
            actual=len(signature) if isinstance(signature, bytes) else None,
        )
