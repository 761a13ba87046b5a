"""Quote parsing (v4, v5) on the 26 real quotes, then structural mutations that must fail."""

from __future__ import annotations

import struct

import dcap_qvl
import pytest
from attest_vectors import MANIFEST, QUOTE_NAMES, TRAILING_DATA_QUOTE, V5_QUOTE, quote_bytes

from attest import quote as q
from attest.errors import FormatError
from attest.quote import Quote, parse_quote


def parse_vector(name: str) -> Quote:
    return parse_quote(quote_bytes(name), unsafe_allow_trailing_data=name == TRAILING_DATA_QUOTE)


@pytest.mark.parametrize("name", QUOTE_NAMES)
def test_vector_parses_round_trips_and_matches_manifest(name: str) -> None:
    raw = quote_bytes(name)
    meta = MANIFEST["quotes"][name]
    quote = parse_vector(name)

    assert quote.to_bytes() == raw
    assert quote.version == meta["version"]
    assert quote.body_type == meta["body_type"]
    assert quote.body.mr_td.hex() == meta["mr_td"]
    assert quote.body.report_data.hex() == meta["report_data"]
    assert quote.body.td_attributes.hex() == meta["td_attributes"]
    assert quote.body.tee_tcb_svn.hex() == meta["tee_tcb_svn"]
    assert len(quote.padding) == meta["trailing_bytes_after_sig_data"]
    assert len(quote.pck_cert_chain) == 3


@pytest.mark.parametrize("name", QUOTE_NAMES)
def test_fields_agree_with_dcap_qvl_parser(name: str) -> None:
    quote = parse_vector(name)
    theirs = dcap_qvl.parse_quote(quote_bytes(name))
    report = theirs.report
    assert theirs.header.version == quote.header.version
    assert theirs.header.tee_type == quote.header.tee_type
    assert bytes(theirs.header.qe_vendor_id) == quote.header.qe_vendor_id
    assert bytes(theirs.header.user_data) == quote.header.user_data
    for ours, field in (
        ("tee_tcb_svn", "tee_tcb_svn"),
        ("mr_seam", "mr_seam"),
        ("mr_signer_seam", "mr_signer_seam"),
        ("seam_attributes", "seam_attributes"),
        ("td_attributes", "td_attributes"),
        ("xfam", "xfam"),
        ("mr_td", "mr_td"),
        ("mr_config_id", "mr_config_id"),
        ("mr_owner", "mr_owner"),
        ("mr_owner_config", "mr_owner_config"),
        ("report_data", "report_data"),
    ):
        assert bytes(getattr(report, field)) == getattr(quote.body, ours), field
    assert [bytes(getattr(report, f"rt_mr{i}")) for i in range(4)] == list(quote.body.rtmr)
    if quote.body.is_td15:
        assert bytes(report.tee_tcb_svn2) == quote.body.tee_tcb_svn2
        assert bytes(report.mr_service_td) == quote.body.mr_service_td
    chain_pem = quote.certification_data.pck_cert_chain.to_bytes().rstrip(b"\0")
    assert bytes(theirs.cert_chain_pem_bytes()).rstrip(b"\0") == chain_pem


@pytest.mark.parametrize("name", QUOTE_NAMES)
def test_signed_region_and_report_data_offset(name: str) -> None:
    raw = quote_bytes(name)
    quote = parse_vector(name)
    offset = q.REPORT_DATA_OFFSET_V4 if quote.version == 4 else q.REPORT_DATA_OFFSET_V5
    assert raw[offset : offset + 64] == quote.body.report_data
    expected_length = {4: 48 + 584, 5: 48 + 6 + (648 if quote.body.is_td15 else 584)}[quote.version]
    assert len(quote.signed_bytes) == expected_length
    assert raw.startswith(quote.signed_bytes)


def test_v5_vectors_are_td15_and_v4_are_td10() -> None:
    for name in QUOTE_NAMES:
        quote = parse_vector(name)
        assert quote.body.is_td15 == (quote.version == 5), name


def test_non_zero_trailing_data_is_refused_unless_unsafe() -> None:
    raw = quote_bytes(TRAILING_DATA_QUOTE)
    with pytest.raises(FormatError) as info:
        parse_quote(raw)
    assert info.value.check == "trailing_data"
    quote = parse_quote(raw, unsafe_allow_trailing_data=True)
    assert quote.padding == b"\nextra bytes(only for testing purpose)\n"
    assert quote.to_bytes() == raw


def test_zero_padding_may_be_dropped_or_extended() -> None:
    raw = quote_bytes("dcapqvl_tdx_quote_v4.bin")
    quote = parse_quote(raw)
    stripped = raw[: len(raw) - len(quote.padding)]
    assert parse_quote(stripped).padding == b""
    assert parse_quote(raw + bytes(100)).padding == bytes(len(quote.padding) + 100)


def test_layout_constants_are_contiguous() -> None:
    # _Layout refuses gaps and overlaps when the module is imported; here, the totals.
    assert q._TD_REPORT10.fields[-1][1].end == q.TD_REPORT10_SIZE == 584
    assert q._TD_REPORT15.fields[-1][1].end == q.TD_REPORT15_SIZE == 648
    assert q._ENCLAVE_REPORT.fields[-1][1].end == q.ENCLAVE_REPORT_SIZE == 384
    assert q._HEADER.fields[-1][1].end == q.HEADER_SIZE == 48
    assert (q.REPORT_DATA_OFFSET_V4, q.REPORT_DATA_OFFSET_V5) == (568, 574)
    with pytest.raises(AssertionError, match="gap"):
        q._Layout("x", (("a", q.Span(0, 2), False), ("b", q.Span(3, 1), False)), 4)
    with pytest.raises(AssertionError, match="covers"):
        q._Layout("x", (("a", q.Span(0, 2), False),), 4)


# --- structural mutations -----------------------------------------------------------------------


def patched(raw: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def assert_format_error(raw: bytes, check: str) -> FormatError:
    with pytest.raises(FormatError) as info:
        parse_quote(raw)
    assert info.value.check == check, str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "check"),
    [
        (0, "<H", 3, "header.version"),
        (0, "<H", 6, "header.version"),
        (2, "<H", 3, "header.att_key_type"),
        (4, "<I", 0, "header.tee_type"),
        (4, "<I", 0x80, "header.tee_type"),
    ],
)
def test_header_fields_are_checked(offset: int, fmt: str, value: int, check: str) -> None:
    error = assert_format_error(
        patched(quote_bytes("dcapqvl_tdx_quote_v4.bin"), offset, fmt, value), check
    )
    assert str(value) in str(error) or hex(value) in str(error)


@pytest.mark.parametrize(
    ("body_type", "size", "check"),
    [
        (2, 648, "body_descriptor.size"),  # MANIFEST negative test: v5 body type 3 -> 2
        (1, 384, "body_descriptor.type"),  # SGX enclave report in a TDX quote
        (4, 885, "body_descriptor.type"),  # TD 1.5ex: not supported on purpose
        (0, 648, "body_descriptor.type"),
        (3, 584, "body_descriptor.size"),
        (3, 649, "body_descriptor.size"),
    ],
)
def test_v5_body_descriptor_is_checked(body_type: int, size: int, check: str) -> None:
    raw = patched(quote_bytes(V5_QUOTE), 48, "<H", body_type)
    assert_format_error(patched(raw, 50, "<I", size), check)


def test_v4_quote_with_td15_body_cannot_be_built() -> None:
    quote = parse_vector(V5_QUOTE)
    header = q.QuoteHeader(**{**quote.header.__dict__, "version": 4})
    with pytest.raises(FormatError):
        Quote(header, quote.body, quote.signature, quote.attestation_key, quote.certification_data)


def test_every_truncation_is_a_format_error() -> None:
    raw = quote_bytes("teekit_tdx-v4-edgeless.bin")  # no padding: every cut removes real bytes
    for length in range(len(raw)):
        with pytest.raises(FormatError):
            parse_quote(raw[:length])


SIG_LEN_V4 = 632
CERT_TYPE_V4 = 636 + 128
QE_AUTH_SIZE_V4 = 636 + 134 + 448


def test_size_fields_must_agree() -> None:
    raw = quote_bytes("dcapqvl_tdx_quote_v4.bin")
    sig_len = struct.unpack_from("<I", raw, SIG_LEN_V4)[0]
    assert_format_error(patched(raw, SIG_LEN_V4, "<I", sig_len - 1), "certification_data.size")
    assert_format_error(patched(raw, SIG_LEN_V4, "<I", sig_len + 1), "certification_data.size")
    assert_format_error(patched(raw, SIG_LEN_V4, "<I", 0xFFFFFFFF), "signature_data_length")
    assert_format_error(patched(raw, SIG_LEN_V4, "<I", 10), "signature_data_length")
    cert_size = struct.unpack_from("<I", raw, CERT_TYPE_V4 + 2)[0]
    assert_format_error(
        patched(raw, CERT_TYPE_V4 + 2, "<I", cert_size + 1), "certification_data.size"
    )
    assert_format_error(patched(raw, QE_AUTH_SIZE_V4, "<H", 33), "certification_data.inner_type")
    assert_format_error(
        patched(raw, QE_AUTH_SIZE_V4, "<H", 0xFFFF), "certification_data.qe_auth_data_size"
    )


@pytest.mark.parametrize("cert_type", [1, 2, 3, 4, 5, 7])
def test_outer_certification_data_must_be_type_6(cert_type: int) -> None:
    raw = patched(quote_bytes("dcapqvl_tdx_quote_v4.bin"), CERT_TYPE_V4, "<H", cert_type)
    assert_format_error(raw, "certification_data.type")


@pytest.mark.parametrize("cert_type", [1, 2, 3, 4, 6, 7])
def test_inner_certification_data_must_be_type_5(cert_type: int) -> None:
    raw = quote_bytes("dcapqvl_tdx_quote_v4.bin")
    inner = QE_AUTH_SIZE_V4 + 2 + struct.unpack_from("<H", raw, QE_AUTH_SIZE_V4)[0]
    assert_format_error(patched(raw, inner, "<H", cert_type), "certification_data.inner_type")


def with_chain(quote: Quote, chain: bytes) -> bytes:
    """The quote's bytes with the PEM chain replaced and every size field fixed up."""
    raw = quote.to_bytes()
    old = quote.certification_data.pck_cert_chain.to_bytes()
    start = raw.index(old)
    out = bytearray(raw[:start] + chain + raw[start + len(old) :])
    delta = len(chain) - len(old)
    body_end = len(quote.signed_bytes)
    for offset, fmt in ((body_end, "<I"), (body_end + 4 + 130, "<I"), (start - 4, "<I")):
        struct.pack_into(fmt, out, offset, struct.unpack_from(fmt, out, offset)[0] + delta)
    return bytes(out)


def test_chain_rewrite_helper_keeps_a_valid_quote() -> None:
    quote = parse_vector("dcapqvl_tdx_quote_v4.bin")
    chain = quote.certification_data.pck_cert_chain.to_bytes()
    assert parse_quote(with_chain(quote, chain)) == quote
    assert parse_quote(
        with_chain(quote, chain.rstrip(b"\0"))
    ).certification_data.pck_cert_chain == q.PckCertChain(
        quote.pck_cert_chain, nul_terminated=False
    )


@pytest.mark.parametrize(
    "mutation",
    [
        "crlf",
        "wide_lines",
        "two_nuls",
        "text_between",
        "missing_end",
        "bad_base64",
        "no_certificates",
        "extra_newline",
        "lowercase_marker",
        "base64_padding_bits",
    ],
)
def test_non_canonical_pem_chain_is_refused(mutation: str) -> None:
    quote = parse_vector("dcapqvl_tdx_quote_v4.bin")
    pem = quote.certification_data.pck_cert_chain.to_bytes()
    text = pem.rstrip(b"\0")
    mutated = {
        "crlf": text.replace(b"\n", b"\r\n"),
        "wide_lines": text[: len(q.PEM_BEGIN) + 64] + text[len(q.PEM_BEGIN) + 65 :],
        "two_nuls": text + b"\0\0",
        "text_between": text.replace(b"-----\n-----BEGIN", b"-----\nhello\n-----BEGIN", 1),
        "missing_end": text[: text.rindex(b"-----END")],
        "bad_base64": text.replace(b"MII", b"M*I", 1),
        "no_certificates": b"\0",
        "extra_newline": text + b"\n",
        "lowercase_marker": text.replace(b"BEGIN CERTIFICATE", b"begin CERTIFICATE", 1),
        # The last base64 character of a block carries unused bits: flipping them must not pass.
        "base64_padding_bits": _flip_unused_base64_bits(text),
    }[mutation]
    with pytest.raises(FormatError):
        parse_quote(with_chain(quote, mutated))


def _flip_unused_base64_bits(text: bytes) -> bytes:
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    pad = text.index(b"=")  # some block ends with padding, so its last character has unused bits
    flipped = alphabet[alphabet.index(text[pad - 1 : pad]) ^ 1]
    return text[: pad - 1] + bytes([flipped]) + text[pad:]


def test_pck_chain_round_trip_and_checks() -> None:
    chain = parse_vector("dcapqvl_tdx_quote_v4.bin").certification_data.pck_cert_chain
    assert q.PckCertChain.from_bytes(chain.to_bytes()) == chain
    with pytest.raises(FormatError):
        q.PckCertChain(())
    with pytest.raises(FormatError):
        q.PckCertChain((b"\x30\x03\x02\x01",))  # DER length does not cover the bytes
    with pytest.raises(FormatError):
        q.PckCertChain((b"\x04\x00",))  # not a SEQUENCE


def test_dataclasses_refuse_wrong_sizes() -> None:
    quote = parse_vector("dcapqvl_tdx_quote_v4.bin")
    with pytest.raises(FormatError, match="mr_td"):
        q.TdReport(**{**quote.body.__dict__, "mr_td": b"\0" * 47})
    with pytest.raises(FormatError, match="rtmr"):
        q.TdReport(**{**quote.body.__dict__, "rtmr": quote.body.rtmr[:3]})
    with pytest.raises(FormatError, match="isv_svn"):
        q.EnclaveReport(**{**quote.certification_data.qe_report.__dict__, "isv_svn": 1 << 16})
    with pytest.raises(FormatError, match="version"):
        q.QuoteHeader(**{**quote.header.__dict__, "version": -1})


def test_oversized_input_is_refused() -> None:
    raw = quote_bytes("dcapqvl_tdx_quote_v4.bin")
    assert_format_error(raw + bytes(q.MAX_QUOTE_SIZE), "quote.size")


@pytest.mark.parametrize("content", [0, 1, 45, 46, 47, 93, 94, 95, 200])
def test_canonical_pem_check_agrees_with_re_encoding(content: int) -> None:
    """The fast canonical check accepts exactly `_pem_block(der)` for any length of DER."""
    length = bytes([content]) if content < 0x80 else b"\x81" + bytes([content])
    der = b"\x30" + length + bytes(range(content))
    block = q._pem_block(der)
    assert q.PckCertChain.from_bytes(block).certificates == (der,)
    body = block[len(q.PEM_BEGIN) : -len(q.PEM_END)]
    for cut in range(1, len(body)):  # move one line break anywhere else: never canonical
        if body[cut - 1 : cut] == b"\n" or body[cut : cut + 1] == b"\n":
            continue
        moved = body.replace(b"\n", b"", 1)
        moved = moved[:cut] + b"\n" + moved[cut:]
        if moved != body:
            with pytest.raises(FormatError):
                q.PckCertChain.from_bytes(q.PEM_BEGIN + moved + q.PEM_END)
