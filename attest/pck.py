"""The PCK certificate's SGX extension (OID 1.2.840.113741.1.13.1), per Intel's "SGX PCK
Certificate and CRL Profile": PPID, TCB (16 SGX component SVNs, PCESVN, CPUSVN), PCE-ID, FMSPC,
SGX type, and for platform-CA certificates PlatformInstanceID and Configuration.

The extension is a SEQUENCE of {OID, value} pairs. Parsing is strict: every element must be one we
know, present at most once, with the expected type and size; anything odd is a `FormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cryptography import x509

from attest.der import (
    TAG_BOOLEAN,
    TAG_ENUMERATED,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_SEQUENCE,
    Tlv,
    decode_boolean,
    decode_integer,
    decode_oid,
    elements,
    encode_oid,
    expect_tag,
    oid_value_pair,
    single,
)
from attest.errors import FormatError

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"

# Arcs below SGX_EXTENSION_OID.
PPID_ARC = 1
TCB_ARC = 2
PCE_ID_ARC = 3
FMSPC_ARC = 4
SGX_TYPE_ARC = 5
PLATFORM_INSTANCE_ID_ARC = 6
CONFIGURATION_ARC = 7

# Arcs below SGX_EXTENSION_OID.2 (TCB): 1..16 component SVNs, then PCESVN and CPUSVN.
SGX_TCB_COMPONENT_COUNT = 16
PCESVN_ARC = 17
CPUSVN_ARC = 18

# Arcs below SGX_EXTENSION_OID.7 (Configuration).
DYNAMIC_PLATFORM_ARC = 1
CACHED_KEYS_ARC = 2
SMT_ENABLED_ARC = 3

_SGX_PREFIX = encode_oid(SGX_EXTENSION_OID)
_TCB_PREFIX = encode_oid(f"{SGX_EXTENSION_OID}.{TCB_ARC}")
_CONFIGURATION_PREFIX = encode_oid(f"{SGX_EXTENSION_OID}.{CONFIGURATION_ARC}")

PPID_SIZE = 16
CPUSVN_SIZE = 16
PCE_ID_SIZE = 2
FMSPC_SIZE = 6
PLATFORM_INSTANCE_ID_SIZE = 16

SVN_MAX = 0xFF
PCESVN_MAX = 0xFFFF


class SgxType(IntEnum):
    STANDARD = 0
    SCALABLE = 1
    SCALABLE_WITH_INTEGRITY = 2


@dataclass(frozen=True)
class PckTcb:
    """The TCB level the PCK certificate was issued for (not the raw CPUSVN of the QE report)."""

    sgx_tcb_components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes


@dataclass(frozen=True)
class PckConfiguration:
    """Platform configuration flags; each is None when the certificate does not state it."""

    dynamic_platform: bool | None
    cached_keys: bool | None
    smt_enabled: bool | None


@dataclass(frozen=True)
class PckExtension:
    ppid: bytes
    tcb: PckTcb
    pce_id: bytes
    fmspc: bytes
    sgx_type: SgxType
    platform_instance_id: bytes | None
    configuration: PckConfiguration | None


def pck_extension_of(certificate: x509.Certificate) -> PckExtension:
    """The parsed SGX extension of a PCK certificate; `FormatError` when absent or malformed."""
    try:
        extension = certificate.extensions.get_extension_for_oid(
            x509.ObjectIdentifier(SGX_EXTENSION_OID)
        )
    except x509.ExtensionNotFound:
        raise FormatError(
            "PCK certificate has no SGX extension",
            check="pck.sgx_extension",
            expected=SGX_EXTENSION_OID,
            actual="absent",
        ) from None
    value = extension.value
    if not isinstance(
        value, x509.UnrecognizedExtension
    ):  # pragma: no cover - cryptography never knows it
        raise FormatError(
            "SGX extension decoded by an unexpected handler", check="pck.sgx_extension"
        )
    return parse_sgx_extension(value.value)


def parse_sgx_extension(der: bytes) -> PckExtension:
    """Parse the DER value of the SGX extension (the content of the extnValue OCTET STRING)."""
    entries = _arc_entries(
        single(der, TAG_SEQUENCE, "sgx_extension"),
        _SGX_PREFIX,
        "sgx_extension",
        allowed=range(PPID_ARC, CONFIGURATION_ARC + 1),
    )
    for required, name in (
        (PPID_ARC, "ppid"),
        (TCB_ARC, "tcb"),
        (PCE_ID_ARC, "pce_id"),
        (FMSPC_ARC, "fmspc"),
        (SGX_TYPE_ARC, "sgx_type"),
    ):
        if required not in entries:
            raise FormatError(
                f"SGX extension lacks {name}",
                check=f"sgx_extension.{name}",
                expected="present",
                actual="absent",
            )
    sgx_type = _integer(entries[SGX_TYPE_ARC], TAG_ENUMERATED, "sgx_extension.sgx_type", 0, 2)
    platform_instance_id = None
    if PLATFORM_INSTANCE_ID_ARC in entries:
        platform_instance_id = _octets(
            entries[PLATFORM_INSTANCE_ID_ARC],
            "sgx_extension.platform_instance_id",
            PLATFORM_INSTANCE_ID_SIZE,
        )
    configuration = None
    if CONFIGURATION_ARC in entries:
        configuration = _configuration(entries[CONFIGURATION_ARC])
    return PckExtension(
        ppid=_octets(entries[PPID_ARC], "sgx_extension.ppid", PPID_SIZE),
        tcb=_tcb(entries[TCB_ARC]),
        pce_id=_octets(entries[PCE_ID_ARC], "sgx_extension.pce_id", PCE_ID_SIZE),
        fmspc=_octets(entries[FMSPC_ARC], "sgx_extension.fmspc", FMSPC_SIZE),
        sgx_type=SgxType(sgx_type),
        platform_instance_id=platform_instance_id,
        configuration=configuration,
    )


def _tcb(value: Tlv) -> PckTcb:
    what = "sgx_extension.tcb"
    entries = _arc_entries(
        expect_tag(value, TAG_SEQUENCE, what), _TCB_PREFIX, what, allowed=range(1, CPUSVN_ARC + 1)
    )
    missing = sorted(set(range(1, CPUSVN_ARC + 1)) - entries.keys())
    if missing:
        raise FormatError(
            "TCB lacks components", check=what, expected="arcs 1..18", actual=f"missing {missing}"
        )
    components = tuple(
        _integer(entries[arc], TAG_INTEGER, f"{what}.comp{arc:02d}_svn", 0, SVN_MAX)
        for arc in range(1, SGX_TCB_COMPONENT_COUNT + 1)
    )
    return PckTcb(
        sgx_tcb_components=components,
        pce_svn=_integer(entries[PCESVN_ARC], TAG_INTEGER, f"{what}.pcesvn", 0, PCESVN_MAX),
        cpu_svn=_octets(entries[CPUSVN_ARC], f"{what}.cpusvn", CPUSVN_SIZE),
    )


def _configuration(value: Tlv) -> PckConfiguration:
    what = "sgx_extension.configuration"
    entries = _arc_entries(
        expect_tag(value, TAG_SEQUENCE, what),
        _CONFIGURATION_PREFIX,
        what,
        allowed=range(DYNAMIC_PLATFORM_ARC, SMT_ENABLED_ARC + 1),
    )

    def flag(arc: int, name: str) -> bool | None:
        if arc not in entries:
            return None
        field = f"{what}.{name}"
        return decode_boolean(expect_tag(entries[arc], TAG_BOOLEAN, field), field)

    return PckConfiguration(
        dynamic_platform=flag(DYNAMIC_PLATFORM_ARC, "dynamic_platform"),
        cached_keys=flag(CACHED_KEYS_ARC, "cached_keys"),
        smt_enabled=flag(SMT_ENABLED_ARC, "smt_enabled"),
    )


def _arc_entries(content: bytes, prefix: bytes, what: str, *, allowed: range) -> dict[int, Tlv]:
    """The {OID, value} pairs of a SEQUENCE whose OIDs are `prefix`.N, keyed by N."""
    # Every arc used here is below 128, so `prefix`.N is the prefix's octets plus one octet N;
    # comparing octets (not dotted strings) is both stricter and faster.
    entries: dict[int, Tlv] = {}
    for element in elements(content, what):
        oid, value = oid_value_pair(expect_tag(element, TAG_SEQUENCE, what), what)
        arc = oid[-1] if len(oid) == len(prefix) + 1 and oid.startswith(prefix) else -1
        if arc not in allowed:
            dotted = decode_oid(prefix, what)
            raise FormatError(
                f"{what}: unknown element",
                check=f"{what}.oid",
                expected=f"{dotted}.{{{allowed.start}..{allowed.stop - 1}}}",
                actual=decode_oid(oid, f"{what}.oid"),
            )
        if arc in entries:
            raise FormatError(
                f"{what}: duplicate element",
                check=f"{what}.oid",
                actual=f"{decode_oid(prefix, what)}.{arc}",
            )
        entries[arc] = value
    return entries


def _octets(value: Tlv, field: str, size: int) -> bytes:
    content = expect_tag(value, TAG_OCTET_STRING, field)
    if len(content) != size:
        raise FormatError(
            f"{field} has the wrong size", check=field, expected=size, actual=len(content)
        )
    return content


def _integer(value: Tlv, tag: int, field: str, low: int, high: int) -> int:
    number = decode_integer(expect_tag(value, tag, field), field)
    if not low <= number <= high:
        raise FormatError(
            f"{field} out of range", check=field, expected=f"{low}..{high}", actual=number
        )
    return number
