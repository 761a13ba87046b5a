"""Intel's TCB algorithm (attest.tcb) on real collateral with edited levels and quotes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from attest_vectors import bundle, quote_bytes

from attest import errors
from attest.collateral_documents import IdentityTcbLevel, TcbLevel, TcbStatus
from attest.pck import PckTcb
from attest.quote import parse_quote
from attest.tcb import converge, evaluate_tcb, match_platform_level

S = TcbStatus
DATE = datetime(2024, 1, 1, tzinfo=UTC)


def tee_tcb_svn(*head: int) -> bytes:
    return bytes(head) + bytes(16 - len(head))


def level(
    status: S, sgx: int = 0, pce: int = 0, tdx: tuple[int, ...] = (), advisories=()
) -> TcbLevel:
    return TcbLevel(
        (sgx,) * 16, pce, tuple(tdx) + (0,) * (16 - len(tdx)), DATE, status, tuple(advisories)
    )


def identity_level(isv_svn: int, status: S, advisories=()) -> IdentityTcbLevel:
    return IdentityTcbLevel(isv_svn, DATE, status, tuple(advisories))


PCK = PckTcb(sgx_tcb_components=(3,) * 16, pce_svn=13, cpu_svn=bytes(16))


@pytest.fixture(scope="module")
def real():
    collateral = bundle("tinfoil_90c06f_2025-12")
    body = parse_quote(quote_bytes("dstack_verifier_quote-report_v4.bin")).body
    return collateral.tcb_info.tcb_info, collateral.qe_identity.qe_identity, body


@pytest.mark.parametrize(
    ("status", "other", "merged"),
    [
        (S.UP_TO_DATE, S.UP_TO_DATE, S.UP_TO_DATE),
        (S.UP_TO_DATE, S.OUT_OF_DATE, S.OUT_OF_DATE),
        (S.SW_HARDENING_NEEDED, S.OUT_OF_DATE, S.OUT_OF_DATE),
        (S.CONFIGURATION_NEEDED, S.OUT_OF_DATE, S.OUT_OF_DATE_CONFIGURATION_NEEDED),
        (
            S.CONFIGURATION_AND_SW_HARDENING_NEEDED,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE_CONFIGURATION_NEEDED,
        ),
        (S.OUT_OF_DATE, S.OUT_OF_DATE, S.OUT_OF_DATE),
        (S.CONFIGURATION_NEEDED, S.UP_TO_DATE, S.CONFIGURATION_NEEDED),
        (S.OUT_OF_DATE_CONFIGURATION_NEEDED, S.UP_TO_DATE, S.OUT_OF_DATE_CONFIGURATION_NEEDED),
    ],
)
def test_converge(status: S, other: S, merged: S) -> None:
    assert converge(status, other) is merged


def test_module_components_are_skipped_only_for_module_major_above_zero(real) -> None:
    tcb_info = dataclasses.replace(real[0], tcb_levels=(level(S.UP_TO_DATE, 3, 13, (5, 0, 3)),))
    # Module SVN 4 < 5, but byte 0 and 1 belong to the module identity when the major is 1.
    assert match_platform_level(tcb_info, PCK, tee_tcb_svn(4, 1, 3)).tcb_status is S.UP_TO_DATE
    with pytest.raises(errors.TcbLevelError):
        match_platform_level(tcb_info, PCK, tee_tcb_svn(4, 0, 3))
    with pytest.raises(errors.TcbLevelError):
        match_platform_level(tcb_info, PCK, tee_tcb_svn(9, 1, 2))  # late microcode below


def test_first_matching_level_in_signed_order_wins(real) -> None:
    levels = (
        level(S.UP_TO_DATE, 4, 13, (0, 0, 3)),
        level(S.SW_HARDENING_NEEDED, 3, 13, (0, 0, 3)),
        level(S.OUT_OF_DATE, 0, 0),
    )
    tcb_info = dataclasses.replace(real[0], tcb_levels=levels)
    assert match_platform_level(tcb_info, PCK, tee_tcb_svn(5, 1, 3)) is levels[1]
    assert match_platform_level(tcb_info, PCK, tee_tcb_svn(5, 1, 2)) is levels[2]
    low_pce = dataclasses.replace(PCK, pce_svn=12)
    assert match_platform_level(tcb_info, low_pce, tee_tcb_svn(5, 1, 3)) is levels[2]


def test_real_dstack_quote_is_up_to_date(real) -> None:
    tcb_info, qe_identity, body = real
    evaluation = evaluate_tcb(
        tcb_info,
        qe_identity,
        PckTcb((4, 4, 2, 2, 4, 1, 0, 5) + (0,) * 8, 13, bytes(16)),
        body,
        qe_isv_svn=4,
    )
    assert evaluation.status is S.UP_TO_DATE
    assert evaluation.tdx_module_id == "TDX_01" and evaluation.tdx_module_level.isv_svn == 6


def module_identities(tcb_info, **changes):
    first = tcb_info.tdx_module_identities[1]  # TDX_01
    return dataclasses.replace(
        tcb_info, tdx_module_identities=(dataclasses.replace(first, **changes),)
    )


def body_with(body, **changes):
    return dataclasses.replace(body, **changes)


def test_module_identity_checks(real) -> None:
    tcb_info, qe_identity, body = real
    pck = PckTcb((4, 4, 2, 2, 4, 1, 0, 5) + (0,) * 8, 13, bytes(16))

    def run(info=tcb_info, quote_body=body, qe_svn=4):
        return evaluate_tcb(info, qe_identity, pck, quote_body, qe_svn)

    with pytest.raises(errors.TdxModuleError, match="identity"):
        run(quote_body=body_with(body, tee_tcb_svn=tee_tcb_svn(6, 2, 3)))  # no TDX_02
    with pytest.raises(errors.TdxModuleError, match="identity"):
        run(info=dataclasses.replace(tcb_info, tdx_module_identities=None))
    with pytest.raises(errors.TdxModuleError, match="MRSIGNERSEAM"):
        run(quote_body=body_with(body, mr_signer_seam=b"\x01" * 48))
    with pytest.raises(errors.TdxModuleError, match="SEAMATTRIBUTES"):
        run(quote_body=body_with(body, seam_attributes=b"\x01" + bytes(7)))
    with pytest.raises(errors.TcbLevelError, match="TDX module SVN"):
        run(quote_body=body_with(body, tee_tcb_svn=tee_tcb_svn(1, 1, 3)))
    assert run(info=module_identities(tcb_info, id="tdx_01")).tdx_module_id == "TDX_01"
    # Module major version 0: tdxModule applies, and its absence is an error.
    major0 = body_with(body, tee_tcb_svn=tee_tcb_svn(5, 0, 3))
    assert run(quote_body=major0).tdx_module_level is None
    with pytest.raises(errors.TdxModuleError, match="tdxModule"):
        run(info=dataclasses.replace(tcb_info, tdx_module=None), quote_body=major0)


def test_status_merge_and_advisories(real) -> None:
    tcb_info, qe_identity, body = real
    pck = PckTcb((4, 4, 2, 2, 4, 1, 0, 5) + (0,) * 8, 13, bytes(16))
    info = dataclasses.replace(
        module_identities(
            tcb_info, tcb_levels=(identity_level(0, S.OUT_OF_DATE, ["SA-2", "SA-1"]),)
        ),
        tcb_levels=(level(S.CONFIGURATION_NEEDED, 0, 0, (), ["SA-3", "SA-1"]),),
    )
    qe = dataclasses.replace(qe_identity, tcb_levels=(identity_level(0, S.UP_TO_DATE, ["SA-0"]),))
    evaluation = evaluate_tcb(info, qe, pck, body, 4)
    assert evaluation.status is S.OUT_OF_DATE_CONFIGURATION_NEEDED
    assert evaluation.advisory_ids == ("SA-0", "SA-1", "SA-2", "SA-3")
    qe_old = dataclasses.replace(
        qe_identity, tcb_levels=(identity_level(5, S.UP_TO_DATE), identity_level(0, S.OUT_OF_DATE))
    )
    plain = dataclasses.replace(
        info,
        tcb_levels=(level(S.UP_TO_DATE),),
        tdx_module_identities=tcb_info.tdx_module_identities,
    )
    assert evaluate_tcb(plain, qe_old, pck, body, 4).status is S.OUT_OF_DATE
    assert evaluate_tcb(plain, qe_old, pck, body, 5).status is S.UP_TO_DATE
    with pytest.raises(errors.TcbLevelError, match="QE ISVSVN"):
        evaluate_tcb(
            plain, dataclasses.replace(qe_old, tcb_levels=qe_old.tcb_levels[:1]), pck, body, 4
        )


@pytest.mark.parametrize("where", ["platform", "module", "qe"])
def test_revoked_anywhere_is_an_error(real, where: str) -> None:
    tcb_info, qe_identity, body = real
    pck = PckTcb((4, 4, 2, 2, 4, 1, 0, 5) + (0,) * 8, 13, bytes(16))
    info, qe = tcb_info, qe_identity
    if where == "platform":
        info = dataclasses.replace(tcb_info, tcb_levels=(level(S.REVOKED),))
    elif where == "module":
        info = module_identities(tcb_info, tcb_levels=(identity_level(0, S.REVOKED),))
    else:
        qe = dataclasses.replace(qe_identity, tcb_levels=(identity_level(0, S.REVOKED),))
    with pytest.raises(errors.TcbRevokedError):
        evaluate_tcb(info, qe, pck, body, 4)
