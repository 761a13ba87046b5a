"""DCAP verification on the real vector pairs (MANIFEST `verification`) and MANIFEST's negative
tests, plus signing-certificate selection, caching and trust-root handling."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pytest
from attest_vectors import (
    BASE_BUNDLE,
    BASE_QUOTE,
    EVALUATED_ROWS,
    MANIFEST,
    V5_BUNDLE,
    V5_QUOTE,
    VECTORS,
    at,
    bundle,
    quote_bytes,
    row_id,
    row_time,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from attest import errors
from attest.collateral import CertificateChain
from attest.collateral_documents import TcbStatus
from attest.quote import parse_quote
from attest.roots import INTEL_SGX_ROOT_CA_SHA256, TrustRoot, intel_sgx_root_ca
from attest.verify import DcapVerifier

# The reference's error texts (MANIFEST `independent_intel_algorithm_reimpl.error`) by our class.
REFERENCE_ERRORS = {
    "TCB level not supported": errors.TcbLevelError,
    "QE identity id is QE, not TD_QE": errors.CollateralMismatchError,
}


@pytest.fixture(scope="module")
def verifier() -> DcapVerifier:
    return DcapVerifier()


def verify_row(verifier: DcapVerifier, row: dict):
    raw = quote_bytes(row["quote"])
    quote = parse_quote(raw, unsafe_allow_trailing_data=True)  # SPR_E4's appended test bytes
    return verifier.verify(quote, bundle(row["bundle"]), now=at(row["now_unix"]))


@pytest.mark.parametrize("row", EVALUATED_ROWS, ids=row_id)
def test_verdict_and_status_match_intel_algorithm(verifier: DcapVerifier, row: dict) -> None:
    reference = row["independent_intel_algorithm_reimpl"]
    if "error" in reference:
        expected = next(
            cls for text, cls in REFERENCE_ERRORS.items() if reference["error"].startswith(text)
        )
        with pytest.raises(expected):
            verify_row(verifier, row)
        return
    result = verify_row(verifier, row)
    assert result.tcb_status.value == reference["status"]
    assert list(result.advisory_ids) == reference["advisory_ids"]
    assert result.platform_tcb_status.value == reference["platform_level"][0]
    assert (
        result.tcb.platform_level.tcb_date.strftime("%Y-%m-%dT%H:%M:%SZ")
        == reference["platform_level"][1]
    )
    if reference["module_level"] is None:
        assert result.tdx_module_tcb_status is None
    else:
        assert result.tdx_module_tcb_status.value == reference["module_level"][0]
        assert result.tcb.tdx_module_level.isv_svn == reference["module_level"][1]
    assert [result.qe_tcb_status.value, result.tcb.qe_level.isv_svn] == reference["qe_level"]
    assert result.fmspc == MANIFEST["quotes"][row["quote"]]["fmspc"]
    assert result.simulated is False
    assert result.root_sha256 == MANIFEST["root_ca"]["sha256_der"]


def test_result_carries_quote_pck_and_collateral_identity(verifier: DcapVerifier) -> None:
    result = verifier.verify(
        quote_bytes(BASE_QUOTE), bundle(BASE_BUNDLE), now=row_time(BASE_QUOTE, BASE_BUNDLE)
    )
    assert result.quote.body.mr_td.hex() == MANIFEST["quotes"][BASE_QUOTE]["mr_td"]
    assert result.pck.sgx_type.name == "SCALABLE" and result.pck.pce_id == b"\0\0"
    assert result.collateral == bundle(BASE_BUNDLE).identity
    out = result.to_dict()
    assert out["tcb_status"] == "UpToDate" and out["simulated"] is False and len(out["rtmr"]) == 4
    assert out["collateral"]["tcb_evaluation_data_number"] == 17


# --- MANIFEST negative tests --------------------------------------------------------------------

CONTEXT = MANIFEST["negative_tests_context"]
# "... (v4: REPORTDATA 568, MRTD 184, tee_type 4, ...)" -> {"REPORTDATA": 568, ...}
OFFSETS = {
    name: int(offset)
    for name, offset in (
        item.strip().rsplit(" ", 1) for item in CONTEXT.split("v4: ")[1].split(")")[0].split(",")
    )
}
NEGATIVE = {row["label"]: row for row in MANIFEST["negative_tests"]}


def negative(label_start: str) -> dict:
    row = next(r for label, r in NEGATIVE.items() if label.startswith(label_start))
    assert row["outcome"] == "ERR"
    return row


def flipped(raw: bytes, offset: int) -> bytes:
    out = bytearray(raw)
    out[offset] ^= 0x01
    return bytes(out)


BASE_NOW = row_time(BASE_QUOTE, BASE_BUNDLE)
BASE_WINDOW = next(
    b["window_ts"] for b in MANIFEST["collateral_bundles"] if b["name"] == BASE_BUNDLE
)


@pytest.mark.parametrize(
    ("label", "offset_name", "error"),
    [
        ("tamper REPORTDATA", "REPORTDATA", errors.SignatureError),
        ("tamper MRTD", "MRTD", errors.SignatureError),
        ("tamper tee_type", "tee_type", errors.FormatError),
        ("tamper quote signature", "quote sig", errors.SignatureError),
        ("tamper attestation key", "att key", errors.KeyBindingError),
        ("tamper QE report byte", "QE report", errors.SignatureError),
        ("tamper QE report signature", "QE report sig", errors.SignatureError),
    ],
)
def test_manifest_tampering(
    verifier: DcapVerifier, label: str, offset_name: str, error: type
) -> None:
    negative(label)
    raw = flipped(quote_bytes(BASE_QUOTE), OFFSETS[offset_name])
    with pytest.raises(error):
        verifier.verify(raw, bundle(BASE_BUNDLE), now=BASE_NOW)


def test_manifest_offsets_were_read() -> None:
    assert OFFSETS == {
        "REPORTDATA": 568,
        "MRTD": 184,
        "tee_type": 4,
        "quote sig": 646,
        "att key": 705,
        "QE report": 1070,
        "QE report sig": 1157,
    }


def test_manifest_v5_tampering(verifier: DcapVerifier) -> None:
    negative("tamper v5 REPORTDATA")
    now = row_time(V5_QUOTE, V5_BUNDLE)
    verifier.verify(quote_bytes(V5_QUOTE), bundle(V5_BUNDLE), now=now)
    with pytest.raises(errors.SignatureError):
        verifier.verify(flipped(quote_bytes(V5_QUOTE), 574), bundle(V5_BUNDLE), now=now)
    negative("v5 body type changed 3->2")
    raw = bytearray(quote_bytes(V5_QUOTE))
    raw[48] = 2
    with pytest.raises(errors.FormatError):
        verifier.verify(bytes(raw), bundle(V5_BUNDLE), now=now)


@pytest.mark.parametrize(
    ("label", "now"),
    [
        ("expired: now = window_end + 3600", at(BASE_WINDOW[1] + 3600)),
        ("not yet valid: now = window_start - 3600", at(BASE_WINDOW[0] - 3600)),
        ("real clock now", datetime(2026, 11, 21, tzinfo=UTC)),
    ],
)
def test_manifest_collateral_time(verifier: DcapVerifier, label: str, now: datetime) -> None:
    negative(label)
    with pytest.raises(errors.CollateralExpiredError):
        verifier.verify(quote_bytes(BASE_QUOTE), bundle(BASE_BUNDLE), now=now)


def test_window_edges_are_inclusive(verifier: DcapVerifier) -> None:
    for unix in BASE_WINDOW:
        verifier.verify(quote_bytes(BASE_QUOTE), bundle(BASE_BUNDLE), now=at(unix))
    for unix in (BASE_WINDOW[0] - 1, BASE_WINDOW[1] + 1):
        with pytest.raises(errors.CollateralExpiredError):
            verifier.verify(quote_bytes(BASE_QUOTE), bundle(BASE_BUNDLE), now=at(unix))


def test_manifest_fmspc_mismatch(verifier: DcapVerifier) -> None:
    row = negative("FMSPC mismatch")
    unix = int(re.search(r"at (\d+)", row["label"]).group(1))
    with pytest.raises(errors.CollateralMismatchError, match="FMSPC"):
        verifier.verify(
            quote_bytes("dcapqvl_near_gas-test_quote_v4.bin"),
            bundle("teekit-tcb+dcapqvl-near_b0c06f_2025-09"),
            now=at(unix),
        )


def test_manifest_pck_leaf_not_yet_valid(verifier: DcapVerifier) -> None:
    negative("near quote (20a06f")
    with pytest.raises(errors.CertificateValidityError) as info:
        verifier.verify(
            quote_bytes("dcapqvl_near_gas-test_quote_v4.bin"), bundle(BASE_BUNDLE), now=BASE_NOW
        )
    assert info.value.check == "pck_leaf.validity"


def self_made_root(name: str = "Intel SGX Root CA") -> tuple[TrustRoot, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2018, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2049, 12, 31, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(key, hashes.SHA256())
    )
    return TrustRoot(certificate.public_bytes(Encoding.DER)), key


def test_manifest_self_made_root_named_intel(verifier: DcapVerifier) -> None:
    negative('verify_with_root_ca(self-made root named "Intel SGX Root CA")')
    root, _ = self_made_root()
    impostor = DcapVerifier(root)
    assert impostor.simulated and not root.is_intel
    with pytest.raises(errors.CollateralSignatureError, match="root CA CRL"):
        impostor.verify(quote_bytes(BASE_QUOTE), bundle(BASE_BUNDLE), now=BASE_NOW)


def test_manifest_positive_control_with_explicit_intel_root() -> None:
    assert (
        NEGATIVE[next(k for k in NEGATIVE if k.startswith("positive control"))]["outcome"] == "OK"
    )
    explicit = DcapVerifier(TrustRoot.from_file(VECTORS / MANIFEST["root_ca"]["file"]))
    result = explicit.verify(quote_bytes(BASE_QUOTE), bundle(BASE_BUNDLE), now=BASE_NOW)
    assert result.simulated is False  # Intel's root passed explicitly is still Intel's


# --- trust root, signing-certificate selection, caching -----------------------------------------


def test_packaged_root_is_intel() -> None:
    root = intel_sgx_root_ca()
    assert root.sha256 == INTEL_SGX_ROOT_CA_SHA256 == MANIFEST["root_ca"]["sha256_der"]
    assert root.is_intel and DcapVerifier().simulated is False


def test_trust_root_input_errors(tmp_path) -> None:
    with pytest.raises(errors.CertificateError):
        TrustRoot(b"\x30\x00")
    pem = intel_sgx_root_ca().certificate.public_bytes(Encoding.PEM)
    with pytest.raises(errors.CertificateError, match="exactly one"):
        TrustRoot.from_pem(pem + pem)
    path = tmp_path / "root.der"
    path.write_bytes(intel_sgx_root_ca().der)
    assert TrustRoot.from_file(path).is_intel


def signing_chain(*bundle_names: str) -> CertificateChain:
    """A TCB-info issuer chain with the signing certificates of several bundles, then the root."""
    signers = [bundle(name).tcb_info_issuer_chain.der[0] for name in bundle_names]
    return CertificateChain((*signers, intel_sgx_root_ca().der))


def test_signing_certificate_valid_at_the_time_is_chosen(verifier: DcapVerifier) -> None:
    old = "gotdxguest_50806f_2023-06"  # TCB signing cert 2018-05-21..2025-05-21
    new = BASE_BUNDLE  # re-issued with the same key, 2025-05-06..2032-05-06
    base = bundle(BASE_BUNDLE)
    both = dataclasses.replace(
        base,
        tcb_info_issuer_chain=signing_chain(old, new),
        qe_identity_issuer_chain=signing_chain(old, new),
    )
    verifier.verify(quote_bytes(BASE_QUOTE), both, now=BASE_NOW)
    only_old = dataclasses.replace(base, tcb_info_issuer_chain=signing_chain(old))
    with pytest.raises(errors.CertificateValidityError, match="tcb_info_issuer_chain"):
        verifier.verify(quote_bytes(BASE_QUOTE), only_old, now=BASE_NOW)


def test_issuer_chain_must_end_in_the_root(verifier: DcapVerifier) -> None:
    base = bundle(BASE_BUNDLE)
    no_root = dataclasses.replace(
        base, qe_identity_issuer_chain=CertificateChain(base.qe_identity_issuer_chain.der[:1])
    )
    with pytest.raises(errors.CollateralSignatureError, match="trust root"):
        verifier.verify(quote_bytes(BASE_QUOTE), no_root, now=BASE_NOW)
    only_root = dataclasses.replace(
        base, tcb_info_issuer_chain=CertificateChain(base.tcb_info_issuer_chain.der[1:])
    )
    with pytest.raises(errors.CollateralSignatureError, match="no signing certificate"):
        verifier.verify(quote_bytes(BASE_QUOTE), only_root, now=BASE_NOW)


def test_swapped_signatures_are_refused(verifier: DcapVerifier) -> None:
    base = bundle(BASE_BUNDLE)
    swapped = dataclasses.replace(
        base, tcb_info=dataclasses.replace(base.tcb_info, signature=base.qe_identity.signature)
    )
    with pytest.raises(errors.CollateralSignatureError, match="TCB info"):
        verifier.verify(quote_bytes(BASE_QUOTE), swapped, now=BASE_NOW)
    other_crl = dataclasses.replace(base, root_ca_crl=bundle("gotdxguest_50806f_2023-06").pck_crl)
    with pytest.raises(errors.CollateralSignatureError, match="root CA CRL"):
        verifier.verify(quote_bytes(BASE_QUOTE), other_crl, now=BASE_NOW)


def test_pck_crl_from_another_ca_is_refused(verifier: DcapVerifier) -> None:
    mixed = dataclasses.replace(
        bundle(BASE_BUNDLE),
        pck_crl=bundle("dcapqvl_b0c06f_2024-09_processorCRL").pck_crl,
        pck_crl_issuer_chain=bundle("dcapqvl_b0c06f_2024-09_processorCRL").pck_crl_issuer_chain,
    )
    with pytest.raises(errors.CollateralMismatchError, match="PCK CRL"):
        verifier.verify(quote_bytes(BASE_QUOTE), mixed, now=BASE_NOW)


def test_cache_never_skips_time_checks() -> None:
    verifier = DcapVerifier(cache_size=2)
    collateral = bundle(BASE_BUNDLE)
    for _ in range(2):
        verifier.verify(quote_bytes(BASE_QUOTE), collateral, now=BASE_NOW)
        with pytest.raises(errors.CollateralExpiredError):
            verifier.verify(quote_bytes(BASE_QUOTE), collateral, now=BASE_NOW + timedelta(days=40))
    # Evicting and re-checking other collateral leaves verdicts unchanged.
    for row in EVALUATED_ROWS[:6]:
        with contextlib.suppress(errors.VerificationError):
            verify_row(verifier, row)
    assert (
        verifier.verify(quote_bytes(BASE_QUOTE), collateral, now=BASE_NOW).tcb_status
        is TcbStatus.UP_TO_DATE
    )


def test_naive_time_is_refused(verifier: DcapVerifier) -> None:
    with pytest.raises(ValueError, match="timezone"):
        verifier.verify(quote_bytes(BASE_QUOTE), bundle(BASE_BUNDLE), now=datetime(2025, 7, 1))


def test_foreign_quoting_enclave_vendor_is_refused(verifier: DcapVerifier) -> None:
    quote = parse_quote(quote_bytes(BASE_QUOTE))
    foreign = dataclasses.replace(
        quote, header=dataclasses.replace(quote.header, qe_vendor_id=bytes(16))
    )
    with pytest.raises(errors.QeIdentityError, match="vendor"):
        verifier.verify(foreign, bundle(BASE_BUNDLE), now=BASE_NOW)


def test_errors_name_check_expected_and_actual(verifier: DcapVerifier) -> None:
    with pytest.raises(errors.CollateralExpiredError) as info:
        verifier.verify(quote_bytes(BASE_QUOTE), bundle(BASE_BUNDLE), now=at(BASE_WINDOW[1] + 3600))
    error = info.value
    assert error.check.endswith(".validity") and error.expected and error.actual
    as_dict = error.to_dict()
    assert as_dict["stage"] == "verify" and as_dict["type"] == "CollateralExpiredError"


def test_pck_crl_must_verify_with_its_own_issuer_chain(verifier: DcapVerifier) -> None:
    base = bundle(BASE_BUNDLE)
    wrong_chain = dataclasses.replace(base, pck_crl_issuer_chain=base.tcb_info_issuer_chain)
    with pytest.raises(errors.CollateralSignatureError, match="PCK CRL"):
        verifier.verify(quote_bytes(BASE_QUOTE), wrong_chain, now=BASE_NOW)
