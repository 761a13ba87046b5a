"""The PCK certificate's SGX extension: the 26 real leaf certificates, then malformed DER."""

from __future__ import annotations

import dcap_qvl
import pytest
from attest_vectors import MANIFEST, QUOTE_NAMES, quote_bytes
from cryptography import x509

from attest.der import decode_integer, decode_oid
from attest.errors import FormatError
from attest.pck import (
    SGX_EXTENSION_OID,
    PckExtension,
    SgxType,
    parse_sgx_extension,
    pck_extension_of,
)
from attest.quote import parse_quote


def leaf(name: str) -> x509.Certificate:
    quote = parse_quote(quote_bytes(name), unsafe_allow_trailing_data=True)
    return x509.load_der_x509_certificate(quote.pck_cert_chain[0])


def raw_extension(certificate: x509.Certificate) -> bytes:
    oid = x509.ObjectIdentifier(SGX_EXTENSION_OID)
    return certificate.extensions.get_extension_for_oid(oid).value.value


@pytest.mark.parametrize("name", QUOTE_NAMES)
def test_leaf_extension_agrees_with_manifest_and_dcap_qvl(name: str) -> None:
    ext = pck_extension_of(leaf(name))
    theirs = dcap_qvl.parse_quote(quote_bytes(name)).pck_extension()
    assert ext.fmspc.hex() == MANIFEST["quotes"][name]["fmspc"]
    assert ext.ppid == bytes(theirs.ppid)
    assert ext.tcb.cpu_svn == bytes(theirs.cpu_svn)
    assert ext.tcb.pce_svn == theirs.pce_svn
    assert ext.pce_id == bytes(theirs.pce_id)
    assert ext.fmspc == bytes(theirs.fmspc)
    assert ext.sgx_type == theirs.sgx_type
    assert ext.platform_instance_id == bytes(theirs.platform_instance_id)
    assert ext.configuration is not None
    assert ext.configuration.dynamic_platform and ext.configuration.smt_enabled
    # Intel issues PCK certificates whose 16 component SVNs are the bytes of the TCB's CPUSVN.
    assert bytes(ext.tcb.sgx_tcb_components) == ext.tcb.cpu_svn


def test_example_values_of_the_base_quote() -> None:
    ext = pck_extension_of(leaf("dcapqvl_tdx_quote_v4.bin"))
    assert ext.tcb.sgx_tcb_components[:8] == (3, 3, 2, 2, 4, 1, 0, 5)
    assert ext.tcb.pce_svn == 11
    assert ext.sgx_type is SgxType.SCALABLE
    assert ext.configuration.cached_keys is True


def test_sgx_type_2_in_trustee_6() -> None:
    assert (
        pck_extension_of(leaf("trustee_tdx_quote_6.bin")).sgx_type
        is SgxType.SCALABLE_WITH_INTEGRITY
    )


def test_ca_certificate_has_no_extension() -> None:
    quote = parse_quote(quote_bytes("dcapqvl_tdx_quote_v4.bin"))
    platform_ca = x509.load_der_x509_certificate(quote.pck_cert_chain[1])
    with pytest.raises(FormatError, match="no SGX extension"):
        pck_extension_of(platform_ca)


# --- a tiny DER writer, checked against the real bytes, to build malformed variants -------------


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | ((n.bit_length() + 7) // 8)])
        + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + content


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for first in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        arc = first
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def integer(value: int, tag: int = 0x02) -> bytes:
    return tlv(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def pair(arc: str, value: bytes) -> bytes:
    return tlv(0x30, oid(f"{SGX_EXTENSION_OID}.{arc}") + value)


def encode(
    ext: PckExtension, *, drop: str = "", extra: bytes = b"", replace: dict | None = None
) -> bytes:
    replace = replace or {}
    tcb_items = [
        pair(f"2.{i + 1}", integer(svn)) for i, svn in enumerate(ext.tcb.sgx_tcb_components)
    ]
    tcb_items += [pair("2.17", integer(ext.tcb.pce_svn)), pair("2.18", tlv(0x04, ext.tcb.cpu_svn))]
    config = ext.configuration
    flags = [
        pair(f"7.{i}", tlv(0x01, b"\xff" if v else b"\x00"))
        for i, v in ((1, config.dynamic_platform), (2, config.cached_keys), (3, config.smt_enabled))
    ]
    items = {
        "1": pair("1", tlv(0x04, ext.ppid)),
        "2": pair("2", tlv(0x30, b"".join(tcb_items))),
        "3": pair("3", tlv(0x04, ext.pce_id)),
        "4": pair("4", tlv(0x04, ext.fmspc)),
        "5": pair("5", integer(ext.sgx_type, tag=0x0A)),
        "6": pair("6", tlv(0x04, ext.platform_instance_id)),
        "7": pair("7", tlv(0x30, b"".join(flags))),
    }
    items.update(replace)
    return tlv(0x30, b"".join(v for k, v in items.items() if k != drop) + extra)


@pytest.fixture(scope="module")
def base() -> tuple[PckExtension, bytes]:
    certificate = leaf("dcapqvl_tdx_quote_v4.bin")
    return pck_extension_of(certificate), raw_extension(certificate)


def test_writer_reproduces_the_real_extension(base: tuple[PckExtension, bytes]) -> None:
    ext, raw = base
    assert encode(ext) == raw
    assert parse_sgx_extension(encode(ext)) == ext


@pytest.mark.parametrize("drop", ["1", "2", "3", "4", "5"])
def test_required_element_missing(base: tuple[PckExtension, bytes], drop: str) -> None:
    with pytest.raises(FormatError, match="lacks"):
        parse_sgx_extension(encode(base[0], drop=drop))


def test_optional_elements_may_be_absent(base: tuple[PckExtension, bytes]) -> None:
    ext = parse_sgx_extension(encode(base[0], drop="6"))
    assert ext.platform_instance_id is None
    assert parse_sgx_extension(encode(base[0], drop="7")).configuration is None


@pytest.mark.parametrize(
    ("label", "mutation"),
    [
        ("duplicate element", {"extra": pair("4", tlv(0x04, b"\0" * 6))}),
        ("unknown element", {"extra": pair("8", tlv(0x04, b"\0"))}),
        ("foreign oid", {"extra": tlv(0x30, oid("1.2.3.4") + tlv(0x04, b""))}),
        ("short fmspc", {"replace": {"4": pair("4", tlv(0x04, b"\0" * 5))}}),
        ("fmspc wrong type", {"replace": {"4": pair("4", integer(5))}}),
        ("sgx type out of range", {"replace": {"5": pair("5", integer(3, tag=0x0A))}}),
        ("sgx type as integer", {"replace": {"5": pair("5", integer(1))}}),
        ("bad boolean", {"replace": {"7": pair("7", tlv(0x30, pair("7.1", tlv(0x01, b"\x01"))))}}),
        (
            "pair with extra value",
            {
                "replace": {
                    "3": tlv(
                        0x30, oid(f"{SGX_EXTENSION_OID}.3") + tlv(0x04, b"\0\0") + tlv(0x04, b"")
                    )
                }
            },
        ),
    ],
)
def test_malformed_extension(base: tuple[PckExtension, bytes], label: str, mutation: dict) -> None:
    with pytest.raises(FormatError):
        parse_sgx_extension(encode(base[0], **mutation))


def tcb_with(ext: PckExtension, arc: int, value: bytes) -> bytes:
    items = [pair(f"2.{i + 1}", integer(svn)) for i, svn in enumerate(ext.tcb.sgx_tcb_components)]
    items += [pair("2.17", integer(ext.tcb.pce_svn)), pair("2.18", tlv(0x04, ext.tcb.cpu_svn))]
    items[arc - 1] = pair(f"2.{arc}", value)
    return encode(ext, replace={"2": pair("2", tlv(0x30, b"".join(items)))})


@pytest.mark.parametrize(
    ("arc", "value"),
    [
        (1, integer(-1)),
        (1, integer(256)),
        (17, integer(1 << 16)),
        (1, tlv(0x02, b"\x00\x05")),  # non-minimal INTEGER
        (1, tlv(0x02, b"")),  # empty INTEGER
        (18, tlv(0x04, b"\0" * 15)),  # short CPUSVN
        (3, tlv(0x04, b"\x03")),  # component as OCTET STRING
    ],
)
def test_malformed_tcb(base: tuple[PckExtension, bytes], arc: int, value: bytes) -> None:
    with pytest.raises(FormatError):
        parse_sgx_extension(tcb_with(base[0], arc, value))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x30",
        b"\x30\x80\x00\x00",  # indefinite length
        b"\x30\x81\x05" + b"\x00" * 5,  # long form for a short length
        b"\x30\x02\x00",  # runs past the end
        b"\x1f\x01\x00",  # high tag number
    ],
)
def test_malformed_der(raw: bytes) -> None:
    with pytest.raises(FormatError):
        parse_sgx_extension(raw)


def test_trailing_bytes_after_extension(base: tuple[PckExtension, bytes]) -> None:
    with pytest.raises(FormatError, match="exactly one element"):
        parse_sgx_extension(base[1] + b"\x04\x00")
    with pytest.raises(FormatError, match="truncated"):
        parse_sgx_extension(base[1] + b"\x00")


def test_der_primitives() -> None:
    assert decode_oid(oid(SGX_EXTENSION_OID)[2:], "x") == SGX_EXTENSION_OID
    assert decode_oid(oid("2.999.1")[2:], "x") == "2.999.1"
    assert decode_integer(b"\x00\x80", "x") == 128
    assert decode_integer(b"\xff", "x") == -1
    with pytest.raises(FormatError):
        decode_oid(b"\x2a\x80\x01", "x")  # non-minimal arc
    with pytest.raises(FormatError):
        decode_integer(b"\xff\xff", "x")
