"""The collateral types: signed documents keep their exact text, CRLs and chains parse strictly,
and a PCK certificate names the CRL that covers it."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime

import pytest
from attest_vectors import bundle, bundle_path, quote_bytes
from cryptography import x509

from attest.collateral import (
    CertificateChain,
    Collateral,
    RevocationList,
    SignedQeIdentity,
    SignedTcbInfo,
    pck_ca_of,
)
from attest.errors import CollateralFormatError
from attest.quote import parse_quote


def test_signed_text_is_kept_verbatim() -> None:
    original = json.loads(bundle_path("dcapqvl_b0c06f_2025-06").read_text())
    collateral = bundle("dcapqvl_b0c06f_2025-06")
    assert collateral.tcb_info.text == original["tcb_info"]
    assert collateral.qe_identity.text == original["qe_identity"]
    # Same document, other spacing: a different signed text, so a different collateral.
    respaced = json.dumps(json.loads(original["tcb_info"]))
    assert respaced != original["tcb_info"]
    assert SignedTcbInfo(respaced, collateral.tcb_info.signature) != collateral.tcb_info


def test_pck_ca_of_the_leaf() -> None:
    quote = parse_quote(quote_bytes("dcapqvl_tdx_quote_v4.bin"))
    assert pck_ca_of(x509.load_der_x509_certificate(quote.pck_cert_chain[0])) == "platform"
    with pytest.raises(CollateralFormatError):
        pck_ca_of(x509.load_der_x509_certificate(quote.pck_cert_chain[2]))  # the root


def test_signed_documents_are_parsed_from_their_text_only() -> None:
    collateral = bundle("dcapqvl_b0c06f_2025-06")
    with pytest.raises(TypeError):
        SignedQeIdentity(
            collateral.qe_identity.text, collateral.qe_identity.signature, qe_identity=None
        )  # type: ignore[call-arg]
    assert isinstance(collateral, Collateral)
    assert collateral.tcb_info.tcb_info.issue_date == datetime(2025, 6, 19, 10, 16, 3, tzinfo=UTC)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")
@pytest.mark.filterwarnings(
    "ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning"
)
def test_every_single_byte_change_of_a_crl_and_a_certificate_is_typed() -> None:
    """cryptography reports some malformations as TypeError or InvalidVersion: loading must turn
    every one into CollateralFormatError (or load a CRL/certificate whose signature then fails)."""
    collateral = bundle("dcapqvl_b0c06f_2025-06")
    for der, load in ((collateral.pck_crl.der, RevocationList),
                      (collateral.tcb_info_issuer_chain.der[0], lambda d: CertificateChain((d,)))):
        for offset in range(len(der)):
            for mask in (0x01, 0xFF):
                changed = bytearray(der)
                changed[offset] ^= mask
                with contextlib.suppress(CollateralFormatError):
                    load(bytes(changed))


def test_a_chain_with_an_impossible_certificate_version_is_a_format_error() -> None:
    # Found by the bundle property test: cryptography raises InvalidVersion, not ValueError.
    quote = parse_quote(quote_bytes("dcapqvl_tdx_quote_v4.bin"))
    leaf = bytearray(quote.pck_cert_chain[0])
    version = leaf.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (X.509 v3)
    leaf[version + 4] = 5  # "v6"
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(leaf)) + (
        b"-----END CERTIFICATE-----\n"
    )
    with pytest.raises(CollateralFormatError) as err:
        CertificateChain.from_pem(pem, "pck_crl_issuer_chain")
    assert err.value.check == "pck_crl_issuer_chain"
