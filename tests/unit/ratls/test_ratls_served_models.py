"""MODEL_DIGESTS' DER: the exact layout, one encoding per set, a named error per malformation."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest.simulated.der_writer import octet_string, sequence, tlv
from ratls.errors import CertificateFormatError
from ratls.served_models import (
    MAX_SERVED_MODELS,
    MODEL_NAME_MAX_SIZE,
    TAG_UTF8_STRING,
    ServedModel,
    decode_model_digests,
    encode_model_digests,
    served_models,
)

ALPHA = ServedModel("alpha", hashlib.sha256(b"alpha image").digest())
BETA = ServedModel("beta", hashlib.sha384(b"beta image").digest())
GAMMA = ServedModel("gamma", hashlib.sha512(b"gamma image").digest())


# An independent writer (attest's simulated DER writer plus UTF8String), so that tests can write
# what the encoder refuses to: wrong order, duplicates, bad sizes, stray elements.
def utf8(name: str | bytes) -> bytes:
    return tlv(TAG_UTF8_STRING, name.encode("utf-8") if isinstance(name, str) else name)


def entry(name: str | bytes, digest: bytes) -> bytes:
    return sequence(utf8(name), octet_string(digest))


def listing(*entries: bytes) -> bytes:
    return sequence(*entries)


def test_layout_is_a_sequence_of_name_and_digest_sequences() -> None:
    digest = bytes(range(32))
    assert encode_model_digests([ServedModel("m", digest)]) == (
        b"\x30\x27"  # SEQUENCE OF, 39 bytes
        + b"\x30\x25"  # SEQUENCE, 37 bytes
        + b"\x0c\x01m"  # UTF8String "m"
        + b"\x04\x20" + digest  # OCTET STRING, 32 bytes
    )


def test_entries_are_written_sorted_by_name_whatever_the_order_given() -> None:
    encoded = encode_model_digests([GAMMA, ALPHA, BETA])
    assert encoded == listing(*(entry(m.name, m.digest) for m in (ALPHA, BETA, GAMMA)))
    assert decode_model_digests(encoded) == (ALPHA, BETA, GAMMA)


def test_sixteen_large_entries_use_long_form_lengths_and_round_trip() -> None:
    models = [ServedModel(f"{i:02d}" + "n" * 62, bytes([i]) * 64) for i in range(16)]
    encoded = encode_model_digests(models)
    # Each entry: SEQUENCE header 30 81 84, then 0c 40 <64-octet name>, then 04 40 <digest>.
    assert encoded[:2] == b"\x30\x82" and len(encoded) == 4 + 16 * (3 + 2 + 64 + 2 + 64)
    assert decode_model_digests(encoded) == tuple(models)


def test_names_sort_by_code_point_which_is_the_utf8_order() -> None:
    upper, lower, accented = (ServedModel(n, bytes(32)) for n in ("Zeta", "alpha", "\u00e9t\u00e9"))
    assert decode_model_digests(encode_model_digests([accented, lower, upper])) == (
        upper, lower, accented)


@pytest.mark.parametrize(
    ("value", "check"),
    [
        (listing(entry("b", bytes(32)), entry("a", bytes(32))), "model_digests.order"),
        (listing(entry("a", bytes(32)), entry("a", bytes(48))), "model_digests.duplicate_name"),
        (listing(*(entry(f"m{i:02d}", bytes(32)) for i in range(17))), "model_digests.count"),
        (listing(), "model_digests.count"),
        (listing(entry("a", bytes(19))), "model_digest_length"),
        (listing(entry("a", bytes(65))), "model_digest_length"),
        (listing(entry("", bytes(32))), "model_name"),
        (listing(entry("n" * (MODEL_NAME_MAX_SIZE + 1), bytes(32))), "model_name"),
        (listing(entry("a\nb", bytes(32))), "model_name"),
        (listing(entry(b"\xc3\x28", bytes(32))), "model_name"),  # not UTF-8
        (listing(entry(b"\xc0\xaf", bytes(32))), "model_name"),  # overlong UTF-8
        (listing(entry("a", bytes(32))) + b"\x05\x00", "model_digests.trailing_bytes"),
        (listing(entry("a", bytes(32))) + b"\x00", "model_digests.tlv"),
        (b"", "model_digests.sequence"),
        (octet_string(bytes(32)), "model_digests.sequence"),
        (tlv(0x31, entry("a", bytes(32))), "model_digests.sequence"),  # a SET, not a SEQUENCE
        (listing(octet_string(bytes(32))), "model_digests.entry"),
        (listing(sequence(octet_string(bytes(32)), utf8("a"))), "model_digests.entry"),
        (listing(sequence(utf8("a"))), "model_digests.entry"),
        (listing(sequence(utf8("a"), octet_string(bytes(32)), octet_string(b""))),
         "model_digests.entry"),
        (listing(sequence(tlv(0x13, b"a"), octet_string(bytes(32)))), "model_digests.entry"),
        (b"\x30\x81\x05" + entry("a", b"")[:5], "model_digests.length"),  # non-minimal length
        (b"\x30\x80" + entry("a", bytes(32)) + b"\x00\x00", "model_digests.length"),  # BER
        (listing(entry("a", bytes(32)))[:-1], "model_digests.length"),  # truncated
    ],
    ids=[
        "unsorted", "duplicate_name", "seventeen", "empty_list", "digest_19", "digest_65",
        "empty_name", "name_65_octets", "control_character", "invalid_utf8", "overlong_utf8",
        "trailing_element", "trailing_byte", "empty", "not_a_sequence", "set", "entry_not_sequence",
        "fields_swapped", "missing_digest", "extra_field", "printable_string", "non_minimal_length",
        "indefinite_length", "truncated",
    ],
)
def test_each_malformation_is_a_named_format_error(value: bytes, check: str) -> None:
    with pytest.raises(CertificateFormatError) as err:
        decode_model_digests(value)
    assert err.value.check == check
    assert err.value.stage == "parse"


def test_the_issuing_side_sorts_and_refuses_what_the_parser_would() -> None:
    assert served_models([BETA, ALPHA]) == (ALPHA, BETA)
    assert served_models([]) == ()
    cases = [
        ([ALPHA, ServedModel("alpha", BETA.digest)], "model_digests.duplicate_name"),
        ([ServedModel(f"m{i:02d}", bytes(32)) for i in range(MAX_SERVED_MODELS + 1)],
         "model_digests.count"),
        ([ServedModel(None, bytes(32)), ALPHA], "model_digests.unnamed"),
    ]
    for models, check in cases:
        with pytest.raises(CertificateFormatError) as err:
            served_models(models)
        assert err.value.check == check
    for models, check in [([], "model_digests.count"),
                          ([ServedModel(None, bytes(32))], "model_digests.unnamed")]:
        with pytest.raises(CertificateFormatError) as err:
            encode_model_digests(models)
        assert err.value.check == check


@pytest.mark.parametrize(
    ("name", "digest", "check"),
    [("", bytes(32), "model_name"), ("a\x7f", bytes(32), "model_name"),
     ("a\u0085", bytes(32), "model_name"), ("\ud800", bytes(32), "model_name"),
     ("a", bytes(19), "model_digest_length"), ("a", "ab" * 32, "model_digest_type")],
)
def test_a_served_model_checks_its_own_fields(name, digest, check) -> None:
    with pytest.raises(CertificateFormatError) as err:
        ServedModel(name, digest)
    assert err.value.check == check


NAMES = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=16
)
DIGESTS = st.binary(min_size=20, max_size=64)
SETS = st.dictionaries(NAMES, DIGESTS, min_size=1, max_size=MAX_SERVED_MODELS)


@given(SETS)
def test_any_valid_set_round_trips_in_one_canonical_encoding(models: dict[str, bytes]) -> None:
    given_order = [ServedModel(name, digest) for name, digest in models.items()]
    encoded = encode_model_digests(given_order)
    decoded = decode_model_digests(encoded)
    assert decoded == tuple(sorted(given_order, key=lambda m: m.name))
    assert encode_model_digests(decoded) == encoded
    assert encode_model_digests(list(reversed(given_order))) == encoded


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_a_format_error(value: bytes) -> None:
    try:
        models = decode_model_digests(value)
    except CertificateFormatError as exc:
        assert exc.check
    else:  # whatever decodes is canonical: it encodes back to the same bytes
        assert encode_model_digests(models) == value


@given(SETS, st.data())
def test_any_single_byte_change_decodes_canonically_or_is_refused(models, data) -> None:
    encoded = bytearray(encode_model_digests([ServedModel(n, d) for n, d in models.items()]))
    at = data.draw(st.integers(0, len(encoded) - 1))
    encoded[at] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_model_digests(bytes(encoded))
    except CertificateFormatError:
        return
    assert encode_model_digests(decoded) == bytes(encoded)
