"""DCAP collateral for TDX: TCB info, QE identity, CRLs and issuer chains, and their loaders.

The signed documents keep their **exact signed JSON text** (`SignedTcbInfo.text`,
`SignedQeIdentity.text`): Intel signs the bytes of the `tcbInfo` / `enclaveIdentity` value, so
re-serialising them would break the signature. The parsed models are derived from that text when
the object is built, so they can never disagree with what was signed.

Two input formats:
(a) the JSON bundle of dcap-qvl's `QuoteCollateralV3` (hex CRLs and signatures, PEM chains),
    read by `collateral_from_bundle_json` and written by `Collateral.to_bundle_json`;
(b) raw Intel PCS responses (`{"tcbInfo": ..., "signature": ...}` bodies, URL-encoded
    issuer-chain header values, DER/PEM/hex CRLs), assembled by `collateral_from_pcs_responses`.

No signature is checked here: that is `attest.verify`'s job. Loading checks structure only and
raises `CollateralFormatError` naming the field.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attest.certs import X509_PARSE_ERRORS, common_name, load_certificate
from attest.errors import CollateralFormatError
from attest.pck import FMSPC_SIZE, PCE_ID_SIZE

TCB_INFO_ID_TDX = "TDX"
TCB_INFO_VERSION_TDX = 3
QE_IDENTITY_ID_TD_QE = "TD_QE"
QE_IDENTITY_VERSION = 2

TCB_COMPONENT_COUNT = 16
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

# Upper bound for any one collateral document (the largest TCB info seen is ~5 KB, PCK CRL ~3 KB).
MAX_DOCUMENT_SIZE = 1 << 20

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIME_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")


class TcbStatus(StrEnum):
    """TCB statuses as Intel's collateral spells them."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"


# Module and QE identity levels only ever carry these (Intel's VALID_MODULE_TCB_STATUSES).
IDENTITY_TCB_STATUSES = frozenset({TcbStatus.UP_TO_DATE, TcbStatus.OUT_OF_DATE, TcbStatus.REVOKED})


@dataclass(frozen=True)
class TcbLevel:
    """One platform level of the TCB info: the SVNs it requires and the status it grants."""

    sgx_tcb_components: tuple[int, ...]
    pce_svn: int
    tdx_tcb_components: tuple[int, ...] | None
    tcb_date: datetime
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class IdentityTcbLevel:
    """A TDX module or QE identity level: ISVSVN threshold and status."""

    isv_svn: int
    tcb_date: datetime
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModule:
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes


@dataclass(frozen=True)
class TdxModuleIdentity:
    id: str
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes
    tcb_levels: tuple[IdentityTcbLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    tdx_module: TdxModule | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...] | None
    tcb_levels: tuple[TcbLevel, ...]


@dataclass(frozen=True)
class QeIdentity:
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    tcb_levels: tuple[IdentityTcbLevel, ...]


@dataclass(frozen=True)
class SignedTcbInfo:
    """The exact signed `tcbInfo` text, Intel's r||s signature over it, and the parsed model."""

    text: str
    signature: bytes
    tcb_info: TcbInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_signature(self.signature, "tcb_info_signature")
        object.__setattr__(self, "tcb_info", _parse_tcb_info(_load_json(self.text, "tcbInfo")))


@dataclass(frozen=True)
class SignedQeIdentity:
    """The exact signed `enclaveIdentity` text, its signature, and the parsed model."""

    text: str
    signature: bytes
    qe_identity: QeIdentity = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_signature(self.signature, "qe_identity_signature")
        object.__setattr__(
            self, "qe_identity", _parse_qe_identity(_load_json(self.text, "enclaveIdentity"))
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
        except ValueError as exc:
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
            name: _iso(value) if isinstance(value, datetime) else value
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


# --- loaders ------------------------------------------------------------------------------------


def collateral_from_bundle_json(text: str | bytes) -> Collateral:
    """Load format (a): a dcap-qvl `QuoteCollateralV3` JSON bundle. Unknown keys are an error."""
    bundle = _load_json(_text(text, "bundle"), "bundle")
    if not isinstance(bundle, dict):
        raise CollateralFormatError(
            "bundle must be a JSON object",
            check="bundle",
            expected="object",
            actual=type(bundle).__name__,
        )
    unknown = sorted(set(bundle) - set(BUNDLE_KEYS))
    missing = [key for key in BUNDLE_KEYS if key not in bundle]
    if unknown or missing:
        raise CollateralFormatError(
            "bundle keys do not match QuoteCollateralV3",
            check="bundle.keys",
            expected=list(BUNDLE_KEYS),
            actual=f"unknown {unknown}, missing {missing}",
        )
    for key in BUNDLE_KEYS:
        if not isinstance(bundle[key], str):
            raise CollateralFormatError(
                f"bundle.{key} must be a string",
                check=f"bundle.{key}",
                expected="string",
                actual=type(bundle[key]).__name__,
            )
    return Collateral(
        tcb_info=SignedTcbInfo(
            bundle["tcb_info"], _hex(bundle["tcb_info_signature"], "bundle.tcb_info_signature")
        ),
        tcb_info_issuer_chain=CertificateChain.from_pem(
            bundle["tcb_info_issuer_chain"], "bundle.tcb_info_issuer_chain"
        ),
        qe_identity=SignedQeIdentity(
            bundle["qe_identity"],
            _hex(bundle["qe_identity_signature"], "bundle.qe_identity_signature"),
        ),
        qe_identity_issuer_chain=CertificateChain.from_pem(
            bundle["qe_identity_issuer_chain"], "bundle.qe_identity_issuer_chain"
        ),
        pck_crl=_revocation_list(_hex(bundle["pck_crl"], "bundle.pck_crl"), "bundle.pck_crl"),
        pck_crl_issuer_chain=CertificateChain.from_pem(
            bundle["pck_crl_issuer_chain"], "bundle.pck_crl_issuer_chain"
        ),
        root_ca_crl=_revocation_list(
            _hex(bundle["root_ca_crl"], "bundle.root_ca_crl"), "bundle.root_ca_crl"
        ),
    )


def collateral_from_pcs_responses(
    *,
    tcb_info_body: str | bytes,
    tcb_info_issuer_chain: str | bytes,
    qe_identity_body: str | bytes,
    qe_identity_issuer_chain: str | bytes,
    pck_crl: bytes,
    pck_crl_issuer_chain: str | bytes,
    root_ca_crl: bytes,
) -> Collateral:
    """Assemble collateral from Intel PCS (or PCCS) responses, format (b).

    `*_body` are the response bodies of `/tdx/certification/v4/tcb` and `/qe/identity`;
    `*_issuer_chain` are the values of the `TCB-Info-Issuer-Chain`,
    `SGX-Enclave-Identity-Issuer-Chain` and `SGX-PCK-CRL-Issuer-Chain` headers (URL-encoded PEM,
    as PCS sends them; plain PEM is accepted too); the CRLs are DER, PEM or hex-encoded DER
    (PCS serves the root CA CRL as hex). The signed values are cut out of the bodies verbatim.
    """
    tcb_text, tcb_signature = _signed_member(tcb_info_body, "tcbInfo", "tcb_info_body")
    qe_text, qe_signature = _signed_member(qe_identity_body, "enclaveIdentity", "qe_identity_body")
    return Collateral(
        tcb_info=SignedTcbInfo(tcb_text, tcb_signature),
        tcb_info_issuer_chain=_header_chain(tcb_info_issuer_chain, "tcb_info_issuer_chain"),
        qe_identity=SignedQeIdentity(qe_text, qe_signature),
        qe_identity_issuer_chain=_header_chain(
            qe_identity_issuer_chain, "qe_identity_issuer_chain"
        ),
        pck_crl=_revocation_list(_crl_der(pck_crl, "pck_crl"), "pck_crl"),
        pck_crl_issuer_chain=_header_chain(pck_crl_issuer_chain, "pck_crl_issuer_chain"),
        root_ca_crl=_revocation_list(_crl_der(root_ca_crl, "root_ca_crl"), "root_ca_crl"),
    )


def collateral_from_pcs_directory(directory: Path, *, fmspc: str, pck_ca: str) -> Collateral:
    """Load saved PCS responses laid out as `tcb_info_<fmspc>.json` (+ `_chain.txt`),
    `qe_identity.json` (+ `_chain.txt`), `pck_crl_<pck_ca>.crl` (+ `_chain.txt`), `root_ca.crl`.
    `pck_ca` is "platform" or "processor" (see `PCK_CA_BY_ISSUER_CN`)."""
    if pck_ca not in PCK_CA_BY_ISSUER_CN.values():
        raise CollateralFormatError(
            "unknown PCK CA",
            check="pck_ca",
            expected=sorted(PCK_CA_BY_ISSUER_CN.values()),
            actual=pck_ca,
        )
    fmspc = fmspc.lower()

    def read(name: str) -> bytes:
        path = Path(directory) / name
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CollateralFormatError(
                f"cannot read {path}", check=name, actual=exc.strerror
            ) from None

    return collateral_from_pcs_responses(
        tcb_info_body=read(f"tcb_info_{fmspc}.json"),
        tcb_info_issuer_chain=read(f"tcb_info_{fmspc}_chain.txt"),
        qe_identity_body=read("qe_identity.json"),
        qe_identity_issuer_chain=read("qe_identity_chain.txt"),
        pck_crl=read(f"pck_crl_{pck_ca}.crl"),
        pck_crl_issuer_chain=read(f"pck_crl_{pck_ca}_chain.txt"),
        root_ca_crl=read("root_ca.crl"),
    )


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


# --- document models ----------------------------------------------------------------------------


def _parse_tcb_info(doc: Any) -> TcbInfo:
    path = "tcbInfo"
    obj = _object(doc, path)
    tcb_id = _get(obj, "id", str, path)
    tdx_module = None
    if "tdxModule" in obj:
        tdx_module = _tdx_module(
            _object(obj["tdxModule"], f"{path}.tdxModule"), f"{path}.tdxModule"
        )
    identities = None
    if "tdxModuleIdentities" in obj:
        identities = tuple(
            _tdx_module_identity(item, f"{path}.tdxModuleIdentities[{i}]")
            for i, item in enumerate(_get(obj, "tdxModuleIdentities", list, path))
        )
    levels = tuple(
        _tcb_level(item, f"{path}.tcbLevels[{i}]", tdx=tcb_id == TCB_INFO_ID_TDX)
        for i, item in enumerate(_get(obj, "tcbLevels", list, path))
    )
    if not levels:
        raise CollateralFormatError(
            "tcbInfo has no TCB levels", check=f"{path}.tcbLevels", expected=">= 1 level", actual=0
        )
    return TcbInfo(
        id=tcb_id,
        version=_get(obj, "version", int, path),
        issue_date=_time(obj, "issueDate", path),
        next_update=_time(obj, "nextUpdate", path),
        fmspc=_hex_field(obj, "fmspc", path, FMSPC_SIZE),
        pce_id=_hex_field(obj, "pceId", path, PCE_ID_SIZE),
        tcb_type=_get(obj, "tcbType", int, path),
        tcb_evaluation_data_number=_get(obj, "tcbEvaluationDataNumber", int, path),
        tdx_module=tdx_module,
        tdx_module_identities=identities,
        tcb_levels=levels,
    )


def _tdx_module(obj: dict[str, Any], path: str) -> TdxModule:
    return TdxModule(
        mr_signer=_hex_field(obj, "mrsigner", path, 48),
        attributes=_hex_field(obj, "attributes", path, 8),
        attributes_mask=_hex_field(obj, "attributesMask", path, 8),
    )


def _tdx_module_identity(doc: Any, path: str) -> TdxModuleIdentity:
    obj = _object(doc, path)
    module = _tdx_module(obj, path)
    return TdxModuleIdentity(
        id=_get(obj, "id", str, path),
        mr_signer=module.mr_signer,
        attributes=module.attributes,
        attributes_mask=module.attributes_mask,
        tcb_levels=_identity_levels(obj, path),
    )


def _tcb_level(doc: Any, path: str, *, tdx: bool) -> TcbLevel:
    obj = _object(doc, path)
    tcb = _object(_get(obj, "tcb", dict, path), f"{path}.tcb")
    tdx_components = None
    if tdx or "tdxtcbcomponents" in tcb:
        tdx_components = _components(tcb, "tdxtcbcomponents", f"{path}.tcb")
    return TcbLevel(
        sgx_tcb_components=_components(tcb, "sgxtcbcomponents", f"{path}.tcb"),
        pce_svn=_svn(tcb, "pcesvn", f"{path}.tcb", 0xFFFF),
        tdx_tcb_components=tdx_components,
        tcb_date=_time(obj, "tcbDate", path),
        tcb_status=_status(obj, path, frozenset(TcbStatus)),
        advisory_ids=_advisory_ids(obj, path),
    )


def _identity_levels(obj: dict[str, Any], path: str) -> tuple[IdentityTcbLevel, ...]:
    levels = []
    for i, item in enumerate(_get(obj, "tcbLevels", list, path)):
        level_path = f"{path}.tcbLevels[{i}]"
        level = _object(item, level_path)
        tcb = _object(_get(level, "tcb", dict, level_path), f"{level_path}.tcb")
        levels.append(
            IdentityTcbLevel(
                isv_svn=_svn(tcb, "isvsvn", f"{level_path}.tcb", 0xFFFF),
                tcb_date=_time(level, "tcbDate", level_path),
                tcb_status=_status(level, level_path, IDENTITY_TCB_STATUSES),
                advisory_ids=_advisory_ids(level, level_path),
            )
        )
    if not levels:
        raise CollateralFormatError(
            "identity has no TCB levels", check=f"{path}.tcbLevels", expected=">= 1 level", actual=0
        )
    return tuple(levels)


def _parse_qe_identity(doc: Any) -> QeIdentity:
    path = "enclaveIdentity"
    obj = _object(doc, path)
    return QeIdentity(
        id=_get(obj, "id", str, path),
        version=_get(obj, "version", int, path),
        issue_date=_time(obj, "issueDate", path),
        next_update=_time(obj, "nextUpdate", path),
        tcb_evaluation_data_number=_get(obj, "tcbEvaluationDataNumber", int, path),
        miscselect=int.from_bytes(_hex_field(obj, "miscselect", path, 4), "big"),
        miscselect_mask=int.from_bytes(_hex_field(obj, "miscselectMask", path, 4), "big"),
        attributes=_hex_field(obj, "attributes", path, 16),
        attributes_mask=_hex_field(obj, "attributesMask", path, 16),
        mr_signer=_hex_field(obj, "mrsigner", path, 32),
        isv_prod_id=_svn(obj, "isvprodid", path, 0xFFFF),
        tcb_levels=_identity_levels(obj, path),
    )


# --- JSON field helpers -------------------------------------------------------------------------


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CollateralFormatError(
            f"{path} must be an object", check=path, expected="object", actual=type(value).__name__
        )
    return value


def _get(obj: dict[str, Any], key: str, kind: type, path: str) -> Any:
    if key not in obj:
        raise CollateralFormatError(
            f"{path}.{key} is missing",
            check=f"{path}.{key}",
            expected=kind.__name__,
            actual="absent",
        )
    value = obj[key]
    # JSON true/false are ints in Python; an SVN or version must never be a boolean.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CollateralFormatError(
            f"{path}.{key} has the wrong type",
            check=f"{path}.{key}",
            expected=kind.__name__,
            actual=type(value).__name__,
        )
    return value


def _svn(obj: dict[str, Any], key: str, path: str, high: int) -> int:
    value: int = _get(obj, key, int, path)
    if not 0 <= value <= high:
        raise CollateralFormatError(
            f"{path}.{key} out of range", check=f"{path}.{key}", expected=f"0..{high}", actual=value
        )
    return value


def _components(tcb: dict[str, Any], key: str, path: str) -> tuple[int, ...]:
    items = _get(tcb, key, list, path)
    if len(items) != TCB_COMPONENT_COUNT:
        raise CollateralFormatError(
            f"{path}.{key} must list 16 components",
            check=f"{path}.{key}",
            expected=TCB_COMPONENT_COUNT,
            actual=len(items),
        )
    return tuple(
        _svn(_object(item, f"{path}.{key}[{i}]"), "svn", f"{path}.{key}[{i}]", 0xFF)
        for i, item in enumerate(items)
    )


def _status(obj: dict[str, Any], path: str, allowed: frozenset[TcbStatus]) -> TcbStatus:
    text = _get(obj, "tcbStatus", str, path)
    try:
        status = TcbStatus(text)
    except ValueError:
        status = None
    if status not in allowed:
        raise CollateralFormatError(
            f"{path}.tcbStatus is not a known status",
            check=f"{path}.tcbStatus",
            expected=sorted(s.value for s in allowed),
            actual=text,
        )
    return status


def _advisory_ids(obj: dict[str, Any], path: str) -> tuple[str, ...]:
    if "advisoryIDs" not in obj:
        return ()
    ids = _get(obj, "advisoryIDs", list, path)
    if not all(isinstance(i, str) for i in ids):
        raise CollateralFormatError(
            f"{path}.advisoryIDs must be strings", check=f"{path}.advisoryIDs"
        )
    return tuple(ids)


def _time(obj: dict[str, Any], key: str, path: str) -> datetime:
    text = _get(obj, key, str, path)
    if not _TIME_PATTERN.fullmatch(text):
        raise CollateralFormatError(
            f"{path}.{key} is not a UTC time",
            check=f"{path}.{key}",
            expected="YYYY-MM-DDTHH:MM:SSZ",
            actual=text,
        )
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise CollateralFormatError(
            f"{path}.{key} is not a valid date", check=f"{path}.{key}", actual=text
        ) from None


def _hex_field(obj: dict[str, Any], key: str, path: str, size: int) -> bytes:
    value = _hex(_get(obj, key, str, path), f"{path}.{key}")
    if len(value) != size:
        raise CollateralFormatError(
            f"{path}.{key} has the wrong size",
            check=f"{path}.{key}",
            expected=f"{size} bytes",
            actual=len(value),
        )
    return value


def _hex(text: str, what: str) -> bytes:
    try:
        if not re.fullmatch(r"(?:[0-9a-fA-F]{2})*", text):
            raise ValueError(text[:32])
        return bytes.fromhex(text)
    except (TypeError, ValueError):
        raise CollateralFormatError(
            f"{what} is not hex", check=what, expected="hex string", actual=repr(text)[:40]
        ) from None


def _check_signature(signature: bytes, what: str) -> None:
    if not isinstance(signature, bytes) or len(signature) != ECDSA_SIGNATURE_SIZE:
        raise CollateralFormatError(
            f"{what} must be a 64-byte r||s signature",
            check=what,
            expected=ECDSA_SIGNATURE_SIZE,
            actual=len(signature) if isinstance(signature, bytes) else None,
        )


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # A signed document with two values for one key could be read two ways.
            raise CollateralFormatError("duplicate JSON key", check="json.keys", actual=key)
        result[key] = value
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicate_keys)


def _load_json(text: str, what: str) -> Any:
    if not isinstance(text, str):
        raise CollateralFormatError(
            f"{what} must be JSON text", check=what, expected="str", actual=type(text).__name__
        )
    if len(text) > MAX_DOCUMENT_SIZE:
        raise CollateralFormatError(
            f"{what} too large", check=what, expected=f"<= {MAX_DOCUMENT_SIZE}", actual=len(text)
        )
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise CollateralFormatError(
            f"{what} is not valid JSON", check=what, actual=str(exc)
        ) from None


def _text(data: str | bytes, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise CollateralFormatError(f"{what} is not UTF-8", check=what) from None


def _member_texts(body: str, what: str) -> dict[str, str]:
    """The top-level members of a JSON object with the exact source text of each value."""

    def fail(reason: str) -> CollateralFormatError:
        return CollateralFormatError(f"{what}: {reason}", check=what)

    def skip(pos: int) -> int:
        return _JSON_WHITESPACE.match(body, pos).end()  # type: ignore[union-attr]

    members: dict[str, str] = {}
    pos = skip(0)
    if body[pos : pos + 1] != "{":
        raise fail("not a JSON object")
    pos = skip(pos + 1)
    try:
        while body[pos : pos + 1] != "}":
            if body[pos : pos + 1] != '"':
                raise fail("expected a member name")
            # typeshed does not declare json.decoder.scanstring, the decoder's own string scanner.
            key, pos = json.decoder.scanstring(body, pos + 1)  # type: ignore[attr-defined]
            pos = skip(pos)
            if body[pos : pos + 1] != ":":
                raise fail("expected ':'")
            start = skip(pos + 1)
            _, end = _DECODER.raw_decode(body, start)
            if key in members:
                raise fail(f"duplicate member {key!r}")
            members[key] = body[start:end]
            pos = skip(end)
            if body[pos : pos + 1] == ",":
                pos = skip(pos + 1)
                if body[pos : pos + 1] == "}":
                    raise fail("trailing comma")
            elif body[pos : pos + 1] != "}":
                raise fail("expected ',' or '}'")
    except json.JSONDecodeError as exc:
        raise fail(f"invalid JSON ({exc})") from None
    if body[skip(pos + 1) :]:
        raise fail("data after the JSON object")
    return members


def _signed_member(body: str | bytes, name: str, what: str) -> tuple[str, bytes]:
    """(exact text of `name`, signature) from a PCS body `{"<name>": {...}, "signature": "hex"}`."""
    text = _text(body, what)
    if len(text) > MAX_DOCUMENT_SIZE:
        raise CollateralFormatError(
            f"{what} too large", check=what, expected=f"<= {MAX_DOCUMENT_SIZE}", actual=len(text)
        )
    members = _member_texts(text, what)
    if set(members) != {name, "signature"}:
        raise CollateralFormatError(
            f"{what}: unexpected members",
            check=what,
            expected=[name, "signature"],
            actual=sorted(members),
        )
    signature = _load_json(members["signature"], f"{what}.signature")
    if not isinstance(signature, str):
        raise CollateralFormatError(
            f"{what}.signature must be a hex string", check=f"{what}.signature"
        )
    return members[name], _hex(signature, f"{what}.signature")


def _header_chain(value: str | bytes, what: str) -> CertificateChain:
    text = _text(value, what).strip()
    return CertificateChain.from_pem(urllib.parse.unquote(text, errors="strict"), what)


def _crl_der(data: bytes | str, what: str) -> bytes:
    """A CRL as DER, from DER, PEM or hex-encoded DER."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if raw.startswith(b"\x30"):
        return raw
    stripped = raw.strip()
    if stripped.startswith(b"-----BEGIN X509 CRL-----"):
        try:
            return x509.load_pem_x509_crl(stripped).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise CollateralFormatError(
                f"{what}: malformed PEM CRL", check=what, actual=str(exc)
            ) from None
    return _hex(_text(stripped, what), what)


def _revocation_list(der: bytes, what: str) -> RevocationList:
    try:
        return RevocationList(der)
    except CollateralFormatError as exc:
        raise CollateralFormatError(f"{what}: {exc}", check=what) from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)
