"""Certificate profile v1: extension encodings, REPORTDATA formulas, parse and self-checks."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from attest.simulated.der_writer import octet_string, sequence, tlv
from ratls.errors import CertificateError, CertificateFormatError, NonceError
from ratls.profile import (
    MODEL_DIGEST_OID,
    MODEL_DIGESTS_OID,
    TDX_QUOTE_OID,
    RatlsCertificate,
    SubjectNames,
    build_certificate,
    certificate_report_data,
    check_certificate,
    nonce_report_data,
    parse_certificate,
    spki_der,
)
from ratls.served_models import ServedModel, encode_model_digests

NOW = datetime(2026, 3, 1, 12, 34, 56, 789000, tzinfo=UTC)
QUOTE = bytes(range(256)) * 20
DIGEST = hashlib.sha256(b"model image").digest()
NAMES = SubjectNames.parse(["appliance.test", "10.1.2.3"])


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def make(key=None, **overrides) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    args = {"names": NAMES, "quote": QUOTE, "model_digest": DIGEST, "not_before": NOW}
    args.update(overrides)
    return der_of(build_certificate(key, **args))


def test_report_data_formulas_follow_the_design_text() -> None:
    spki = b"\x30\x59" + bytes(89)
    when = datetime(2026, 3, 1, 12, 34, 59, tzinfo=UTC)
    assert (
        certificate_report_data(spki, when)
        == hashlib.sha512(hashlib.sha256(spki).digest() + b"2026-03-01T12:34Z").digest()
    )
    nonce = bytes(range(32))
    assert (
        nonce_report_data(spki, nonce)
        == hashlib.sha512(hashlib.sha256(spki).digest() + nonce).digest()
    )


def test_report_data_uses_utc_for_other_time_zones() -> None:
    spki = b"spki"
    paris = datetime(2026, 3, 1, 13, 34, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    assert certificate_report_data(spki, paris) == certificate_report_data(
        spki, datetime(2026, 3, 1, 13, 34, tzinfo=UTC)
    )


@pytest.mark.parametrize("size", [0, 15, 65, 100])
def test_nonce_outside_16_to_64_bytes_is_refused(size: int) -> None:
    with pytest.raises(NonceError) as err:
        nonce_report_data(b"spki", bytes(size))
    assert err.value.check == "nonce_length"


def test_certificate_carries_profile_v1() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = make(key)
    parsed = parse_certificate(der)
    assert parsed.quote == QUOTE
    assert parsed.model_digest == DIGEST
    assert parsed.not_before == datetime(2026, 3, 1, 12, 34, tzinfo=UTC)
    assert parsed.not_after - parsed.not_before == timedelta(hours=24)
    assert parsed.dns_names == ("appliance.test",)
    assert parsed.ip_addresses == (ipaddress.ip_address("10.1.2.3"),)
    assert parsed.spki == spki_der(key.public_key())
    assert parsed.fingerprint == hashlib.sha256(der).digest()
    assert parsed.report_data == certificate_report_data(parsed.spki, NOW)
    cert = parsed.certificate
    assert cert.issuer == cert.subject
    assert cert.signature_hash_algorithm.name == "sha256"
    assert cert.extensions.get_extension_for_oid(TDX_QUOTE_OID).critical is False
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    check_certificate(parsed, now=NOW)


def test_extensions_hold_raw_bytes_as_extn_value_contents() -> None:
    # Extension ::= SEQUENCE { extnID OID, extnValue OCTET STRING }: the OCTET STRING's contents
    # are the quote / root hash themselves, not a nested DER value.
    der = make()
    assert _oid_der(TDX_QUOTE_OID) + b"\x04\x82" + len(QUOTE).to_bytes(2, "big") + QUOTE in der
    assert _oid_der(MODEL_DIGEST_OID) + b"\x04\x20" + DIGEST in der


def _oid_der(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(a) for a in oid.dotted_string.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for first in arcs[2:]:
        chunk = [first & 0x7F]
        arc = first >> 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return b"\x06" + bytes([len(body)]) + bytes(body)


def test_no_model_means_no_model_digest_extension() -> None:
    parsed = parse_certificate(make(model_digest=None))
    assert parsed.model_digest is None
    with pytest.raises(x509.ExtensionNotFound):
        parsed.certificate.extensions.get_extension_for_oid(MODEL_DIGEST_OID)


def test_missing_quote_extension_is_a_format_error() -> None:
    with pytest.raises(CertificateFormatError) as err:
        parse_certificate(make(quote=None))
    assert err.value.check == "quote_extension"


def test_not_der_is_a_format_error() -> None:
    with pytest.raises(CertificateFormatError) as err:
        parse_certificate(b"\x30\x03\x02\x01\x00")
    assert err.value.check == "der"


def foreign_certificate(public_key, signer) -> bytes:
    """A certificate outside the profile's builder: any key, signed by any key."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    return der_of(
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.UnrecognizedExtension(TDX_QUOTE_OID, QUOTE), critical=False)
        .sign(signer, hashes.SHA256())
    )


def test_rsa_key_is_a_format_error() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(CertificateFormatError) as err:
        parse_certificate(foreign_certificate(key.public_key(), key))
    assert err.value.check == "key_type"


def test_p384_key_is_refused_by_the_builder() -> None:
    with pytest.raises(ValueError, match="P-256"):
        make(ec.generate_private_key(ec.SECP384R1()))


@pytest.mark.parametrize("size", [0, 19, 65])
def test_model_digest_size_is_bounded(size: int) -> None:
    with pytest.raises(CertificateFormatError) as err:
        make(model_digest=bytes(size) if size else b"")
    assert err.value.check == "model_digest_length"


def test_expired_and_not_yet_valid_certificates_are_refused() -> None:
    parsed = parse_certificate(make())
    check_certificate(parsed, now=parsed.not_after)
    with pytest.raises(CertificateError) as err:
        check_certificate(parsed, now=parsed.not_after + timedelta(seconds=1))
    assert err.value.check == "not_after"
    with pytest.raises(CertificateError) as err:
        check_certificate(parsed, now=parsed.not_before - timedelta(seconds=1))
    assert err.value.check == "not_before"


def test_any_change_to_the_signed_certificate_breaks_its_self_signature() -> None:
    der = bytearray(make())
    at = bytes(der).index(QUOTE) + 100  # a byte of the quote, inside the signed TBS
    der[at] ^= 0x01
    parsed = parse_certificate(bytes(der))
    with pytest.raises(CertificateError) as err:
        check_certificate(parsed, now=NOW)
    assert err.value.check == "self_signature"


def test_certificate_signed_by_another_key_is_refused() -> None:
    subject_key = ec.generate_private_key(ec.SECP256R1())
    der = foreign_certificate(subject_key.public_key(), ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CertificateError) as err:
        check_certificate(parse_certificate(der), now=NOW)
    assert err.value.check == "self_signature"


@pytest.mark.parametrize(
    "names",
    [[], ["-bad.example"], ["under_score.example"], ["a" * 64 + ".example"], ["ex ample"]],
)
def test_bad_subject_names_are_refused(names: list[str]) -> None:
    with pytest.raises(ValueError):
        SubjectNames.parse(names)


def test_subject_names_are_normalised() -> None:
    names = SubjectNames.parse(["Appliance.Example.", "[::1]"])
    assert names.dns_names == ("appliance.example",)
    assert names.ip_addresses == (ipaddress.ip_address("::1"),)


@given(st.binary(min_size=1, max_size=9000), st.none() | st.binary(min_size=20, max_size=64))
def test_quote_and_digest_round_trip_through_the_certificate(quote: bytes, digest) -> None:
    parsed = parse_certificate(make(KEY, quote=quote, model_digest=digest))
    assert (parsed.quote, parsed.model_digest) == (quote, digest)


KEY = ec.generate_private_key(ec.SECP256R1())


# -- Served models: MODEL_DIGEST and MODEL_DIGESTS ------------------------------------------------

ALPHA = ServedModel("alpha", hashlib.sha256(b"alpha image").digest())
BETA = ServedModel("beta", hashlib.sha384(b"beta image").digest())
GAMMA = ServedModel("gamma", hashlib.sha512(b"gamma image").digest())


def extension_value(der: bytes, oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        return x509.load_der_x509_certificate(der).extensions.get_extension_for_oid(oid).value.value
    except x509.ExtensionNotFound:
        return None


def resigned(der: bytes, key, **values: bytes | None) -> bytes:
    """`der` with its model extensions replaced (None: removed), signed again by `key`: a
    certificate whose only fault is the one the test puts in its extensions."""
    oids = {"model_digest": MODEL_DIGEST_OID, "model_digests": MODEL_DIGESTS_OID}
    cert = x509.load_der_x509_certificate(der)
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    replaced = {oids[name] for name in values}
    for extension in cert.extensions:
        if extension.oid not in replaced:
            builder = builder.add_extension(extension.value, extension.critical)
    for name, value in values.items():
        if value is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(oids[name], value), critical=False)
    return der_of(builder.sign(key, hashes.SHA256()))


def test_one_named_model_carries_model_digest_for_privasys_and_model_digests() -> None:
    der = make(model_digest=None, models=[ALPHA])
    # MODEL_DIGEST exactly as before: the raw root hash as the extnValue contents.
    assert _oid_der(MODEL_DIGEST_OID) + b"\x04\x20" + ALPHA.digest in der
    assert extension_value(der, MODEL_DIGESTS_OID) == encode_model_digests([ALPHA])
    parsed = parse_certificate(der)
    assert (parsed.model_digest, parsed.models) == (ALPHA.digest, (ALPHA,))


def test_several_models_carry_model_digests_only() -> None:
    der = make(model_digest=None, models=[GAMMA, ALPHA, BETA])
    assert extension_value(der, MODEL_DIGEST_OID) is None
    assert extension_value(der, MODEL_DIGESTS_OID) == encode_model_digests([ALPHA, BETA, GAMMA])
    parsed = parse_certificate(der)
    assert parsed.model_digest is None
    assert parsed.models == (ALPHA, BETA, GAMMA)
    assert parsed.certificate.extensions.get_extension_for_oid(MODEL_DIGESTS_OID).critical is False


def test_a_digest_without_a_name_is_the_single_model_form_of_before() -> None:
    der = make()  # model_digest=DIGEST, no name
    assert extension_value(der, MODEL_DIGESTS_OID) is None
    parsed = parse_certificate(der)
    assert (parsed.model_digest, parsed.models) == (DIGEST, (ServedModel(None, DIGEST),))


def test_no_model_means_neither_extension() -> None:
    parsed = parse_certificate(make(model_digest=None, models=[]))
    assert (parsed.model_digest, parsed.models) == (None, ())
    assert extension_value(parsed.der, MODEL_DIGESTS_OID) is None


def test_the_builder_takes_one_form_of_the_models_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        make(model_digest=DIGEST, models=[ALPHA])


def test_a_hand_built_certificate_with_a_digest_serves_that_unnamed_model() -> None:
    parsed = parse_certificate(make())
    rebuilt = RatlsCertificate(
        certificate=parsed.certificate, der=parsed.der, fingerprint=parsed.fingerprint,
        spki=parsed.spki, quote=parsed.quote, model_digest=DIGEST, not_before=parsed.not_before,
        not_after=parsed.not_after, dns_names=parsed.dns_names, ip_addresses=parsed.ip_addresses,
    )
    assert rebuilt.models == (ServedModel(None, DIGEST),)


def _one() -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return make(key, model_digest=None, models=[ALPHA]), key


def _three() -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return make(key, model_digest=None, models=[ALPHA, BETA, GAMMA]), key


def _entries(*pairs: tuple[str, bytes]) -> bytes:
    return sequence(*(sequence(tlv(0x0C, n.encode()), octet_string(d)) for n, d in pairs))


@pytest.mark.parametrize(
    ("issued", "values", "check"),
    [
        (_one, {"model_digest": BETA.digest}, "model_digests.agreement"),
        (_three, {"model_digest": ALPHA.digest}, "model_digests.agreement"),
        (_one, {"model_digest": None}, "model_digest_extension"),
        (_one, {"model_digest": bytes(19)}, "model_digest_length"),
        (_three, {"model_digests": _entries(("b", bytes(32)), ("a", bytes(32)))},
         "model_digests.order"),
        (_three, {"model_digests": _entries(("a", bytes(32)), ("a", bytes(32)))},
         "model_digests.duplicate_name"),
        (_three, {"model_digests": _entries(*((f"m{i:02d}", bytes(32)) for i in range(17)))},
         "model_digests.count"),
        (_three, {"model_digests": _entries(("a", bytes(32)), ("b", bytes(66)))},
         "model_digest_length"),
        (_three, {"model_digests": encode_model_digests([ALPHA, BETA]) + b"\x05\x00"},
         "model_digests.trailing_bytes"),
        (_three, {"model_digests": bytes(32)}, "model_digests.sequence"),  # raw, as MODEL_DIGEST
    ],
    ids=["disagreeing_digest", "model_digest_with_several", "model_digest_missing",
         "model_digest_size", "unsorted", "duplicate_name", "too_many", "bad_digest_size",
         "trailing_bytes", "raw_digest"],
)
def test_inconsistent_or_malformed_model_extensions_are_refused(issued, values, check) -> None:
    der, key = issued()
    parse_certificate(der)  # the issued certificate itself is fine
    with pytest.raises(CertificateFormatError) as err:
        parse_certificate(resigned(der, key, **values))
    assert err.value.check == check


@given(
    st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=16),
        st.binary(min_size=20, max_size=64),
        max_size=16,
    )
)
def test_any_valid_set_of_models_round_trips_through_the_certificate(models) -> None:
    served = [ServedModel(name, digest) for name, digest in models.items()]
    parsed = parse_certificate(make(KEY, model_digest=None, models=served))
    assert parsed.models == tuple(sorted(served, key=lambda m: m.name or ""))
    assert parsed.model_digest == (served[0].digest if len(served) == 1 else None)
