"""Every single-byte change of a quote is refused by parse or verify, with a typed error.

Exhaustive over every offset of `dcapqvl_tdx_quote_v4` (two changes per offset), sampled over
every region of the other 25 quotes. Quotes whose own verdict is already an error at the last
step (TCB level) must fail earlier once changed; the one quote with no usable collateral is
checked against its own signatures and chain instead.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections import defaultdict

import pytest
from attest_vectors import (
    BASE_BUNDLE,
    BASE_QUOTE,
    EVALUATED_ROWS,
    QUOTE_NAMES,
    TRAILING_DATA_QUOTE,
    at,
    bundle,
    quote_bytes,
)
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attest import errors
from attest.quote import Quote, parse_quote
from attest.roots import intel_sgx_root_ca
from attest.verify import DcapVerifier

VERIFIER = DcapVerifier()


def regions(quote: Quote, raw: bytes) -> dict[str, range]:
    """Named byte ranges of a quote (absolute offsets)."""
    signed = len(quote.signed_bytes)
    sig = signed + 4
    cert = sig + 128 + 6
    auth = cert + 384 + 64
    inner = auth + 2 + len(quote.certification_data.qe_auth_data)
    chain_end = len(raw) - len(quote.padding)
    return {
        "header": range(48),
        "body": range(48, signed),
        "signature_data_length": range(signed, sig),
        "signature": range(sig, sig + 64),
        "attestation_key": range(sig + 64, sig + 128),
        "certification_data_header": range(sig + 128, cert),
        "qe_report": range(cert, cert + 384),
        "qe_report_signature": range(cert + 384, auth),
        "qe_auth_data": range(auth, inner),
        "pck_cert_chain": range(inner, chain_end),
        "padding": range(chain_end, len(raw)),
    }


# The error classes each region may produce (a subset check: the point is *which stage* stops it).
EXPECTED = {
    "header": (errors.FormatError, errors.SignatureError, errors.QeIdentityError),
    "body": (errors.FormatError, errors.SignatureError),  # v5 descriptor is in the body range
    "signature_data_length": (errors.FormatError,),
    "signature": (errors.SignatureError,),
    "attestation_key": (errors.KeyBindingError,),
    "certification_data_header": (errors.FormatError,),
    "qe_report": (errors.SignatureError,),
    "qe_report_signature": (errors.SignatureError,),
    "qe_auth_data": (errors.FormatError, errors.KeyBindingError),
    "pck_cert_chain": (errors.FormatError, errors.CertificateError),
    "padding": (errors.FormatError,),
}


def changed(raw: bytes, offset: int, mask: int) -> bytes:
    out = bytearray(raw)
    out[offset] ^= mask
    return bytes(out)


def reference_row(name: str) -> dict | None:
    """A pair whose verdict is a pass or a late (TCB level) failure: changes must fail earlier."""
    for row in EVALUATED_ROWS:
        reference = row["independent_intel_algorithm_reimpl"]
        if row["quote"] == name and (
            "status" in reference or reference["error"].startswith("TCB level not supported")
        ):
            return row
    return None


@pytest.mark.slow
def test_every_offset_of_the_base_quote() -> None:
    raw = quote_bytes(BASE_QUOTE)
    collateral, now = bundle(BASE_BUNDLE), at(reference_row(BASE_QUOTE)["now_unix"])
    VERIFIER.verify(raw, collateral, now=now)  # control
    seen: dict[str, set[type]] = defaultdict(set)
    for region, offsets in regions(parse_quote(raw), raw).items():
        for offset in offsets:
            for mask in (1 << (offset % 8), 0xFF):
                with pytest.raises(errors.AttestError) as info:
                    VERIFIER.verify(changed(raw, offset, mask), collateral, now=now)
                seen[region].add(type(info.value))
                assert isinstance(info.value, EXPECTED[region]), (region, offset, mask, info.value)
    assert seen["body"] == {errors.SignatureError}
    assert (
        errors.CertificateError in seen["pck_cert_chain"]
        and errors.FormatError in seen["pck_cert_chain"]
    )


def sampled_offsets(quote: Quote, raw: bytes, seed: str, per_region: int = 12) -> list[int]:
    rng = random.Random(seed)
    offsets: list[int] = []
    for name, offsets_in_region in regions(quote, raw).items():
        if (
            name == "padding"
            and len(quote.padding)
            and quote.padding.count(0) != len(quote.padding)
        ):
            continue  # SPR_E4's appended bytes are unsigned by design (unsafe_allow_trailing_data)
        population = list(offsets_in_region)
        offsets += rng.sample(population, min(per_region, len(population)))
    return offsets


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in QUOTE_NAMES if n != BASE_QUOTE])
def test_sampled_offsets_of_every_other_quote(name: str) -> None:
    raw = quote_bytes(name)
    unsafe = name == TRAILING_DATA_QUOTE
    quote = parse_quote(raw, unsafe_allow_trailing_data=unsafe)
    row = reference_row(name)
    offsets = sampled_offsets(quote, raw, seed=name)
    if row is None:
        return _check_against_evidence_only(name, raw, offsets)
    collateral, now = bundle(row["bundle"]), at(row["now_unix"])
    late_failure = "error" in row["independent_intel_algorithm_reimpl"]
    for offset in offsets:
        for mask in (1 << (offset % 8), 0xFF):
            with pytest.raises(errors.AttestError) as info:
                mutated = parse_quote(changed(raw, offset, mask), unsafe_allow_trailing_data=unsafe)
                VERIFIER.verify(mutated, collateral, now=now)
            if late_failure:
                assert not isinstance(info.value, errors.TcbLevelError), (offset, info.value)
    return None


def _check_against_evidence_only(name: str, raw: bytes, offsets: list[int]) -> None:
    """No collateral window covers this quote's PCK certificate: check parse, chain and
    signatures directly (a test oracle independent of DcapVerifier)."""
    assert name == "dstack_verifier_tdx-lite-getquote_v4.bin"
    assert evidence_intact(parse_quote(raw))
    for offset in offsets:
        for mask in (1 << (offset % 8), 0xFF):
            try:
                mutated = parse_quote(changed(raw, offset, mask))
            except errors.FormatError:
                continue
            assert not evidence_intact(mutated), offset


def evidence_intact(quote: Quote) -> bool:
    root = intel_sgx_root_ca()
    try:
        leaf, ca, _embedded_root = (x509.load_der_x509_certificate(d) for d in quote.pck_cert_chain)
        if quote.pck_cert_chain[2] != root.der:
            return False
        ca.verify_directly_issued_by(root.certificate)
        leaf.verify_directly_issued_by(ca)
        qe = quote.certification_data
        _raw_verify(leaf.public_key(), qe.qe_report_signature, qe.qe_report.to_bytes())
        bound = hashlib.sha256(quote.attestation_key + qe.qe_auth_data).digest() + bytes(32)
        if qe.qe_report.report_data != bound:
            return False
        key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + quote.attestation_key
        )
        _raw_verify(key, quote.signature, quote.signed_bytes)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _raw_verify(key, signature: bytes, data: bytes) -> None:
    r, s = struct.unpack(">32s32s", signature)
    key.verify(
        encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big")),
        data,
        ec.ECDSA(hashes.SHA256()),
    )
