"""TCB status of a TDX platform, following Intel's Quote Verification Library.

Pure functions over already-verified inputs (TCB info, QE identity, the PCK certificate's TCB and
the TD report); no I/O, no time, no signatures. The steps (Intel QVL, `TcbLevelCheck.cpp`,
`TdxModuleCheck.cpp`, `QuoteVerifier.cpp`, `EnclaveReportVerifier.cpp`):

1. TDX module identity: with module major version TEE_TCB_SVN[1] > 0 the TCB info must list
   `tdxModuleIdentities` with id `TDX_%02X`; otherwise `tdxModule` applies. MRSIGNERSEAM must equal
   its mrsigner and SEAMATTRIBUTES must be zero and equal its attributes under the mask.
2. Platform level: the first of `tcbLevels` (in the signed order, highest first) where all 16
   PCK SGX component SVNs, the PCESVN and the TEE_TCB_SVN bytes are >= the level's. TEE_TCB_SVN
   comparison starts at index 2 when TEE_TCB_SVN[1] > 0: bytes 0 and 1 are the module's SVN and
   major version, which the module identity grades instead. No level => not supported (error).
3. Module level: the first module `tcbLevels` entry with isvsvn <= TEE_TCB_SVN[0] (only for
   major version > 0). No level => not supported (error).
4. QE level: the first QE identity level with isvsvn <= the QE's ISVSVN. No level => error.
5. Merge: an OutOfDate module or QE turns UpToDate/SWHardeningNeeded into OutOfDate and
   Configuration* into OutOfDateConfigurationNeeded; Revoked anywhere is an error. Advisory IDs
   are the union of the three levels'.

Not implemented: Intel's "TD relaunch advised" refinement for TD 1.5 (TEE_TCB_SVN2); such quotes
keep the stricter OutOfDate status.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from attest.collateral_documents import (
    IdentityTcbLevel,
    QeIdentity,
    TcbInfo,
    TcbLevel,
    TcbStatus,
    TdxModule,
    TdxModuleIdentity,
)
from attest.errors import TcbLevelError, TcbRevokedError, TdxModuleError
from attest.pck import PckTcb
from attest.quote import TdReport

TDX_MODULE_SVN_INDEX = 0
TDX_MODULE_MAJOR_INDEX = 1
# When the module identity grades bytes 0 and 1 of TEE_TCB_SVN, platform matching starts here.
TDX_COMPONENTS_AFTER_MODULE = 2

_CONFIGURATION_STATUSES = frozenset(
    {
        TcbStatus.CONFIGURATION_NEEDED,
        TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
    }
)
_OUT_OF_DATE_ABSORBS = frozenset({TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED})


@dataclass(frozen=True)
class TcbEvaluation:
    """The outcome of Intel's TCB algorithm: the merged status and the levels that gave it."""

    status: TcbStatus
    advisory_ids: tuple[str, ...]
    platform_level: TcbLevel
    tdx_module_id: str | None
    tdx_module_level: IdentityTcbLevel | None
    qe_level: IdentityTcbLevel


def tdx_module_major_version(body: TdReport) -> int:
    return body.tee_tcb_svn[TDX_MODULE_MAJOR_INDEX]


def check_tdx_module(
    tcb_info: TcbInfo, body: TdReport
) -> tuple[str | None, IdentityTcbLevel | None]:
    """Step 1 and 3: the module identity's id and level (None, None for major version 0)."""
    major = tdx_module_major_version(body)
    identity_id = None
    levels: tuple[IdentityTcbLevel, ...] = ()
    if major > 0:
        identity_id = f"TDX_{major:02X}"
        identities = {m.id.upper(): m for m in tcb_info.tdx_module_identities or ()}
        if identity_id not in identities:
            raise TdxModuleError(
                "TCB info lists no identity for the TDX module's major version",
                check="tcb_info.tdx_module_identities.id",
                expected=identity_id,
                actual=sorted(identities) or "none",
            )
        identity = identities[identity_id]
        module: TdxModule | TdxModuleIdentity = identity
        levels = identity.tcb_levels
    elif tcb_info.tdx_module is None:
        raise TdxModuleError(
            "TCB info has no tdxModule",
            check="tcb_info.tdx_module",
            expected="present",
            actual="absent",
        )
    else:
        module = tcb_info.tdx_module
    if body.mr_signer_seam != module.mr_signer:
        raise TdxModuleError(
            "MRSIGNERSEAM is not the TDX module signer",
            check="td_report.mr_signer_seam",
            expected=module.mr_signer,
            actual=body.mr_signer_seam,
        )
    if body.seam_attributes != bytes(len(body.seam_attributes)) or _masked(
        body.seam_attributes, module.attributes_mask
    ) != _masked(module.attributes, module.attributes_mask):
        raise TdxModuleError(
            "SEAMATTRIBUTES do not match the TDX module identity",
            check="td_report.seam_attributes",
            expected=module.attributes,
            actual=body.seam_attributes,
        )
    if identity_id is None:
        return None, None
    svn = body.tee_tcb_svn[TDX_MODULE_SVN_INDEX]
    for level in levels:
        if svn >= level.isv_svn:
            return identity_id, level
    raise TcbLevelError(
        "TDX module SVN is below every level of its identity",
        check="tcb.tdx_module_level",
        expected=f">= {levels[-1].isv_svn}",
        actual=svn,
    )


def match_platform_level(tcb_info: TcbInfo, pck_tcb: PckTcb, tee_tcb_svn: bytes) -> TcbLevel:
    """Step 2: the first TCB level the PCK certificate's TCB and TEE_TCB_SVN both reach."""
    first = TDX_COMPONENTS_AFTER_MODULE if tee_tcb_svn[TDX_MODULE_MAJOR_INDEX] > 0 else 0
    for level in tcb_info.tcb_levels:
        if (
            level.tdx_tcb_components is not None
            and all(map(operator.ge, pck_tcb.sgx_tcb_components, level.sgx_tcb_components))
            and pck_tcb.pce_svn >= level.pce_svn
            and all(map(operator.ge, tee_tcb_svn[first:], level.tdx_tcb_components[first:]))
        ):
            return level
    raise TcbLevelError(
        "TCB level not supported: no level of the TCB info matches the platform",
        check="tcb.platform_level",
        expected="a level <= the platform's TCB",
        actual=f"sgx {list(pck_tcb.sgx_tcb_components)}, pcesvn {pck_tcb.pce_svn}, "
        f"tee_tcb_svn {tee_tcb_svn.hex()}",
    )


def match_qe_level(qe_identity: QeIdentity, isv_svn: int) -> IdentityTcbLevel:
    """Step 4: the first QE identity level at or below the QE's ISVSVN."""
    for level in qe_identity.tcb_levels:
        if isv_svn >= level.isv_svn:
            return level
    raise TcbLevelError(
        "QE ISVSVN is below every level of the QE identity",
        check="tcb.qe_level",
        expected=f">= {qe_identity.tcb_levels[-1].isv_svn}",
        actual=isv_svn,
    )


def converge(status: TcbStatus, other: TcbStatus) -> TcbStatus:
    """Step 5: fold a module or QE status into the platform status (Revoked handled by caller)."""
    if other is TcbStatus.OUT_OF_DATE:
        if status in _OUT_OF_DATE_ABSORBS:
            return TcbStatus.OUT_OF_DATE
        if status in _CONFIGURATION_STATUSES:
            return TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    return status


def evaluate_tcb(
    tcb_info: TcbInfo, qe_identity: QeIdentity, pck_tcb: PckTcb, body: TdReport, qe_isv_svn: int
) -> TcbEvaluation:
    """Steps 1-5 for a TDX quote whose signatures and collateral have been verified."""
    module_id, module_level = check_tdx_module(tcb_info, body)
    platform_level = match_platform_level(tcb_info, pck_tcb, body.tee_tcb_svn)
    qe_level = match_qe_level(qe_identity, qe_isv_svn)
    for what, level in (
        ("platform", platform_level),
        ("TDX module", module_level),
        ("QE", qe_level),
    ):
        if level is not None and level.tcb_status is TcbStatus.REVOKED:
            raise TcbRevokedError(
                f"the {what} TCB level is revoked",
                check=f"tcb.{what.lower().replace(' ', '_')}_status",
                expected="not Revoked",
                actual=TcbStatus.REVOKED.value,
            )
    status = platform_level.tcb_status
    if module_level is not None:
        status = converge(status, module_level.tcb_status)
    status = converge(status, qe_level.tcb_status)
    advisories = set(platform_level.advisory_ids) | set(qe_level.advisory_ids)
    if module_level is not None:
        advisories |= set(module_level.advisory_ids)
    return TcbEvaluation(
        status=status,
        advisory_ids=tuple(sorted(advisories)),
        platform_level=platform_level,
        tdx_module_id=module_id,
        tdx_module_level=module_level,
        qe_level=qe_level,
    )


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask, strict=True))
