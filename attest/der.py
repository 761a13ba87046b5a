"""A small strict DER reader: just enough ASN.1 for the PCK certificate's SGX extension.

Strict means: single-byte tags only, definite minimal lengths, minimal INTEGER encodings,
BOOLEAN as 0x00/0xFF, no bytes left over. Anything else is a `FormatError` naming `what`.
"""

from __future__ import annotations

from attest.errors import FormatError

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_SEQUENCE = 0x30

_HIGH_TAG_NUMBER = 0x1F
_LONG_LENGTH = 0x80
_MAX_LENGTH_OCTETS = 4


# One DER element: (tag, content octets). A plain tuple: the PCK extension has ~60 of them
# and verification parses one per quote.
Tlv = tuple[int, bytes]


def elements(data: bytes, what: str) -> list[Tlv]:
    """All DER elements at one level of `data`, which they must cover exactly."""
    out: list[Tlv] = []
    pos, size = 0, len(data)
    while pos < size:
        if pos + 2 > size:
            raise FormatError(f"{what}: truncated element header", check=f"{what}.tlv")
        tag = data[pos]
        if tag & _HIGH_TAG_NUMBER == _HIGH_TAG_NUMBER:
            raise FormatError(
                f"{what}: multi-byte tags are not used here", check=f"{what}.tag", actual=hex(tag)
            )
        length = data[pos + 1]
        pos += 2
        if length >= _LONG_LENGTH:
            count = length & 0x7F
            if count == 0 or count > _MAX_LENGTH_OCTETS or pos + count > size:
                raise FormatError(
                    f"{what}: bad length octets", check=f"{what}.length", actual=hex(length)
                )
            length = int.from_bytes(data[pos : pos + count], "big")
            # DER: the shortest form; long form only for lengths >= 128, no leading zero octet.
            if length < _LONG_LENGTH or data[pos] == 0:
                raise FormatError(
                    f"{what}: non-minimal length encoding", check=f"{what}.length", actual=length
                )
            pos += count
        end = pos + length
        if end > size:
            raise FormatError(
                f"{what}: element runs past the end",
                check=f"{what}.length",
                expected=f"<= {size - pos}",
                actual=length,
            )
        out.append((tag, data[pos:end]))
        pos = end
    return out


def oid_value_pair(data: bytes, what: str) -> tuple[bytes, Tlv]:
    """The content of SEQUENCE {OBJECT IDENTIFIER, value}: the OID's octets and the value."""
    # Fast path for short-form lengths (all of the SGX extension): the same result as the
    # general path below, without building lists; anything else takes the general path.
    size = len(data)
    if size >= 4 and data[0] == TAG_OID and data[1] < _LONG_LENGTH:
        at = 2 + data[1]
        if (
            at + 2 <= size
            and data[at] & _HIGH_TAG_NUMBER != _HIGH_TAG_NUMBER
            and data[at + 1] < _LONG_LENGTH
            and at + 2 + data[at + 1] == size
        ):
            return data[2:at], (data[at], data[at + 2 :])
    pair = elements(data, what)
    if len(pair) != 2 or pair[0][0] != TAG_OID:
        raise FormatError(
            f"{what}: each entry must be SEQUENCE {{OID, value}}", check=f"{what}.entry"
        )
    return pair[0][1], pair[1]


def single(data: bytes, tag: int, what: str) -> bytes:
    """The content of the one element that `data` must consist of, with the given tag."""
    found = elements(data, what)
    if len(found) != 1:
        raise FormatError(
            f"{what}: expected exactly one element",
            check=f"{what}.length",
            expected=1,
            actual=len(found),
        )
    return expect_tag(found[0], tag, what)


def expect_tag(element: Tlv, tag: int, what: str) -> bytes:
    if element[0] != tag:
        raise FormatError(
            f"{what}: unexpected element type",
            check=what,
            expected=hex(tag),
            actual=hex(element[0]),
        )
    return element[1]


def decode_integer(content: bytes, field: str) -> int:
    """A DER INTEGER or ENUMERATED content, minimal two's complement."""
    if not content:
        raise FormatError(f"{field}: empty INTEGER", check=field)
    if len(content) > 1 and (
        (content[0] == 0x00 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        raise FormatError(f"{field}: non-minimal INTEGER encoding", check=field, actual=content)
    return int.from_bytes(content, "big", signed=True)


def decode_boolean(content: bytes, field: str) -> bool:
    if content == b"\xff":
        return True
    if content == b"\x00":
        return False
    raise FormatError(f"{field}: BOOLEAN must be 0x00 or 0xFF", check=field, actual=content)


def encode_oid(dotted: str) -> bytes:
    """The content octets of an OBJECT IDENTIFIER (for comparing against constants)."""
    arcs = [int(arc) for arc in dotted.split(".")]
    out = bytearray()
    for value in (40 * arcs[0] + arcs[1], *arcs[2:]):
        rest = value
        chunk = [rest & 0x7F]
        while rest > 0x7F:
            rest >>= 7
            chunk.append(0x80 | (rest & 0x7F))
        out += bytes(reversed(chunk))
    return bytes(out)


def decode_oid(content: bytes, field: str) -> str:
    """Dotted-decimal form of an OBJECT IDENTIFIER content."""
    if not content or content[-1] & 0x80:
        raise FormatError(f"{field}: truncated OBJECT IDENTIFIER", check=field, actual=content)
    arcs: list[int] = []
    value = 0
    start = True
    for byte in content:
        if start and byte == 0x80:
            raise FormatError(f"{field}: non-minimal OID arc", check=field, actual=content)
        value = (value << 7) | (byte & 0x7F)
        start = not byte & 0x80
        if start:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))
