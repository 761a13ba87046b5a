"""The simulated authority: generated chain, SGX extension, persistence and reloading."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.der import TAG_INTEGER, TAG_OID, decode_integer, decode_oid, single
from attest.errors import AuthorityStoreError
from attest.pck import SGX_EXTENSION_OID, pck_extension_of
from attest.simulated import SimulatedAuthority, SimulatedPlatform
from attest.simulated.der_writer import integer, oid

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
KEY_FILES = [
    "attestation.key.pem",
    "pck-platform-ca.key.pem",
    "pck.key.pem",
    "root-ca.key.pem",
    "tcb-signing.key.pem",
]


@pytest.fixture
def authority(tmp_path: Path) -> SimulatedAuthority:
    return SimulatedAuthority.create(tmp_path / "authority", now=NOW)


def all_certificates(authority: SimulatedAuthority) -> list[x509.Certificate]:
    return [*authority.pck_chain, authority.certificates.tcb_signing]


def test_every_certificate_says_simulated_and_never_intel(authority):
    for certificate in all_certificates(authority):
        for name in (certificate.subject, certificate.issuer):
            text = name.rfc4514_string()
            assert "SIMULATED" in text
            assert "intel" not in text.lower()


def test_chain_links_root_platform_ca_leaf_and_tcb_signing(authority):
    leaf, platform_ca, root = authority.pck_chain
    leaf.verify_directly_issued_by(platform_ca)
    platform_ca.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    authority.certificates.tcb_signing.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert platform_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for certificate in all_certificates(authority):
        assert certificate.not_valid_before_utc <= NOW < certificate.not_valid_after_utc


def test_pck_leaf_carries_the_platform_in_its_sgx_extension(authority):
    platform = authority.platform
    parsed = pck_extension_of(authority.certificates.pck)
    assert parsed.ppid == platform.ppid
    assert parsed.fmspc == platform.fmspc
    assert parsed.pce_id == platform.pce_id
    assert parsed.tcb.sgx_tcb_components == platform.sgx_tcb_components
    assert parsed.tcb.pce_svn == platform.pce_svn
    assert parsed.tcb.cpu_svn == platform.cpu_svn
    assert parsed.sgx_type == platform.sgx_type
    assert parsed.platform_instance_id == platform.platform_instance_id
    assert parsed.configuration.dynamic_platform is platform.dynamic_platform
    ext = authority.certificates.pck.extensions.get_extension_for_oid(
        x509.ObjectIdentifier(SGX_EXTENSION_OID)
    )
    assert not ext.critical


def test_extension_writer_reproduces_a_real_intel_pck_extension_byte_for_byte(vectors_dir):
    quote = (vectors_dir / "tdx" / "quotes" / "dcapqvl_tdx_quote_v4.bin").read_bytes()
    leaf_pem = quote[quote.index(b"-----BEGIN CERTIFICATE-----") :]
    leaf = x509.load_pem_x509_certificate(
        leaf_pem[: leaf_pem.index(b"-----END CERTIFICATE-----") + 25]
    )
    real = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    # The values docs/tdx-quotes.md §5 lists for this certificate.
    platform = SimulatedPlatform(
        ppid=bytes.fromhex("811dca2a26b952e85bb6448b097ba4fd"),
        sgx_tcb_components=(3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0),
        pce_svn=11,
        cpu_svn=bytes.fromhex("03030202040100050000000000000000"),
        pce_id=bytes(2),
        fmspc=bytes.fromhex("b0c06f000000"),
        sgx_type=1,
        platform_instance_id=bytes.fromhex("07828474603e7019dc930775ffe8cdd2"),
        dynamic_platform=True,
        cached_keys=True,
        smt_enabled=True,
    )
    assert platform.sgx_extension() == real.value


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**70), 2**70))
def test_der_integers_read_back(value):
    assert decode_integer(single(integer(value), TAG_INTEGER, "n"), "n") == value


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 2**40), min_size=1, max_size=8), st.integers(0, 2), st.integers(0, 39)
)
def test_der_oids_read_back(tail, first, second):
    dotted = ".".join(map(str, [first, second, *tail]))
    assert decode_oid(single(oid(dotted), TAG_OID, "oid"), "oid") == dotted


def test_directory_layout_and_permissions(authority):
    directory = authority.directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted(
        [
            "authority.json",
            "pck-platform-ca.pem",
            "pck.pem",
            "root-ca.pem",
            "tcb-signing.pem",
            *KEY_FILES,
        ]
    )
    for name in KEY_FILES:
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    manifest = json.loads((directory / "authority.json").read_text())
    assert manifest["root_sha256"] == authority.root_sha256
    assert x509.load_pem_x509_certificate((directory / "root-ca.pem").read_bytes()) == (
        authority.root_certificate
    )


def test_reload_gives_the_same_root_keys_and_platform(authority):
    again = SimulatedAuthority.load(authority.directory)
    assert again.root_der == authority.root_der
    assert again.platform == authority.platform
    for name in ("root", "pck_platform_ca", "pck", "tcb_signing", "attestation"):
        mine, theirs = getattr(authority.keys, name), getattr(again.keys, name)
        assert mine.private_numbers() == theirs.private_numbers()


def test_load_or_create_creates_once_then_keeps_the_root(tmp_path):
    first = SimulatedAuthority.load_or_create(tmp_path / "a", now=NOW)
    second = SimulatedAuthority.load_or_create(tmp_path / "a", now=NOW + dt.timedelta(days=9))
    assert second.root_der == first.root_der


def test_custom_platform_persists(tmp_path):
    platform = SimulatedPlatform(fmspc=bytes.fromhex("112233445566"), qe_isv_svn=7)
    created = SimulatedAuthority.create(tmp_path / "a", now=NOW, platform=platform)
    assert SimulatedAuthority.load(tmp_path / "a").platform == platform == created.platform
    with pytest.raises(AuthorityStoreError, match="other platform parameters"):
        SimulatedAuthority.load_or_create(tmp_path / "a", now=NOW, platform=SimulatedPlatform())


def test_create_refuses_a_non_empty_directory(authority):
    before = authority.root_der
    with pytest.raises(AuthorityStoreError, match="not empty"):
        SimulatedAuthority.create(authority.directory, now=NOW)
    assert SimulatedAuthority.load(authority.directory).root_der == before


def test_load_refuses_a_directory_without_manifest(tmp_path):
    with pytest.raises(AuthorityStoreError) as caught:
        SimulatedAuthority.load(tmp_path)
    assert caught.value.check == "authority manifest"


def test_load_refuses_a_key_readable_by_others(authority):
    (authority.directory / "pck.key.pem").chmod(0o644)
    with pytest.raises(AuthorityStoreError) as caught:
        SimulatedAuthority.load(authority.directory)
    assert caught.value.check == "key file permissions"
    assert (caught.value.expected, caught.value.actual) == ("0600", "0o644")


def test_load_refuses_a_certificate_from_another_authority(authority, tmp_path):
    other = SimulatedAuthority.create(tmp_path / "other", now=NOW)
    (authority.directory / "pck-platform-ca.pem").write_bytes(
        other.certificates.pck_platform_ca.public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(AuthorityStoreError, match="does not certify"):
        SimulatedAuthority.load(authority.directory)


def test_load_refuses_a_replaced_root_and_key_pair(authority, tmp_path):
    other = SimulatedAuthority.create(tmp_path / "other", now=NOW)
    for name in ("root-ca.pem", "root-ca.key.pem"):
        (authority.directory / name).write_bytes((other.directory / name).read_bytes())
    with pytest.raises(AuthorityStoreError) as caught:
        SimulatedAuthority.load(authority.directory)
    assert caught.value.check == "certificate chain"


def test_load_refuses_a_manifest_that_disagrees_with_the_pck_certificate(authority):
    path = authority.directory / "authority.json"
    manifest = json.loads(path.read_text())
    manifest["platform"]["pce_svn"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(AuthorityStoreError) as caught:
        SimulatedAuthority.load(authority.directory)
    assert caught.value.check == "pck sgx extension"


@pytest.mark.parametrize(
    ("field", "value"), [("fmspc", "zz"), ("fmspc", "00"), ("unknown", 1), ("pce_svn", -1)]
)
def test_load_refuses_malformed_platform_parameters(authority, field, value):
    path = authority.directory / "authority.json"
    manifest = json.loads(path.read_text())
    manifest["platform"][field] = value
    path.write_text(json.dumps(manifest))
    with pytest.raises(AuthorityStoreError) as caught:
        SimulatedAuthority.load(authority.directory)
    assert caught.value.check == "authority platform"


def test_load_refuses_a_malformed_manifest(authority):
    (authority.directory / "authority.json").write_text('{"format": 1}')
    with pytest.raises(AuthorityStoreError, match="malformed"):
        SimulatedAuthority.load(authority.directory)


def test_time_must_be_timezone_aware(tmp_path):
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulatedAuthority.create(tmp_path / "a", now=dt.datetime(2026, 1, 1))
