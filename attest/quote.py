"""TDX quotes, versions 4 and 5: bytes to frozen structures and back. No cryptography here.

Layouts follow Intel's `sgx_quote_4.h` / `sgx_quote_5.h`; integers are little-endian. A quote is

    header (48) [v5: body descriptor: u16 type, u32 size] TD report body (584 or 648)
    u32 signature data length, signature data, [padding]

and the signature data is: ECDSA signature r||s (64), attestation key x||y (64), certification
data type 6 (QE report certification data) = QE report (384), its signature (64), QE auth data
(u16 size + bytes), and certification data type 5 = the PCK certificate chain as PEM.

Rules that make every byte count, so that no single changed byte can pass parse and verify:
- every length field must agree with the others and with the input;
- the PEM chain must be canonical: exactly the bytes that re-encoding its certificates gives
  (`-----BEGIN CERTIFICATE-----`, base64 in 64-column lines, LF line ends, nothing between
  blocks), optionally followed by one NUL byte (most quoting enclaves add one);
- bytes after the signature data (fixed-size quote buffers) must all be zero. Anything else is a
  `FormatError` unless the caller passes `unsafe_allow_trailing_data=True`; the bytes are kept in
  `Quote.padding` either way, so `to_bytes()` round-trips byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from attest.der import TAG_SEQUENCE, single
from attest.errors import FormatError


class Span(NamedTuple):
    """Where a field lives: offset from the start of its structure, and size in bytes."""

    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


# Quote header (48 bytes).
HEADER_VERSION = Span(0, 2)
HEADER_ATT_KEY_TYPE = Span(2, 2)
HEADER_TEE_TYPE = Span(4, 4)
HEADER_RESERVED = Span(8, 4)
HEADER_QE_VENDOR_ID = Span(12, 16)
HEADER_USER_DATA = Span(28, 20)
HEADER_SIZE = 48

QUOTE_VERSION_4 = 4
QUOTE_VERSION_5 = 5
ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x00000081
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# v5 body descriptor, right after the header.
BODY_DESCRIPTOR_TYPE = Span(0, 2)
BODY_DESCRIPTOR_SIZE = Span(2, 4)
BODY_DESCRIPTOR_LENGTH = 6

BODY_TYPE_TD_REPORT10 = 2
BODY_TYPE_TD_REPORT15 = 3
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
BODY_SIZES = {BODY_TYPE_TD_REPORT10: TD_REPORT10_SIZE, BODY_TYPE_TD_REPORT15: TD_REPORT15_SIZE}

# TD report body (sgx_report2_body_t, and _v1_5_t for the last two), offsets from its start.
TD_TEE_TCB_SVN = Span(0, 16)
TD_MR_SEAM = Span(16, 48)
TD_MR_SIGNER_SEAM = Span(64, 48)
TD_SEAM_ATTRIBUTES = Span(112, 8)
TD_ATTRIBUTES = Span(120, 8)
TD_XFAM = Span(128, 8)
TD_MR_TD = Span(136, 48)
TD_MR_CONFIG_ID = Span(184, 48)
TD_MR_OWNER = Span(232, 48)
TD_MR_OWNER_CONFIG = Span(280, 48)
TD_RTMR = (Span(328, 48), Span(376, 48), Span(424, 48), Span(472, 48))
TD_REPORT_DATA = Span(520, 64)
TD_TEE_TCB_SVN2 = Span(584, 16)
TD_MR_SERVICE_TD = Span(600, 48)

REPORT_DATA_OFFSET_V4 = HEADER_SIZE + TD_REPORT_DATA.offset
REPORT_DATA_OFFSET_V5 = HEADER_SIZE + BODY_DESCRIPTOR_LENGTH + TD_REPORT_DATA.offset

REPORT_DATA_SIZE = 64  # TDREPORT.REPORTDATA, the 64 bytes a TD binds into its quote

# TD attributes (TDATTRIBUTES as a little-endian u64).
TD_ATTRIBUTE_DEBUG = 1 << 0
TD_ATTRIBUTE_SEPT_VE_DISABLE = 1 << 28

# Signature data, after its u32 length.
SIGNATURE_DATA_LENGTH_SIZE = 4
QUOTE_SIGNATURE = Span(0, 64)
ATTESTATION_KEY = Span(64, 64)
CERTIFICATION_DATA_TYPE = Span(0, 2)
CERTIFICATION_DATA_SIZE = Span(2, 4)
CERTIFICATION_DATA_HEADER_SIZE = 6
SIGNATURE_DATA_FIXED_SIZE = ATTESTATION_KEY.end + CERTIFICATION_DATA_HEADER_SIZE  # 134

CERTIFICATION_DATA_PCK_CERT_CHAIN = 5
CERTIFICATION_DATA_QE_REPORT = 6

# QE report certification data (type 6).
QE_REPORT = Span(0, 384)
QE_REPORT_SIGNATURE = Span(384, 64)
QE_AUTH_DATA_SIZE = Span(448, 2)
QE_AUTH_DATA_OFFSET = QE_AUTH_DATA_SIZE.end

# SGX report body (sgx_report_body_t): the QE report.
QE_CPU_SVN = Span(0, 16)
QE_MISC_SELECT = Span(16, 4)
QE_RESERVED1 = Span(20, 12)
QE_ISV_EXT_PROD_ID = Span(32, 16)
QE_ATTRIBUTES = Span(48, 16)
QE_MR_ENCLAVE = Span(64, 32)
QE_RESERVED2 = Span(96, 32)
QE_MR_SIGNER = Span(128, 32)
QE_RESERVED3 = Span(160, 32)
QE_CONFIG_ID = Span(192, 64)
QE_ISV_PROD_ID = Span(256, 2)
QE_ISV_SVN = Span(258, 2)
QE_CONFIG_SVN = Span(260, 2)
QE_RESERVED4 = Span(262, 42)
QE_ISV_FAMILY_ID = Span(304, 16)
QE_REPORT_DATA = Span(320, 64)
ENCLAVE_REPORT_SIZE = 384

ECDSA_SIGNATURE_SIZE = 64
ATTESTATION_KEY_SIZE = 64

# A bound on input size: the largest quote seen is an 8000-byte buffer.
MAX_QUOTE_SIZE = 1 << 20

PEM_BEGIN = b"-----BEGIN CERTIFICATE-----\n"
PEM_END = b"-----END CERTIFICATE-----\n"
PEM_LINE_LENGTH = 64


def _le(data: bytes, span: Span, base: int = 0) -> int:
    return int.from_bytes(data[base + span.offset : base + span.end], "little")


def _take(data: bytes, span: Span, base: int = 0) -> bytes:
    return data[base + span.offset : base + span.end]


def _require_size(owner: str, name: str, value: bytes, size: int) -> None:
    if type(value) is not bytes or len(value) != size:
        actual = len(value) if isinstance(value, bytes) else type(value).__name__
        raise FormatError(
            f"{owner}.{name} has the wrong size",
            check=f"{owner}.{name}",
            expected=size,
            actual=actual,
        )


_UINT_FORMATS = {1: "B", 2: "H", 4: "I", 8: "Q"}


class _Layout:
    """A fixed-size structure described by (attribute, span, is_integer) rows: packs and unpacks
    it with one `struct` call and checks the sizes and ranges of field values."""

    def __init__(self, owner: str, fields: tuple[tuple[str, Span, bool], ...], size: int) -> None:
        offset = 0
        for name, span, _ in fields:
            if span.offset != offset:
                raise AssertionError(f"{owner}.{name}: layout gap or overlap at {offset}")
            offset = span.end
        if offset != size:
            raise AssertionError(f"{owner}: layout covers {offset} of {size} bytes")
        self.owner = owner
        self.fields = fields
        self.names = tuple(name for name, _, _ in fields)
        self._struct = struct.Struct(
            "<"
            + "".join(
                _UINT_FORMATS[span.size] if is_integer else f"{span.size}s"
                for _, span, is_integer in fields
            )
        )

    def unpack(self, data: bytes, offset: int = 0) -> tuple[Any, ...]:
        return self._struct.unpack_from(data, offset)

    def pack(self, values: tuple[Any, ...]) -> bytes:
        return self._struct.pack(*values)

    def check(self, values: tuple[Any, ...]) -> None:
        for (name, span, is_integer), value in zip(self.fields, values, strict=True):
            if is_integer:
                if type(value) is not int or not 0 <= value < 1 << (8 * span.size):
                    raise FormatError(
                        f"{self.owner}.{name} out of range",
                        check=f"{self.owner}.{name}",
                        expected=f"u{8 * span.size}",
                        actual=value,
                    )
            elif type(value) is not bytes or len(value) != span.size:
                actual = len(value) if isinstance(value, bytes) else type(value).__name__
                raise FormatError(
                    f"{self.owner}.{name} has the wrong size",
                    check=f"{self.owner}.{name}",
                    expected=span.size,
                    actual=actual,
                )


_HEADER = _Layout(
    "header",
    (
        ("version", HEADER_VERSION, True),
        ("att_key_type", HEADER_ATT_KEY_TYPE, True),
        ("tee_type", HEADER_TEE_TYPE, True),
        ("reserved", HEADER_RESERVED, False),
        ("qe_vendor_id", HEADER_QE_VENDOR_ID, False),
        ("user_data", HEADER_USER_DATA, False),
    ),
    HEADER_SIZE,
)


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int
    reserved: bytes
    qe_vendor_id: bytes
    user_data: bytes

    def __post_init__(self) -> None:
        _HEADER.check(self._values())

    def _values(self) -> tuple[Any, ...]:
        return (
            self.version,
            self.att_key_type,
            self.tee_type,
            self.reserved,
            self.qe_vendor_id,
            self.user_data,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> QuoteHeader:
        return cls(*_HEADER.unpack(data))

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self._values())


# The TD report body in layout order; the four RTMRs form `TdReport.rtmr`.
_TD_REPORT10 = _Layout(
    "td_report",
    (
        ("tee_tcb_svn", TD_TEE_TCB_SVN, False),
        ("mr_seam", TD_MR_SEAM, False),
        ("mr_signer_seam", TD_MR_SIGNER_SEAM, False),
        ("seam_attributes", TD_SEAM_ATTRIBUTES, False),
        ("td_attributes", TD_ATTRIBUTES, False),
        ("xfam", TD_XFAM, False),
        ("mr_td", TD_MR_TD, False),
        ("mr_config_id", TD_MR_CONFIG_ID, False),
        ("mr_owner", TD_MR_OWNER, False),
        ("mr_owner_config", TD_MR_OWNER_CONFIG, False),
        *((f"rtmr[{index}]", span, False) for index, span in enumerate(TD_RTMR)),
        ("report_data", TD_REPORT_DATA, False),
    ),
    TD_REPORT10_SIZE,
)
_TD_REPORT15 = _Layout(
    "td_report",
    (
        *_TD_REPORT10.fields,
        ("tee_tcb_svn2", TD_TEE_TCB_SVN2, False),
        ("mr_service_td", TD_MR_SERVICE_TD, False),
    ),
    TD_REPORT15_SIZE,
)
_RTMR_SLICE = slice(10, 14)


@dataclass(frozen=True)
class TdReport:
    """TD report body 1.0 (584 bytes), or 1.5 (648 bytes) when `tee_tcb_svn2` and
    `mr_service_td` are set. Attribute fields are kept as the stored little-endian bytes."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmr: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None

    def __post_init__(self) -> None:
        if type(self.rtmr) is not tuple or len(self.rtmr) != len(TD_RTMR):
            raise FormatError(
                "td_report.rtmr must be a 4-tuple",
                check="td_report.rtmr",
                expected=len(TD_RTMR),
                actual=len(self.rtmr),
            )
        if (self.tee_tcb_svn2 is None) != (self.mr_service_td is None):
            raise FormatError(
                "TD report 1.5 fields must be both set or both absent",
                check="td_report.tee_tcb_svn2",
            )
        (_TD_REPORT15 if self.is_td15 else _TD_REPORT10).check(self._values())

    def _values(self) -> tuple[Any, ...]:
        values = (
            self.tee_tcb_svn,
            self.mr_seam,
            self.mr_signer_seam,
            self.seam_attributes,
            self.td_attributes,
            self.xfam,
            self.mr_td,
            self.mr_config_id,
            self.mr_owner,
            self.mr_owner_config,
            *self.rtmr,
            self.report_data,
        )
        return (*values, self.tee_tcb_svn2, self.mr_service_td) if self.is_td15 else values

    @property
    def is_td15(self) -> bool:
        return self.tee_tcb_svn2 is not None

    @property
    def size(self) -> int:
        return TD_REPORT15_SIZE if self.is_td15 else TD_REPORT10_SIZE

    @property
    def td_attributes_value(self) -> int:
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes_value & TD_ATTRIBUTE_DEBUG)

    @property
    def sept_ve_disable(self) -> bool:
        return bool(self.td_attributes_value & TD_ATTRIBUTE_SEPT_VE_DISABLE)

    @classmethod
    def from_bytes(cls, data: bytes, *, td15: bool) -> TdReport:
        values = (_TD_REPORT15 if td15 else _TD_REPORT10).unpack(data)
        rtmr0, rtmr1, rtmr2, rtmr3 = values[_RTMR_SLICE]
        fields: list[Any] = [
            *values[: _RTMR_SLICE.start],
            (rtmr0, rtmr1, rtmr2, rtmr3),
            *values[_RTMR_SLICE.stop :],
        ]
        return cls(*fields)

    def to_bytes(self) -> bytes:
        return (_TD_REPORT15 if self.is_td15 else _TD_REPORT10).pack(self._values())


# The SGX report body in layout order.
_ENCLAVE_REPORT = _Layout(
    "qe_report",
    (
        ("cpu_svn", QE_CPU_SVN, False),
        ("misc_select", QE_MISC_SELECT, True),
        ("reserved1", QE_RESERVED1, False),
        ("isv_ext_prod_id", QE_ISV_EXT_PROD_ID, False),
        ("attributes", QE_ATTRIBUTES, False),
        ("mr_enclave", QE_MR_ENCLAVE, False),
        ("reserved2", QE_RESERVED2, False),
        ("mr_signer", QE_MR_SIGNER, False),
        ("reserved3", QE_RESERVED3, False),
        ("config_id", QE_CONFIG_ID, False),
        ("isv_prod_id", QE_ISV_PROD_ID, True),
        ("isv_svn", QE_ISV_SVN, True),
        ("config_svn", QE_CONFIG_SVN, True),
        ("reserved4", QE_RESERVED4, False),
        ("isv_family_id", QE_ISV_FAMILY_ID, False),
        ("report_data", QE_REPORT_DATA, False),
    ),
    ENCLAVE_REPORT_SIZE,
)


@dataclass(frozen=True)
class EnclaveReport:
    """An SGX report body: here, the quoting enclave's report (signed by the PCK key)."""

    cpu_svn: bytes
    misc_select: int
    reserved1: bytes
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    reserved2: bytes
    mr_signer: bytes
    reserved3: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    reserved4: bytes
    isv_family_id: bytes
    report_data: bytes

    def __post_init__(self) -> None:
        _ENCLAVE_REPORT.check(self._values())

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _ENCLAVE_REPORT.names)

    @classmethod
    def from_bytes(cls, data: bytes) -> EnclaveReport:
        return cls(*_ENCLAVE_REPORT.unpack(data))

    def to_bytes(self) -> bytes:
        return _ENCLAVE_REPORT.pack(self._values())


@dataclass(frozen=True)
class PckCertChain:
    """Certification data type 5: the PCK certificate chain (DER, leaf first), stored in the
    quote as canonical PEM, optionally NUL-terminated."""

    certificates: tuple[bytes, ...]
    nul_terminated: bool = False

    def __post_init__(self) -> None:
        if not self.certificates:
            raise FormatError(
                "PCK certificate chain is empty",
                check="pck_cert_chain",
                expected=">= 1 certificate",
                actual=0,
            )
        for index, der in enumerate(self.certificates):
            _check_der_sequence(der, f"pck_cert_chain[{index}]")

    @classmethod
    def from_bytes(cls, data: bytes) -> PckCertChain:
        nul_terminated = data.endswith(b"\0")
        text = data[:-1] if nul_terminated else data
        certificates: list[bytes] = []
        pos = 0
        while pos < len(text):
            index = len(certificates)
            if not text.startswith(PEM_BEGIN, pos):
                raise FormatError(
                    "PCK chain: expected a PEM certificate block",
                    check=f"pck_cert_chain[{index}].begin",
                    expected=PEM_BEGIN.decode(),
                    actual=repr(text[pos : pos + len(PEM_BEGIN)]),
                )
            end = text.find(PEM_END, pos)
            if end < 0:
                raise FormatError(
                    "PCK chain: PEM block without END line", check=f"pck_cert_chain[{index}].end"
                )
            lines = text[pos + len(PEM_BEGIN) : end]
            body = lines.replace(b"\n", b"")
            try:
                der = base64.b64decode(body, validate=True)
            except binascii.Error as exc:
                raise FormatError(
                    "PCK chain: invalid base64", check=f"pck_cert_chain[{index}]", actual=str(exc)
                ) from None
            block_end = end + len(PEM_END)
            # Canonical PEM, i.e. what `_pem_block(der)` gives, checked without rebuilding it:
            # the base64 is the encoding of the certificate (no stray padding bits), and the
            # only LFs end each 64-column line and the last line.
            if (
                base64.b64encode(der) != body
                or not lines.endswith(b"\n")
                or len(lines) - len(body) != -(-len(body) // PEM_LINE_LENGTH)
                or lines[PEM_LINE_LENGTH :: PEM_LINE_LENGTH + 1].strip(b"\n")
            ):
                raise FormatError(
                    "PCK chain: PEM block is not canonical",
                    check=f"pck_cert_chain[{index}].pem",
                    expected="64-column base64, LF line ends",
                )
            certificates.append(der)
            pos = block_end
        return cls(tuple(certificates), nul_terminated)

    def to_bytes(self) -> bytes:
        return b"".join(map(_pem_block, self.certificates)) + (
            b"\0" if self.nul_terminated else b""
        )


def _pem_block(der: bytes) -> bytes:
    encoded = base64.b64encode(der)
    lines = [encoded[i : i + PEM_LINE_LENGTH] for i in range(0, len(encoded), PEM_LINE_LENGTH)]
    return PEM_BEGIN + b"\n".join(lines) + b"\n" + PEM_END


def _check_der_sequence(der: bytes, field: str) -> None:
    """The outer TLV of a certificate: one DER SEQUENCE that covers exactly `der`."""
    if not isinstance(der, bytes):
        raise FormatError(f"{field} must be bytes", check=field, actual=type(der).__name__)
    single(der, TAG_SEQUENCE, field)


@dataclass(frozen=True)
class QeReportCertificationData:
    """Certification data type 6: the QE report, its signature by the PCK key, the QE auth
    data, and the PCK certificate chain (type 5)."""

    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_cert_chain: PckCertChain

    def __post_init__(self) -> None:
        _require_size(
            "certification_data",
            "qe_report_signature",
            self.qe_report_signature,
            QE_REPORT_SIGNATURE.size,
        )
        if not isinstance(self.qe_auth_data, bytes) or len(self.qe_auth_data) >= 1 << 16:
            raise FormatError(
                "QE auth data too long",
                check="certification_data.qe_auth_data",
                expected="< 65536 bytes",
                actual=len(self.qe_auth_data),
            )

    @classmethod
    def from_bytes(cls, data: bytes) -> QeReportCertificationData:
        what = "certification_data"
        if len(data) < QE_AUTH_DATA_OFFSET:
            raise FormatError(
                "QE report certification data is truncated",
                check=f"{what}.size",
                expected=f">= {QE_AUTH_DATA_OFFSET}",
                actual=len(data),
            )
        auth_size = _le(data, QE_AUTH_DATA_SIZE)
        inner = QE_AUTH_DATA_OFFSET + auth_size
        if len(data) < inner + CERTIFICATION_DATA_HEADER_SIZE:
            raise FormatError(
                "QE auth data runs past the certification data",
                check=f"{what}.qe_auth_data_size",
                expected=f"<= {len(data) - QE_AUTH_DATA_OFFSET - CERTIFICATION_DATA_HEADER_SIZE}",
                actual=auth_size,
            )
        inner_type = _le(data, CERTIFICATION_DATA_TYPE, inner)
        if inner_type != CERTIFICATION_DATA_PCK_CERT_CHAIN:
            raise FormatError(
                "unsupported inner certification data type",
                check=f"{what}.inner_type",
                expected=CERTIFICATION_DATA_PCK_CERT_CHAIN,
                actual=inner_type,
            )
        inner_size = _le(data, CERTIFICATION_DATA_SIZE, inner)
        chain_start = inner + CERTIFICATION_DATA_HEADER_SIZE
        if chain_start + inner_size != len(data):
            raise FormatError(
                "inner certification data size does not match",
                check=f"{what}.inner_size",
                expected=len(data) - chain_start,
                actual=inner_size,
            )
        return cls(
            qe_report=EnclaveReport.from_bytes(_take(data, QE_REPORT)),
            qe_report_signature=_take(data, QE_REPORT_SIGNATURE),
            qe_auth_data=data[QE_AUTH_DATA_OFFSET:inner],
            pck_cert_chain=PckCertChain.from_bytes(data[chain_start:]),
        )

    def to_bytes(self) -> bytes:
        chain = self.pck_cert_chain.to_bytes()
        return b"".join(
            (
                self.qe_report.to_bytes(),
                self.qe_report_signature,
                len(self.qe_auth_data).to_bytes(QE_AUTH_DATA_SIZE.size, "little"),
                self.qe_auth_data,
                CERTIFICATION_DATA_PCK_CERT_CHAIN.to_bytes(CERTIFICATION_DATA_TYPE.size, "little"),
                len(chain).to_bytes(CERTIFICATION_DATA_SIZE.size, "little"),
                chain,
            )
        )


@dataclass(frozen=True)
class Quote:
    """A parsed TDX quote (v4 or v5). `signed_bytes` is what the attestation key signed."""

    header: QuoteHeader
    body: TdReport
    signature: bytes
    attestation_key: bytes
    certification_data: QeReportCertificationData
    padding: bytes = b""

    def __post_init__(self) -> None:
        _require_size("quote", "signature", self.signature, ECDSA_SIGNATURE_SIZE)
        _require_size("quote", "attestation_key", self.attestation_key, ATTESTATION_KEY_SIZE)
        if self.header.version == QUOTE_VERSION_4 and self.body.is_td15:
            raise FormatError(
                "a v4 quote carries a TD report 1.0",
                check="quote.body",
                expected=TD_REPORT10_SIZE,
                actual=TD_REPORT15_SIZE,
            )

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def body_type(self) -> int:
        return BODY_TYPE_TD_REPORT15 if self.body.is_td15 else BODY_TYPE_TD_REPORT10

    @property
    def signed_bytes(self) -> bytes:
        """Header [+ v5 body descriptor] + body: the region the quote signature covers."""
        return self.header.to_bytes() + self._descriptor() + self.body.to_bytes()

    @property
    def pck_cert_chain(self) -> tuple[bytes, ...]:
        return self.certification_data.pck_cert_chain.certificates

    def _descriptor(self) -> bytes:
        if self.header.version != QUOTE_VERSION_5:
            return b""
        return self.body_type.to_bytes(
            BODY_DESCRIPTOR_TYPE.size, "little"
        ) + self.body.size.to_bytes(BODY_DESCRIPTOR_SIZE.size, "little")

    def to_bytes(self) -> bytes:
        certification = self.certification_data.to_bytes()
        signature_data = b"".join(
            (
                self.signature,
                self.attestation_key,
                CERTIFICATION_DATA_QE_REPORT.to_bytes(CERTIFICATION_DATA_TYPE.size, "little"),
                len(certification).to_bytes(CERTIFICATION_DATA_SIZE.size, "little"),
                certification,
            )
        )
        return b"".join(
            (
                self.signed_bytes,
                len(signature_data).to_bytes(SIGNATURE_DATA_LENGTH_SIZE, "little"),
                signature_data,
                self.padding,
            )
        )


def parse_quote(raw: bytes, *, unsafe_allow_trailing_data: bool = False) -> Quote:
    """Parse a TDX quote v4/v5. Raises `FormatError` naming the field on any structural fault."""
    raw = bytes(raw)
    if len(raw) > MAX_QUOTE_SIZE:
        raise FormatError(
            "quote too large", check="quote.size", expected=f"<= {MAX_QUOTE_SIZE}", actual=len(raw)
        )
    # 1. Header: version, attestation key type and TEE type are the only ones we accept.
    _require_length(raw, HEADER_SIZE, "header")
    header = QuoteHeader.from_bytes(raw)
    if header.version not in (QUOTE_VERSION_4, QUOTE_VERSION_5):
        raise FormatError(
            "unsupported quote version",
            check="header.version",
            expected=f"{QUOTE_VERSION_4} or {QUOTE_VERSION_5}",
            actual=header.version,
        )
    if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise FormatError(
            "unsupported attestation key type",
            check="header.att_key_type",
            expected=ATT_KEY_TYPE_ECDSA_P256,
            actual=header.att_key_type,
        )
    if header.tee_type != TEE_TYPE_TDX:
        raise FormatError(
            "not a TDX quote",
            check="header.tee_type",
            expected=hex(TEE_TYPE_TDX),
            actual=hex(header.tee_type),
        )
    # 2. Body type: implied for v4; from the descriptor for v5 (type and size must agree).
    pos = HEADER_SIZE
    body_type = BODY_TYPE_TD_REPORT10
    if header.version == QUOTE_VERSION_5:
        _require_length(raw, pos + BODY_DESCRIPTOR_LENGTH, "body_descriptor")
        body_type = _le(raw, BODY_DESCRIPTOR_TYPE, pos)
        if body_type not in BODY_SIZES:
            raise FormatError(
                "unsupported body type",
                check="body_descriptor.type",
                expected=sorted(BODY_SIZES),
                actual=body_type,
            )
        body_size = _le(raw, BODY_DESCRIPTOR_SIZE, pos)
        if body_size != BODY_SIZES[body_type]:
            raise FormatError(
                "body size does not match the body type",
                check="body_descriptor.size",
                expected=BODY_SIZES[body_type],
                actual=body_size,
            )
        pos += BODY_DESCRIPTOR_LENGTH
    # 3. TD report body.
    body_size = BODY_SIZES[body_type]
    _require_length(raw, pos + body_size + SIGNATURE_DATA_LENGTH_SIZE, "body")
    body = TdReport.from_bytes(raw[pos : pos + body_size], td15=body_type == BODY_TYPE_TD_REPORT15)
    pos += body_size
    # 4. Signature data: its length must fit, and the certification data must fill it exactly.
    signature_data_length = int.from_bytes(raw[pos : pos + SIGNATURE_DATA_LENGTH_SIZE], "little")
    pos += SIGNATURE_DATA_LENGTH_SIZE
    if signature_data_length < SIGNATURE_DATA_FIXED_SIZE or pos + signature_data_length > len(raw):
        raise FormatError(
            "signature data length does not fit the quote",
            check="signature_data_length",
            expected=f"{SIGNATURE_DATA_FIXED_SIZE}..{len(raw) - pos}",
            actual=signature_data_length,
        )
    signature_data = raw[pos : pos + signature_data_length]
    certification = signature_data[ATTESTATION_KEY.end :]
    certification_type = _le(certification, CERTIFICATION_DATA_TYPE)
    if certification_type != CERTIFICATION_DATA_QE_REPORT:
        raise FormatError(
            "unsupported certification data type",
            check="certification_data.type",
            expected=CERTIFICATION_DATA_QE_REPORT,
            actual=certification_type,
        )
    certification_size = _le(certification, CERTIFICATION_DATA_SIZE)
    if certification_size != len(certification) - CERTIFICATION_DATA_HEADER_SIZE:
        raise FormatError(
            "certification data size does not match the signature data length",
            check="certification_data.size",
            expected=len(certification) - CERTIFICATION_DATA_HEADER_SIZE,
            actual=certification_size,
        )
    certification_data = QeReportCertificationData.from_bytes(
        certification[CERTIFICATION_DATA_HEADER_SIZE:]
    )
    # 5. Whatever follows the signature data: zero padding only, unless the caller opts out.
    padding = raw[pos + signature_data_length :]
    if padding.count(0) != len(padding) and not unsafe_allow_trailing_data:
        raise FormatError(
            "non-zero bytes after the signature data",
            check="trailing_data",
            expected="only zero padding",
            actual=f"{len(padding) - padding.count(0)} non-zero of {len(padding)} bytes",
        )
    return Quote(
        header=header,
        body=body,
        signature=_take(signature_data, QUOTE_SIGNATURE),
        attestation_key=_take(signature_data, ATTESTATION_KEY),
        certification_data=certification_data,
        padding=padding,
    )


def _require_length(raw: bytes, needed: int, part: str) -> None:
    if len(raw) < needed:
        raise FormatError(
            f"quote truncated in the {part}",
            check=f"{part}.size",
            expected=f">= {needed} bytes",
            actual=len(raw),
        )
