"""The opaque data of an NVIDIA GPU's SPDM MEASUREMENTS response: bytes to fields and back.

NVIDIA fills the SPDM OpaqueData with a list of items, each

    u16 type, u16 size (both little-endian), size bytes of value

(type numbers as NVIDIA's verifiers name them, `OpaqueFieldType`). The items are signed with the
rest of the response, so what they say is the GPU's word: driver and VBIOS versions, the FWID of
the firmware that holds the signing key, chip/board/project identifiers, per-index measurement
counts, NVDEC0 and protected-PCIe status, and (newer drivers) the format version and the
multi-GPU feature flag.

Rules, each a `GpuEvidenceFormatError` naming the field:
- items cover the opaque data exactly; no type appears twice; a type NVIDIA does not define is
  refused (its meaning, which could matter, would otherwise be ignored);
- driver version, VBIOS version and FWID must be present (they identify the firmware);
- text fields are printable ASCII padded with NULs; sized fields have their size; enumerations
  (NVDEC0 status, feature flag, format version) take only the values NVIDIA defines.

The Hopper report does not carry the GPU's CC mode or DevTools mode: NVIDIA's own verifiers read
those from the driver (NVML), outside the signed evidence (see `attest.nvidia.collateral`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from attest.errors import GpuEvidenceFormatError

ITEM_HEADER = struct.Struct("<HH")  # type, size
ITEM_HEADER_SIZE = ITEM_HEADER.size
VBIOS_VERSION_SIZE = 8
FWID_SIZE = 48  # SHA-384 of the firmware that holds the report-signing key
MEASUREMENT_COUNT_SIZE = 4
MAX_INTEGER_SIZE = 8
MAX_KNOWN_OPAQUE_DATA_VERSION = 1  # the newest layout NVIDIA has defined


class OpaqueFieldType(IntEnum):
    CERT_ISSUER_NAME = 1
    CERT_AUTHORITY_KEY_IDENTIFIER = 2
    DRIVER_VERSION = 3
    GPU_INFO = 4
    SKU = 5
    VBIOS_VERSION = 6
    MANUFACTURER_ID = 7
    TAMPER_DETECTION = 8
    SMC = 9
    VPR = 10
    NVDEC0_STATUS = 11
    MEASUREMENT_COUNT = 12
    CPR_INFO = 13
    BOARD_ID = 14
    CHIP_SKU = 15
    CHIP_SKU_MOD = 16
    PROJECT = 17
    PROJECT_SKU = 18
    PROJECT_SKU_MOD = 19
    FWID = 20
    PROTECTED_PCIE_STATUS = 21
    SWITCH_PDI = 22
    FLOORSWEPT_PORTS = 23
    POSITION_ID = 24
    LOCK_SWITCH_STATUS = 25
    GPU_LINK_CONN = 32
    SYS_ENABLE_STATUS = 33
    OPAQUE_DATA_VERSION = 34
    CHIP_INFO = 35
    FEATURE_FLAG = 36


KNOWN_TYPES = frozenset(field_type.value for field_type in OpaqueFieldType)
REQUIRED_FIELDS = (
    OpaqueFieldType.DRIVER_VERSION,
    OpaqueFieldType.VBIOS_VERSION,
    OpaqueFieldType.FWID,
)


class NvdecStatus(Enum):
    """Whether the GPU's video decoder engine 0 is enabled (its byte value in the report)."""

    ENABLED = 0xAA
    DISABLED = 0x55


class FeatureFlag(Enum):
    """How the GPU is shared: single-GPU passthrough, multi-GPU passthrough, protected PCIe."""

    SPT = 0
    MPT = 1
    PPCIE = 2


@dataclass(frozen=True)
class OpaqueField:
    type: OpaqueFieldType
    value: bytes

    def to_bytes(self) -> bytes:
        return ITEM_HEADER.pack(self.type, len(self.value)) + self.value


@dataclass(frozen=True)
class OpaqueData:
    """The opaque items in report order, and what they say. Built from `fields` only; the other
    attributes are decoded (and every rule above checked) on construction."""

    fields: tuple[OpaqueField, ...]
    driver_version: str = field(init=False)
    vbios_version: str = field(init=False)
    fwid: bytes = field(init=False)
    chip_sku: str | None = field(init=False)
    chip_sku_mod: str | None = field(init=False)
    project: str | None = field(init=False)
    project_sku: str | None = field(init=False)
    project_sku_mod: bytes | None = field(init=False)
    board_id: bytes | None = field(init=False)
    gpu_info: bytes | None = field(init=False)
    cpr_info: bytes | None = field(init=False)
    measurement_counts: tuple[int, ...] | None = field(init=False)
    nvdec0_status: NvdecStatus | None = field(init=False)
    protected_pcie_status: bytes | None = field(init=False)
    opaque_data_version: int | None = field(init=False)
    feature_flag: FeatureFlag | None = field(init=False)

    def __post_init__(self) -> None:
        by_type: dict[OpaqueFieldType, bytes] = {}
        for item in self.fields:
            if item.type in by_type:
                raise GpuEvidenceFormatError(
                    "opaque data lists a field twice",
                    check=f"opaque_data.{item.type.name.lower()}",
                    expected="at most once",
                    actual="twice",
                )
            if len(item.value) > 0xFFFF:
                raise GpuEvidenceFormatError(
                    "opaque field too large for its u16 size",
                    check=f"opaque_data.{item.type.name.lower()}.size",
                    expected="<= 65535",
                    actual=len(item.value),
                )
            by_type[item.type] = item.value
        for required in REQUIRED_FIELDS:
            if required not in by_type:
                raise GpuEvidenceFormatError(
                    "opaque data lacks a required field",
                    check=f"opaque_data.{required.name.lower()}",
                    expected="present",
                    actual="absent",
                )
        t = OpaqueFieldType
        decoded = {
            "driver_version": _text(by_type[t.DRIVER_VERSION], "driver_version"),
            "vbios_version": _vbios_version(by_type[t.VBIOS_VERSION]),
            "fwid": _sized(by_type[t.FWID], FWID_SIZE, "fwid"),
            "chip_sku": _optional_text(by_type, t.CHIP_SKU),
            "chip_sku_mod": _optional_text(by_type, t.CHIP_SKU_MOD),
            "project": _optional_text(by_type, t.PROJECT),
            "project_sku": _optional_text(by_type, t.PROJECT_SKU),
            "project_sku_mod": by_type.get(t.PROJECT_SKU_MOD),
            "board_id": by_type.get(t.BOARD_ID),
            "gpu_info": by_type.get(t.GPU_INFO),
            "cpr_info": by_type.get(t.CPR_INFO),
            "measurement_counts": _measurement_counts(by_type.get(t.MEASUREMENT_COUNT)),
            "nvdec0_status": _nvdec_status(by_type.get(t.NVDEC0_STATUS)),
            "protected_pcie_status": by_type.get(t.PROTECTED_PCIE_STATUS),
            "opaque_data_version": _opaque_data_version(by_type.get(t.OPAQUE_DATA_VERSION)),
            "feature_flag": _feature_flag(by_type.get(t.FEATURE_FLAG)),
        }
        for name, value in decoded.items():
            object.__setattr__(self, name, value)

    def value_of(self, field_type: OpaqueFieldType) -> bytes | None:
        """The raw value of one item, or None when the report does not carry it."""
        return next((item.value for item in self.fields if item.type is field_type), None)

    def to_bytes(self) -> bytes:
        return b"".join(item.to_bytes() for item in self.fields)


def parse_opaque_data(raw: bytes) -> OpaqueData:
    """The items of an opaque data block, which they must cover exactly."""
    items: list[OpaqueField] = []
    offset = 0
    while offset < len(raw):
        if len(raw) - offset < ITEM_HEADER_SIZE:
            raise GpuEvidenceFormatError(
                "opaque data ends inside an item header",
                check="opaque_data.item_header",
                expected=ITEM_HEADER_SIZE,
                actual=len(raw) - offset,
            )
        type_number, size = ITEM_HEADER.unpack_from(raw, offset)
        offset += ITEM_HEADER_SIZE
        if type_number not in KNOWN_TYPES:
            raise GpuEvidenceFormatError(
                "opaque data item of a type NVIDIA does not define",
                check="opaque_data.type",
                expected="1-25 or 32-36",
                actual=type_number,
            )
        field_type = OpaqueFieldType(type_number)
        if offset + size > len(raw):
            raise GpuEvidenceFormatError(
                "opaque data item runs past the opaque data",
                check=f"opaque_data.{field_type.name.lower()}.size",
                expected=f"<= {len(raw) - offset}",
                actual=size,
            )
        items.append(OpaqueField(field_type, raw[offset : offset + size]))
        offset += size
    return OpaqueData(tuple(items))


def _text(value: bytes, name: str) -> str:
    """NUL-padded printable ASCII (NVIDIA pads fixed-size text fields with NULs)."""
    text = value.rstrip(b"\x00")
    if not text or any(not 0x20 <= byte <= 0x7E for byte in text):
        raise GpuEvidenceFormatError(
            f"opaque field {name} is not NUL-padded printable ASCII",
            check=f"opaque_data.{name}",
            expected="printable ASCII",
            actual=value,
        )
    return text.decode("ascii")


def _optional_text(
    by_type: dict[OpaqueFieldType, bytes], field_type: OpaqueFieldType
) -> str | None:
    value = by_type.get(field_type)
    return None if value is None else _text(value, field_type.name.lower())


def _sized(value: bytes, size: int, name: str) -> bytes:
    if len(value) != size:
        raise GpuEvidenceFormatError(
            f"opaque field {name} has the wrong size",
            check=f"opaque_data.{name}.size",
            expected=size,
            actual=len(value),
        )
    return value


def _vbios_version(value: bytes) -> str:
    """The dotted VBIOS version: 00 9f 00 96 01 00 00 00 gives 96.00.9f.00.01 (the first four
    bytes as a little-endian version, then the fifth, the OEM revision; the rest is unused)."""
    _sized(value, VBIOS_VERSION_SIZE, "vbios_version")
    half = VBIOS_VERSION_SIZE // 2
    return ".".join(f"{byte:02x}" for byte in (*reversed(value[:half]), value[half]))


def _measurement_counts(value: bytes | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    if len(value) % MEASUREMENT_COUNT_SIZE:
        raise GpuEvidenceFormatError(
            "measurement counts are not a list of u32",
            check="opaque_data.measurement_count.size",
            expected=f"a multiple of {MEASUREMENT_COUNT_SIZE}",
            actual=len(value),
        )
    return tuple(count for (count,) in struct.iter_unpack("<I", value))


def _nvdec_status(value: bytes | None) -> NvdecStatus | None:
    if value is None:
        return None
    if len(value) != 1 or value[0] not in {status.value for status in NvdecStatus}:
        raise GpuEvidenceFormatError(
            "NVDEC0 status is neither enabled nor disabled",
            check="opaque_data.nvdec0_status",
            expected="aa or 55",
            actual=value,
        )
    return NvdecStatus(value[0])


def _small_integer(value: bytes, name: str) -> int:
    if not 1 <= len(value) <= MAX_INTEGER_SIZE:
        raise GpuEvidenceFormatError(
            f"opaque field {name} is not a little-endian integer of 1-8 bytes",
            check=f"opaque_data.{name}.size",
            expected=f"1..{MAX_INTEGER_SIZE}",
            actual=len(value),
        )
    return int.from_bytes(value, "little")


def _opaque_data_version(value: bytes | None) -> int | None:
    if value is None:
        return None
    version = _small_integer(value, "opaque_data_version")
    if version > MAX_KNOWN_OPAQUE_DATA_VERSION:
        raise GpuEvidenceFormatError(
            "opaque data in a layout newer than this parser knows",
            check="opaque_data.opaque_data_version",
            expected=f"<= {MAX_KNOWN_OPAQUE_DATA_VERSION}",
            actual=version,
        )
    return version


def _feature_flag(value: bytes | None) -> FeatureFlag | None:
    if value is None:
        return None
    flag = _small_integer(value, "feature_flag")
    if flag not in {feature.value for feature in FeatureFlag}:
        raise GpuEvidenceFormatError(
            "feature flag of a value NVIDIA does not define",
            check="opaque_data.feature_flag",
            expected="0 (SPT), 1 (MPT) or 2 (PPCIE)",
            actual=flag,
        )
    return FeatureFlag(flag)
