"""A minimal DER writer: the universal types the PCK SGX extension uses (`attest.der` reads)."""

from __future__ import annotations

from attest.der import (
    TAG_BOOLEAN,
    TAG_ENUMERATED,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_OID,
    TAG_SEQUENCE,
    encode_oid,
)


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _length(size: int) -> bytes:
    # Short form below 128; otherwise 0x80 | (number of length bytes), then the big-endian size.
    if size < 0x80:
        return bytes([size])
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def sequence(*items: bytes) -> bytes:
    return tlv(TAG_SEQUENCE, b"".join(items))


def octet_string(value: bytes) -> bytes:
    return tlv(TAG_OCTET_STRING, bytes(value))


def boolean(value: bool) -> bytes:
    return tlv(TAG_BOOLEAN, b"\xff" if value else b"\x00")


def _twos_complement(value: int) -> bytes:
    # Minimal two's-complement big-endian: one extra bit for the sign, then whole bytes.
    size = (value + (value < 0)).bit_length() // 8 + 1
    return value.to_bytes(size, "big", signed=True)


def integer(value: int) -> bytes:
    return tlv(TAG_INTEGER, _twos_complement(value))


def enumerated(value: int) -> bytes:
    return tlv(TAG_ENUMERATED, _twos_complement(value))


def oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"not a valid OID: {dotted}")
    return tlv(TAG_OID, encode_oid(dotted))
