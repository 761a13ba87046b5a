"""Collateral for simulated quotes: TCB info, QE identity, CRLs and issuer chains, signed by the
simulated authority exactly as Intel's PCS signs the real ones (ECDSA P-256 over the exact JSON
text of `tcbInfo` / `enclaveIdentity`, r || s in hex)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.collateral import Collateral
from attest.collateral_documents import TcbStatus
from attest.collateral_load import collateral_from_bundle_json
from attest.simulated.authority import SimulatedAuthority, iso_time
from attest.simulated.pki import raw_signature

DEFAULT_VALIDITY = dt.timedelta(days=30)
# Issue a little before `now`, as the PCS does, so that `now` sits inside every window.
ISSUED_BEFORE_NOW = dt.timedelta(hours=1)
QE_IDENTITY_ATTRIBUTES_MASK = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")
QE_IDENTITY_MISCSELECT_MASK = "FFFFFFFF"


@dataclass(frozen=True)
class SimulatedCollateral:
    """The parts of a collateral bundle, as the PCS would serve them."""

    tcb_info: str
    tcb_info_signature: bytes
    qe_identity: str
    qe_identity_signature: bytes
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    qe_identity_issuer_chain: str
    pck_crl_issuer_chain: str
    issue_date: dt.datetime
    next_update: dt.datetime

    def to_bundle_json(self) -> str:
        """dcap-qvl's QuoteCollateralV3 JSON (byte fields in hex), the bundle format of the
        vectors; `attest.collateral_load` loads it."""
        return json.dumps(
            {
                "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
                "root_ca_crl": self.root_ca_crl.hex(),
                "pck_crl": self.pck_crl.hex(),
                "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
                "tcb_info": self.tcb_info,
                "tcb_info_signature": self.tcb_info_signature.hex(),
                "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
                "qe_identity": self.qe_identity,
                "qe_identity_signature": self.qe_identity_signature.hex(),
            },
            indent=2,
        )

    def to_collateral(self) -> Collateral:
        """The `attest.collateral` model that `attest.verify` takes."""
        return collateral_from_bundle_json(self.to_bundle_json())

    def tcb_info_response(self) -> str:
        """The PCS response body for the TCB info: `{"tcbInfo":...,"signature":"..."}`."""
        return f'{{"tcbInfo":{self.tcb_info},"signature":"{self.tcb_info_signature.hex()}"}}'

    def qe_identity_response(self) -> str:
        return (
            f'{{"enclaveIdentity":{self.qe_identity},'
            f'"signature":"{self.qe_identity_signature.hex()}"}}'
        )


def simulated_collateral(
    authority: SimulatedAuthority,
    *,
    now: dt.datetime,
    validity: dt.timedelta = DEFAULT_VALIDITY,
    tcb_status: TcbStatus | str = TcbStatus.UP_TO_DATE,
    advisory_ids: Sequence[str] = (),
    revoke_pck: bool = False,
) -> SimulatedCollateral:
    """Collateral valid from an hour before `now` for `validity`, grading the authority's
    platform TCB as `tcb_status` (with `advisory_ids`); `revoke_pck` lists the PCK leaf on the
    PCK CRL."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    tcb_status = TcbStatus(tcb_status)
    issue = now.astimezone(dt.UTC).replace(microsecond=0) - ISSUED_BEFORE_NOW
    next_update = issue + validity
    keys, certificates = authority.keys, authority.certificates

    tcb_info = _compact(_tcb_info(authority, issue, next_update, tcb_status, advisory_ids))
    qe_identity = _compact(_qe_identity(authority, issue, next_update))
    revoked = [certificates.pck] if revoke_pck else []
    return SimulatedCollateral(
        tcb_info=tcb_info,
        tcb_info_signature=raw_signature(keys.tcb_signing, tcb_info.encode()),
        qe_identity=qe_identity,
        qe_identity_signature=raw_signature(keys.tcb_signing, qe_identity.encode()),
        root_ca_crl=_crl(certificates.root, keys.root, issue, next_update, []),
        pck_crl=_crl(
            certificates.pck_platform_ca, keys.pck_platform_ca, issue, next_update, revoked
        ),
        tcb_info_issuer_chain=_pem_chain(authority.tcb_signing_chain),
        qe_identity_issuer_chain=_pem_chain(authority.tcb_signing_chain),
        pck_crl_issuer_chain=_pem_chain((certificates.pck_platform_ca, certificates.root)),
        issue_date=issue,
        next_update=next_update,
    )


def _compact(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))


def _tcb_info(
    authority: SimulatedAuthority,
    issue: dt.datetime,
    next_update: dt.datetime,
    tcb_status: TcbStatus,
    advisory_ids: Sequence[str],
) -> dict[str, Any]:
    platform = authority.platform
    zero_signer = "00" * 48
    level: dict[str, Any] = {
        "tcb": {
            "sgxtcbcomponents": [{"svn": svn} for svn in platform.sgx_tcb_components],
            "pcesvn": platform.pce_svn,
            "tdxtcbcomponents": [{"svn": svn} for svn in platform.tee_tcb_svn],
        },
        "tcbDate": platform.tcb_date,
        "tcbStatus": tcb_status.value,
    }
    if advisory_ids:
        level["advisoryIDs"] = list(advisory_ids)
    return {
        "id": "TDX",
        "version": 3,
        "issueDate": iso_time(issue),
        "nextUpdate": iso_time(next_update),
        "fmspc": platform.fmspc.hex(),
        "pceId": platform.pce_id.hex(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": platform.tcb_evaluation_data_number,
        "tdxModule": {
            "mrsigner": zero_signer,
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        },
        "tdxModuleIdentities": [
            {
                "id": f"TDX_{platform.tdx_module_major:02X}",
                "mrsigner": zero_signer,
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
                "tcbLevels": [
                    {
                        "tcb": {"isvsvn": platform.tee_tcb_svn[0]},
                        "tcbDate": platform.tcb_date,
                        "tcbStatus": "UpToDate",
                    }
                ],
            }
        ],
        "tcbLevels": [level],
    }


def _qe_identity(
    authority: SimulatedAuthority, issue: dt.datetime, next_update: dt.datetime
) -> dict[str, Any]:
    platform = authority.platform
    attributes = bytes(
        a & m for a, m in zip(platform.qe_attributes, QE_IDENTITY_ATTRIBUTES_MASK, strict=True)
    )
    return {
        "id": "TD_QE",
        "version": 2,
        "issueDate": iso_time(issue),
        "nextUpdate": iso_time(next_update),
        "tcbEvaluationDataNumber": platform.tcb_evaluation_data_number,
        "miscselect": "00000000",
        "miscselectMask": QE_IDENTITY_MISCSELECT_MASK,
        "attributes": attributes.hex().upper(),
        "attributesMask": QE_IDENTITY_ATTRIBUTES_MASK.hex().upper(),
        "mrsigner": platform.qe_mr_signer.hex().upper(),
        "isvprodid": platform.qe_isv_prod_id,
        "tcbLevels": [
            {
                "tcb": {"isvsvn": platform.qe_isv_svn},
                "tcbDate": platform.tcb_date,
                "tcbStatus": "UpToDate",
            }
        ],
    }


def _crl(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    this_update: dt.datetime,
    next_update: dt.datetime,
    revoked: Sequence[x509.Certificate],
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for certificate in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(certificate.serial_number)
            .revocation_date(this_update)
            .build()
        )
    crl = builder.sign(issuer_key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


def _pem_chain(certificates: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)
