"""Structurally real v4 quotes from the simulated authority, built with `attest.quote`."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from attest.quote import (
    ATT_KEY_TYPE_ECDSA_P256,
    INTEL_QE_VENDOR_ID,
    QUOTE_VERSION_4,
    TEE_TYPE_TDX,
    EnclaveReport,
    PckCertChain,
    QeReportCertificationData,
    Quote,
    QuoteHeader,
    TdReport,
)
from attest.simulated.authority import SimulatedAuthority
from attest.simulated.pki import raw_public_key, raw_signature
from attest.simulated.platform import SimulatedTd

# The header's user data: 16 bytes of QE/platform identifier, then 4 zero bytes. Here it says
# what the quote is, for anyone looking at a hex dump.
USER_DATA = b"SIMULATED TDX QE" + bytes(4)
# Intel's quoting enclaves use 32 bytes of QE authentication data; so do we.
QE_AUTH_DATA = bytes(range(32))


def build_quote(
    authority: SimulatedAuthority,
    td: SimulatedTd,
    rtmrs: Sequence[bytes],
    report_data: bytes,
) -> bytes:
    """A v4 quote for `td` with `rtmrs` and `report_data`, signed like a real one:

    1. the TD report body carries the platform's TEE_TCB_SVN and MRSEAM and the TD's measurements;
    2. the QE report's REPORTDATA is SHA-256(attestation key || QE auth data) || 0^32;
    3. the PCK key signs the QE report;
    4. the attestation key signs header || body;
    5. certification data type 6 wraps the QE report and the PCK chain (type 5, PEM).
    """
    platform = authority.platform
    attestation_key = raw_public_key(authority.keys.attestation)
    header = QuoteHeader(
        version=QUOTE_VERSION_4,
        att_key_type=ATT_KEY_TYPE_ECDSA_P256,
        tee_type=TEE_TYPE_TDX,
        reserved=bytes(4),
        qe_vendor_id=INTEL_QE_VENDOR_ID,
        user_data=USER_DATA,
    )
    # 1.
    body = TdReport(
        tee_tcb_svn=platform.tee_tcb_svn,
        mr_seam=platform.mr_seam,
        mr_signer_seam=bytes(48),
        seam_attributes=bytes(8),
        td_attributes=td.td_attributes.to_bytes(8, "little"),
        xfam=td.xfam.to_bytes(8, "little"),
        mr_td=td.mr_td,
        mr_config_id=td.mr_config_id,
        mr_owner=td.mr_owner,
        mr_owner_config=td.mr_owner_config,
        rtmr=tuple(bytes(r) for r in rtmrs),  # type: ignore[arg-type]
        report_data=bytes(report_data),
    )
    # 2.
    qe_report = EnclaveReport(
        cpu_svn=platform.qe_cpu_svn,
        misc_select=0,
        reserved1=bytes(12),
        isv_ext_prod_id=bytes(16),
        attributes=platform.qe_attributes,
        mr_enclave=platform.qe_mr_enclave,
        reserved2=bytes(32),
        mr_signer=platform.qe_mr_signer,
        reserved3=bytes(32),
        config_id=bytes(64),
        isv_prod_id=platform.qe_isv_prod_id,
        isv_svn=platform.qe_isv_svn,
        config_svn=0,
        reserved4=bytes(42),
        isv_family_id=bytes(16),
        report_data=hashlib.sha256(attestation_key + QE_AUTH_DATA).digest() + bytes(32),
    )
    # 3. and 5.
    certification_data = QeReportCertificationData(
        qe_report=qe_report,
        qe_report_signature=raw_signature(authority.keys.pck, qe_report.to_bytes()),
        qe_auth_data=QE_AUTH_DATA,
        pck_cert_chain=PckCertChain(authority.pck_chain_der),
    )
    unsigned = Quote(
        header=header,
        body=body,
        signature=bytes(64),
        attestation_key=attestation_key,
        certification_data=certification_data,
    )
    # 4.
    signature = raw_signature(authority.keys.attestation, unsigned.signed_bytes)
    return Quote(
        header=header,
        body=body,
        signature=signature,
        attestation_key=attestation_key,
        certification_data=certification_data,
    ).to_bytes()
