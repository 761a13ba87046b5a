"""Loading DCAP collateral from its two formats into `attest.collateral.Collateral`.

(a) `collateral_from_bundle_json`: the JSON bundle of dcap-qvl's `QuoteCollateralV3` (hex CRLs
    and signatures, PEM chains), as `Collateral.to_bundle_json` writes it;
(b) `collateral_from_pcs_responses`: raw Intel PCS responses (`{"tcbInfo": ..., "signature":
    ...}` bodies, URL-encoded issuer-chain header values, DER/PEM/hex CRLs), and
    `collateral_from_pcs_directory` for such responses saved as files.

Structure only (no signature is checked: that is `attest.verify`'s job); every failure is a
`CollateralFormatError` naming the field.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attest.collateral import (
    BUNDLE_KEYS,
    PCK_CA_BY_ISSUER_CN,
    CertificateChain,
    Collateral,
    RevocationList,
    SignedQeIdentity,
    SignedTcbInfo,
)
from attest.errors import CollateralFormatError
from attest.strict_json import MAX_DOCUMENT_SIZE, decode_utf8, hex_bytes, load_json, member_texts


def collateral_from_bundle_json(text: str | bytes) -> Collateral:
    """Load format (a): a dcap-qvl `QuoteCollateralV3` JSON bundle. Unknown keys are an error."""
    bundle = load_json(decode_utf8(text, "bundle"), "bundle")
    if not isinstance(bundle, dict):
        raise CollateralFormatError(
            "bundle must be a JSON object",
            check="bundle",
            expected="object",
            actual=type(bundle).__name__,
        )
    unknown = sorted(set(bundle) - set(BUNDLE_KEYS))
    missing = [key for key in BUNDLE_KEYS if key not in bundle]
    if unknown or missing:
        raise CollateralFormatError(
            "bundle keys do not match QuoteCollateralV3",
            check="bundle.keys",
            expected=list(BUNDLE_KEYS),
            actual=f"unknown {unknown}, missing {missing}",
        )
    for key in BUNDLE_KEYS:
        if not isinstance(bundle[key], str):
            raise CollateralFormatError(
                f"bundle.{key} must be a string",
                check=f"bundle.{key}",
                expected="string",
                actual=type(bundle[key]).__name__,
            )
    return Collateral(
        tcb_info=SignedTcbInfo(
            bundle["tcb_info"], hex_bytes(bundle["tcb_info_signature"], "bundle.tcb_info_signature")
        ),
        tcb_info_issuer_chain=CertificateChain.from_pem(
            bundle["tcb_info_issuer_chain"], "bundle.tcb_info_issuer_chain"
        ),
        qe_identity=SignedQeIdentity(
            bundle["qe_identity"],
            hex_bytes(bundle["qe_identity_signature"], "bundle.qe_identity_signature"),
        ),
        qe_identity_issuer_chain=CertificateChain.from_pem(
            bundle["qe_identity_issuer_chain"], "bundle.qe_identity_issuer_chain"
        ),
        pck_crl=_revocation_list(hex_bytes(bundle["pck_crl"], "bundle.pck_crl"), "bundle.pck_crl"),
        pck_crl_issuer_chain=CertificateChain.from_pem(
            bundle["pck_crl_issuer_chain"], "bundle.pck_crl_issuer_chain"
        ),
        root_ca_crl=_revocation_list(
            hex_bytes(bundle["root_ca_crl"], "bundle.root_ca_crl"), "bundle.root_ca_crl"
        ),
    )


def collateral_from_pcs_responses(
    *,
    tcb_info_body: str | bytes,
    tcb_info_issuer_chain: str | bytes,
    qe_identity_body: str | bytes,
    qe_identity_issuer_chain: str | bytes,
    pck_crl: bytes,
    pck_crl_issuer_chain: str | bytes,
    root_ca_crl: bytes,
) -> Collateral:
    """Assemble collateral from Intel PCS (or PCCS) responses, format (b).

    `*_body` are the response bodies of `/tdx/certification/v4/tcb` and `/qe/identity`;
    `*_issuer_chain` are the values of the `TCB-Info-Issuer-Chain`,
    `SGX-Enclave-Identity-Issuer-Chain` and `SGX-PCK-CRL-Issuer-Chain` headers (URL-encoded PEM,
    as PCS sends them; plain PEM is accepted too); the CRLs are DER, PEM or hex-encoded DER
    (PCS serves the root CA CRL as hex). The signed values are cut out of the bodies verbatim.
    """
    tcb_text, tcb_signature = _signed_member(tcb_info_body, "tcbInfo", "tcb_info_body")
    qe_text, qe_signature = _signed_member(qe_identity_body, "enclaveIdentity", "qe_identity_body")
    return Collateral(
        tcb_info=SignedTcbInfo(tcb_text, tcb_signature),
        tcb_info_issuer_chain=_header_chain(tcb_info_issuer_chain, "tcb_info_issuer_chain"),
        qe_identity=SignedQeIdentity(qe_text, qe_signature),
        qe_identity_issuer_chain=_header_chain(
            qe_identity_issuer_chain, "qe_identity_issuer_chain"
        ),
        pck_crl=_revocation_list(_crl_der(pck_crl, "pck_crl"), "pck_crl"),
        pck_crl_issuer_chain=_header_chain(pck_crl_issuer_chain, "pck_crl_issuer_chain"),
        root_ca_crl=_revocation_list(_crl_der(root_ca_crl, "root_ca_crl"), "root_ca_crl"),
    )


def collateral_from_pcs_directory(directory: Path, *, fmspc: str, pck_ca: str) -> Collateral:
    """Load saved PCS responses laid out as `tcb_info_<fmspc>.json` (+ `_chain.txt`),
    `qe_identity.json` (+ `_chain.txt`), `pck_crl_<pck_ca>.crl` (+ `_chain.txt`), `root_ca.crl`.
    `pck_ca` is "platform" or "processor" (see `PCK_CA_BY_ISSUER_CN`)."""
    if pck_ca not in PCK_CA_BY_ISSUER_CN.values():
        raise CollateralFormatError(
            "unknown PCK CA",
            check="pck_ca",
            expected=sorted(PCK_CA_BY_ISSUER_CN.values()),
            actual=pck_ca,
        )
    fmspc = fmspc.lower()

    def read(name: str) -> bytes:
        path = Path(directory) / name
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CollateralFormatError(
                f"cannot read {path}", check=name, actual=exc.strerror
            ) from None

    return collateral_from_pcs_responses(
        tcb_info_body=read(f"tcb_info_{fmspc}.json"),
        tcb_info_issuer_chain=read(f"tcb_info_{fmspc}_chain.txt"),
        qe_identity_body=read("qe_identity.json"),
        qe_identity_issuer_chain=read("qe_identity_chain.txt"),
        pck_crl=read(f"pck_crl_{pck_ca}.crl"),
        pck_crl_issuer_chain=read(f"pck_crl_{pck_ca}_chain.txt"),
        root_ca_crl=read("root_ca.crl"),
    )


# --- format (b) pieces ----------------------------------------------------------------------------


def _signed_member(body: str | bytes, name: str, what: str) -> tuple[str, bytes]:
    """(exact text of `name`, signature) from a PCS body `{"<name>": {...}, "signature": "hex"}`."""
    text = decode_utf8(body, what)
    if len(text) > MAX_DOCUMENT_SIZE:
        raise CollateralFormatError(
            f"{what} too large", check=what, expected=f"<= {MAX_DOCUMENT_SIZE}", actual=len(text)
        )
    members = member_texts(text, what)
    if set(members) != {name, "signature"}:
        raise CollateralFormatError(
            f"{what}: unexpected members",
            check=what,
            expected=[name, "signature"],
            actual=sorted(members),
        )
    signature = load_json(members["signature"], f"{what}.signature")
    if not isinstance(signature, str):
        raise CollateralFormatError(
            f"{what}.signature must be a hex string", check=f"{what}.signature"
        )
    return members[name], hex_bytes(signature, f"{what}.signature")


def _header_chain(value: str | bytes, what: str) -> CertificateChain:
    text = decode_utf8(value, what).strip()
    return CertificateChain.from_pem(urllib.parse.unquote(text, errors="strict"), what)


def _crl_der(data: bytes | str, what: str) -> bytes:
    """A CRL as DER, from DER, PEM or hex-encoded DER."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if raw.startswith(b"\x30"):
        return raw
    stripped = raw.strip()
    if stripped.startswith(b"-----BEGIN X509 CRL-----"):
        try:
            return x509.load_pem_x509_crl(stripped).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise CollateralFormatError(
                f"{what}: malformed PEM CRL", check=what, actual=str(exc)
            ) from None
    return hex_bytes(decode_utf8(stripped, what), what)


def _revocation_list(der: bytes, what: str) -> RevocationList:
    try:
        return RevocationList(der)
    except CollateralFormatError as exc:
        raise CollateralFormatError(f"{what}: {exc}", check=what) from None
