"""NVIDIA GPU attestation reports (Hopper): bytes to frozen structures and back. No cryptography.

A report is what the driver returns for "attest with this nonce": the SPDM 1.1 GET_MEASUREMENTS
request the driver sent to the GPU, followed by the GPU's MEASUREMENTS response (DMTF DSP0274
1.1, GET_MEASUREMENTS and MEASUREMENTS; integers little-endian):

    request   SPDMVersion 0x11, code 0xE0, Param1 0x01 (signature requested),
              Param2 0xFF (all measurements), Nonce (32), SlotIDParam             = 37 bytes
    response  SPDMVersion, code 0x60, Param1 (reserved), Param2 (slot id),
              NumberOfBlocks (1), MeasurementRecordLength (3),
              MeasurementRecord = NumberOfBlocks measurement blocks,
              Nonce (32, the responder's), OpaqueDataLength (2), OpaqueData,
              Signature (96: ECDSA P-384 r||s)
    [padding: zero bytes; the CoCo vector has one]

A measurement block is Index (1), MeasurementSpecification (1, bit 0 = DMTF), MeasurementSize
(2), then the DMTF measurement: DMTFSpecMeasurementValueType (1, bit 7 = raw bit stream),
DMTFSpecMeasurementValueSize (2), the value. The opaque data is `attest.nvidia.opaque`'s.

The GPU signs request || response up to the signature (`GpuReport.signed_bytes`; found on both
real reports, where the response alone, or a span one byte longer, does not verify). The
requester nonce, the verifier's freshness challenge, is the request's; the response's nonce is
the GPU's own.

Every byte counts: lengths must agree with each other and with the input, reserved bits are zero,
block indices are unique, and bytes after the signature must be zero unless the caller passes
`unsafe_allow_trailing_data=True`. Any other shape is a `GpuEvidenceFormatError` naming the field.
`GpuReport.to_bytes()` gives back the parsed bytes exactly.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

from attest.errors import GpuEvidenceFormatError
from attest.nvidia.opaque import OpaqueData, parse_opaque_data
from attest.quote import Span

SPDM_VERSION_11 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
SIGNATURE_REQUESTED = 0x01  # request Param1 bit 0; the other bits are reserved in SPDM 1.1
ALL_MEASUREMENTS = 0xFF  # request Param2: every measurement block
SLOT_ID_MASK = 0x0F  # SlotIDParam / response Param2 bits 0-3; bits 4-7 are reserved
NONCE_SIZE = 32
SIGNATURE_SIZE = 96  # ECDSA P-384: r || s, 48 bytes each

# The SPDM GET_MEASUREMENTS request.
REQUEST_VERSION = Span(0, 1)
REQUEST_CODE = Span(1, 1)
REQUEST_PARAM1 = Span(2, 1)
REQUEST_PARAM2 = Span(3, 1)
REQUEST_NONCE = Span(4, NONCE_SIZE)
REQUEST_SLOT_ID = Span(36, 1)
REQUEST_SIZE = 37

# The fixed start of the SPDM MEASUREMENTS response.
RESPONSE_VERSION = Span(0, 1)
RESPONSE_CODE = Span(1, 1)
RESPONSE_PARAM1 = Span(2, 1)
RESPONSE_PARAM2 = Span(3, 1)
RESPONSE_NUMBER_OF_BLOCKS = Span(4, 1)
RESPONSE_RECORD_LENGTH = Span(5, 3)
RESPONSE_HEADER_SIZE = 8
OPAQUE_LENGTH_SIZE = 2

# A measurement block, and the DMTF measurement inside it.
BLOCK_INDEX = Span(0, 1)
BLOCK_SPECIFICATION = Span(1, 1)
BLOCK_SIZE = Span(2, 2)
BLOCK_HEADER_SIZE = 4
DMTF_VALUE_TYPE = Span(0, 1)
DMTF_VALUE_SIZE = Span(1, 2)
DMTF_HEADER_SIZE = 3
MEASUREMENT_SPECIFICATION_DMTF = 0x01
RAW_BIT_STREAM = 0x80  # DMTFSpecMeasurementValueType bit 7
MIN_BLOCK_INDEX, MAX_BLOCK_INDEX = 0x01, 0xFE  # 0 and 0xFF are request operations, not blocks

# A bound on input size: NVML hands the report over in a buffer of 0x2000 bytes.
MAX_REPORT_SIZE = 0x2000


# The same layouts as struct formats, for the per-block loop (64 blocks in a Hopper report).
_BLOCK_HEADER = struct.Struct("<BBH")  # BLOCK_INDEX, BLOCK_SPECIFICATION, BLOCK_SIZE
_DMTF_HEADER = struct.Struct("<BH")  # DMTF_VALUE_TYPE, DMTF_VALUE_SIZE
if (_BLOCK_HEADER.size, _DMTF_HEADER.size) != (BLOCK_HEADER_SIZE, DMTF_HEADER_SIZE):
    raise RuntimeError("measurement block struct formats disagree with the spans")


def _le(data: bytes, span: Span, base: int = 0) -> int:
    return int.from_bytes(data[base + span.offset : base + span.end], "little")


@dataclass(frozen=True)
class MeasurementRequest:
    """The SPDM GET_MEASUREMENTS request the driver sent, with the verifier's nonce."""

    spdm_version: int
    param1: int
    param2: int
    nonce: bytes
    slot_id_param: int

    def to_bytes(self) -> bytes:
        return (
            bytes((self.spdm_version, GET_MEASUREMENTS, self.param1, self.param2))
            + self.nonce
            + bytes((self.slot_id_param,))
        )


@dataclass(frozen=True)
class MeasurementBlock:
    """One measurement: its index and the DMTF-format value (a digest unless `raw_bit_stream`)."""

    index: int
    value_type: int
    value: bytes
    measurement_specification: int = MEASUREMENT_SPECIFICATION_DMTF

    @property
    def raw_bit_stream(self) -> bool:
        return bool(self.value_type & RAW_BIT_STREAM)

    def to_bytes(self) -> bytes:
        size = DMTF_HEADER_SIZE + len(self.value)
        return (
            _BLOCK_HEADER.pack(self.index, self.measurement_specification, size)
            + _DMTF_HEADER.pack(self.value_type, len(self.value))
            + self.value
        )


@dataclass(frozen=True)
class MeasurementsResponse:
    """The GPU's SPDM MEASUREMENTS response."""

    spdm_version: int
    param1: int
    param2: int
    blocks: tuple[MeasurementBlock, ...]
    responder_nonce: bytes
    opaque: OpaqueData
    signature: bytes

    def unsigned_bytes(self) -> bytes:
        """The response up to (not including) its signature."""
        record = b"".join(block.to_bytes() for block in self.blocks)
        opaque = self.opaque.to_bytes()
        return (
            bytes((self.spdm_version, MEASUREMENTS, self.param1, self.param2, len(self.blocks)))
            + len(record).to_bytes(3, "little")
            + record
            + self.responder_nonce
            + len(opaque).to_bytes(OPAQUE_LENGTH_SIZE, "little")
            + opaque
        )

    def to_bytes(self) -> bytes:
        return self.unsigned_bytes() + self.signature


@dataclass(frozen=True)
class GpuReport:
    """A parsed GPU attestation report: the request, the response, and any zero padding."""

    request: MeasurementRequest
    response: MeasurementsResponse
    padding: bytes = b""

    @property
    def nonce(self) -> bytes:
        """The requester nonce: the challenge the verifier chose."""
        return self.request.nonce

    @property
    def signed_bytes(self) -> bytes:
        """What the GPU signed: the request, then the response without its signature."""
        return self.request.to_bytes() + self.response.unsigned_bytes()

    @property
    def signature(self) -> bytes:
        return self.response.signature

    @property
    def opaque(self) -> OpaqueData:
        return self.response.opaque

    @property
    def measurements(self) -> dict[int, bytes]:
        """Measurement values by index."""
        return {block.index: block.value for block in self.response.blocks}

    def to_bytes(self) -> bytes:
        return self.signed_bytes + self.signature + self.padding


def report_from_hex(text: str | bytes) -> bytes:
    """The bytes of a report given as hex text (how NVIDIA's and trustee's samples store it)."""
    data = text.encode() if isinstance(text, str) else text
    try:
        return binascii.unhexlify(data.strip())
    except (binascii.Error, ValueError):
        raise GpuEvidenceFormatError(
            "report is not hex text", check="report.hex", expected="an even number of hex digits"
        ) from None


def parse_gpu_report(raw: bytes, *, unsafe_allow_trailing_data: bool = False) -> GpuReport:
    """A GPU attestation report from its bytes. Raises `GpuEvidenceFormatError`."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise GpuEvidenceFormatError(
            "report must be bytes", check="report", expected="bytes", actual=type(raw).__name__
        )
    raw = bytes(raw)
    if len(raw) > MAX_REPORT_SIZE:
        raise GpuEvidenceFormatError(
            "report larger than any GPU produces",
            check="report.size",
            expected=f"<= {MAX_REPORT_SIZE}",
            actual=len(raw),
        )
    request = _parse_request(raw)
    offset = REQUEST_SIZE
    response, offset = _parse_response(raw, offset, request)
    padding = raw[offset:]
    if padding.count(0) != len(padding) and not unsafe_allow_trailing_data:
        raise GpuEvidenceFormatError(
            "non-zero bytes after the signature",
            check="trailing_data",
            expected="only zero bytes",
            actual=f"{len(padding)} bytes, {len(padding) - padding.count(0)} non-zero",
        )
    return GpuReport(request, response, padding)


def _parse_request(raw: bytes) -> MeasurementRequest:
    _require(raw, 0, REQUEST_SIZE, "request")
    version, code = _le(raw, REQUEST_VERSION), _le(raw, REQUEST_CODE)
    param1, param2 = _le(raw, REQUEST_PARAM1), _le(raw, REQUEST_PARAM2)
    slot = _le(raw, REQUEST_SLOT_ID)
    for name, actual, expected in (
        ("request.spdm_version", version, SPDM_VERSION_11),
        ("request.code", code, GET_MEASUREMENTS),
        # Without a signature request the response would carry no signature to verify.
        ("request.param1", param1, SIGNATURE_REQUESTED),
        # A subset of the measurements would let a policy miss the ones it did not see.
        ("request.param2", param2, ALL_MEASUREMENTS),
        ("request.slot_id_param", slot & ~SLOT_ID_MASK, 0),
    ):
        _require_value(name, actual, expected)
    nonce = raw[REQUEST_NONCE.offset : REQUEST_NONCE.end]
    return MeasurementRequest(version, param1, param2, nonce, slot)


def _parse_response(
    raw: bytes, base: int, request: MeasurementRequest
) -> tuple[MeasurementsResponse, int]:
    _require(raw, base, RESPONSE_HEADER_SIZE, "response.header")
    version, code = _le(raw, RESPONSE_VERSION, base), _le(raw, RESPONSE_CODE, base)
    param1, param2 = _le(raw, RESPONSE_PARAM1, base), _le(raw, RESPONSE_PARAM2, base)
    for name, actual, expected in (
        ("response.spdm_version", version, request.spdm_version),
        ("response.code", code, MEASUREMENTS),
        ("response.param1", param1, 0),  # reserved when all measurements were requested
        ("response.param2", param2, request.slot_id_param & SLOT_ID_MASK),
    ):
        _require_value(name, actual, expected)
    number_of_blocks = _le(raw, RESPONSE_NUMBER_OF_BLOCKS, base)
    record_length = _le(raw, RESPONSE_RECORD_LENGTH, base)
    offset = base + RESPONSE_HEADER_SIZE
    _require(raw, offset, record_length, "response.measurement_record")
    blocks = _parse_record(raw[offset : offset + record_length], number_of_blocks)
    offset += record_length
    _require(raw, offset, NONCE_SIZE, "response.nonce")
    responder_nonce = raw[offset : offset + NONCE_SIZE]
    offset += NONCE_SIZE
    _require(raw, offset, OPAQUE_LENGTH_SIZE, "response.opaque_length")
    opaque_length = int.from_bytes(raw[offset : offset + OPAQUE_LENGTH_SIZE], "little")
    offset += OPAQUE_LENGTH_SIZE
    _require(raw, offset, opaque_length, "response.opaque_data")
    opaque = parse_opaque_data(raw[offset : offset + opaque_length])
    offset += opaque_length
    _require(raw, offset, SIGNATURE_SIZE, "response.signature")
    signature = raw[offset : offset + SIGNATURE_SIZE]
    response = MeasurementsResponse(
        version, param1, param2, blocks, responder_nonce, opaque, signature
    )
    return response, offset + SIGNATURE_SIZE


def _parse_record(record: bytes, number_of_blocks: int) -> tuple[MeasurementBlock, ...]:
    blocks: list[MeasurementBlock] = []
    seen: set[int] = set()
    offset, end = 0, len(record)
    for position in range(number_of_blocks):
        # Check names are built only on failure: this loop runs 64 times per report.
        if offset + BLOCK_HEADER_SIZE > end:
            _require(record, offset, BLOCK_HEADER_SIZE, _block(position))
        index, specification, size = _BLOCK_HEADER.unpack_from(record, offset)
        if not MIN_BLOCK_INDEX <= index <= MAX_BLOCK_INDEX or index in seen:
            raise GpuEvidenceFormatError(
                "measurement block index out of range or repeated",
                check=_block(position, "index"),
                expected=f"{MIN_BLOCK_INDEX}..{MAX_BLOCK_INDEX}, each once",
                actual=index,
            )
        seen.add(index)
        if specification != MEASUREMENT_SPECIFICATION_DMTF:
            _require_value(
                _block(position, "measurement_specification"),
                specification,
                MEASUREMENT_SPECIFICATION_DMTF,
            )
        offset += BLOCK_HEADER_SIZE
        if offset + size > end:
            _require(record, offset, size, _block(position, "measurement"))
        if size < DMTF_HEADER_SIZE:
            raise GpuEvidenceFormatError(
                "measurement shorter than its DMTF header",
                check=_block(position, "measurement_size"),
                expected=f">= {DMTF_HEADER_SIZE}",
                actual=size,
            )
        value_type, value_size = _DMTF_HEADER.unpack_from(record, offset)
        if value_size != size - DMTF_HEADER_SIZE:
            _require_value(_block(position, "value_size"), value_size, size - DMTF_HEADER_SIZE)
        value = record[offset + DMTF_HEADER_SIZE : offset + size]
        blocks.append(MeasurementBlock(index, value_type, value, specification))
        offset += size
    if offset != end:
        raise GpuEvidenceFormatError(
            "measurement blocks do not fill the measurement record",
            check="response.measurement_record_length",
            expected=offset,
            actual=end,
        )
    return tuple(blocks)


def _block(position: int, name: str = "") -> str:
    return f"response.measurement_block[{position}]" + (f".{name}" if name else "")


def _require(raw: bytes, offset: int, size: int, field: str) -> None:
    if offset + size > len(raw):
        raise GpuEvidenceFormatError(
            f"report ends inside {field}",
            check=field,
            expected=f"{size} bytes at {offset}",
            actual=f"{max(len(raw) - offset, 0)} bytes",
        )


def _require_value(field: str, actual: int, expected: int) -> None:
    if actual != expected:
        raise GpuEvidenceFormatError(
            f"unexpected {field}", check=field, expected=hex(expected), actual=hex(actual)
        )
