"""A small strict DER reader: just enough ASN.1 for the PCK certificate's SGX extension.

Strict means: single-byte tags only, definite minimal lengths, minimal INTEGER encodings,
BOOLEAN as 0x00/0xFF, no bytes left over. Anything else is a `FormatError` naming `what`.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Tlv:
    """One DER element: its tag and its content octets."""

    tag: int
    content: bytes


class DerReader:
    """Reads consecutive DER elements from `data`; `what` names the structure in errors."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self.what = what

    def at_end(self) -> bool:
        return self._pos == len(self._data)

    def expect_end(self) -> None:
        if not self.at_end():
            raise FormatError(
                f"{self.what}: {len(self._data) - self._pos} bytes after the last element",
                check=f"{self.what}.length",
                expected=self._pos,
                actual=len(self._data),
            )

    def read(self) -> Tlv:
        data, pos = self._data, self._pos
        if pos + 2 > len(data):
            raise FormatError(f"{self.what}: truncated element header", check=f"{self.what}.tlv")
        tag = data[pos]
        if tag & _HIGH_TAG_NUMBER == _HIGH_TAG_NUMBER:
            raise FormatError(f"{self.what}: multi-byte tags are not used here", check=f"{self.what}.tag",
                              actual=hex(tag))
        first = data[pos + 1]
        pos += 2
        if first < _LONG_LENGTH:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > _MAX_LENGTH_OCTETS or pos + count > len(data):
                raise FormatError(f"{self.what}: bad length octets", check=f"{self.what}.length",
                                  actual=hex(first))
            length = int.from_bytes(data[pos : pos + count], "big")
            # 2. DER: the shortest form; long form only for lengths >= 128, no leading zero octet.
            if length < _LONG_LENGTH or data[pos] == 0:
                raise FormatError(f"{self.what}: non-minimal length encoding",
                                  check=f"{self.what}.length", actual=length)
            pos += count
        if pos + length > len(data):
            raise FormatError(f"{self.what}: element runs past the end", check=f"{self.what}.length",
                              expected=f"<= {len(data) - pos}", actual=length)
        self._pos = pos + length
        return Tlv(tag, data[pos : pos + length])

    def expect(self, tag: int, field: str) -> bytes:
        tlv = self.read()
        if tlv.tag != tag:
            raise FormatError(f"{self.what}: unexpected tag for {field}", check=f"{self.what}.{field}",
                              expected=hex(tag), actual=hex(tlv.tag))
        return tlv.content


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
