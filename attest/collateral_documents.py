"""What the two signed collateral documents say: TDX TCB info and QE identity, parsed strictly.

`parse_tcb_info` and `parse_qe_identity` take the decoded JSON of the signed `tcbInfo` /
`enclaveIdentity` value (see `attest.collateral.SignedTcbInfo`, which keeps the signed text) and
return frozen models with Intel's field names in snake_case. Structure only: ids, versions and
windows are checked by `attest.verify`, levels matched by `attest.tcb`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from attest.errors import CollateralFormatError
from attest.pck import FMSPC_SIZE, PCE_ID_SIZE
from attest.strict_json import (
    hex_member,
    require_object,
    typed_member,
    uint_member,
    utc_time_member,
)

TCB_INFO_ID_TDX = "TDX"
TCB_INFO_VERSION_TDX = 3
QE_IDENTITY_ID_TD_QE = "TD_QE"
QE_IDENTITY_VERSION = 2

TCB_COMPONENT_COUNT = 16


class TcbStatus(StrEnum):
    """TCB statuses as Intel's collateral spells them."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"


# Module and QE identity levels only ever carry these (Intel's VALID_MODULE_TCB_STATUSES).
IDENTITY_TCB_STATUSES = frozenset({TcbStatus.UP_TO_DATE, TcbStatus.OUT_OF_DATE, TcbStatus.REVOKED})


@dataclass(frozen=True)
class TcbLevel:
    """One platform level of the TCB info: the SVNs it requires and the status it grants."""

    sgx_tcb_components: tuple[int, ...]
    pce_svn: int
    tdx_tcb_components: tuple[int, ...] | None
    tcb_date: datetime
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class IdentityTcbLevel:
    """A TDX module or QE identity level: ISVSVN threshold and status."""

    isv_svn: int
    tcb_date: datetime
    tcb_status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModule:
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes


@dataclass(frozen=True)
class TdxModuleIdentity:
    id: str
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes
    tcb_levels: tuple[IdentityTcbLevel, ...]


@dataclass(frozen=True)
class IssuedDocument:
    """What Intel's TCB info and QE identity both state about themselves."""

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int


@dataclass(frozen=True)
class TcbInfo(IssuedDocument):
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tdx_module: TdxModule | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...] | None
    tcb_levels: tuple[TcbLevel, ...]


@dataclass(frozen=True)
class QeIdentity(IssuedDocument):
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    tcb_levels: tuple[IdentityTcbLevel, ...]


# --- TCB info -----------------------------------------------------------------------------------


def parse_tcb_info(doc: Any) -> TcbInfo:
    """The model of a decoded `tcbInfo` value."""
    path = "tcbInfo"
    obj = require_object(doc, path)
    tcb_id = typed_member(obj, "id", str, path)
    tdx_module = None
    if "tdxModule" in obj:
        tdx_module = _tdx_module(
            require_object(obj["tdxModule"], f"{path}.tdxModule"), f"{path}.tdxModule"
        )
    identities = None
    if "tdxModuleIdentities" in obj:
        identities = tuple(
            _tdx_module_identity(item, f"{path}.tdxModuleIdentities[{i}]")
            for i, item in enumerate(typed_member(obj, "tdxModuleIdentities", list, path))
        )
    levels = tuple(
        _tcb_level(item, f"{path}.tcbLevels[{i}]", tdx=tcb_id == TCB_INFO_ID_TDX)
        for i, item in enumerate(typed_member(obj, "tcbLevels", list, path))
    )
    if not levels:
        raise CollateralFormatError(
            "tcbInfo has no TCB levels", check=f"{path}.tcbLevels", expected=">= 1 level", actual=0
        )
    return TcbInfo(
        id=tcb_id,
        version=typed_member(obj, "version", int, path),
        issue_date=utc_time_member(obj, "issueDate", path),
        next_update=utc_time_member(obj, "nextUpdate", path),
        fmspc=hex_member(obj, "fmspc", path, FMSPC_SIZE),
        pce_id=hex_member(obj, "pceId", path, PCE_ID_SIZE),
        tcb_type=typed_member(obj, "tcbType", int, path),
        tcb_evaluation_data_number=typed_member(obj, "tcbEvaluationDataNumber", int, path),
        tdx_module=tdx_module,
        tdx_module_identities=identities,
        tcb_levels=levels,
    )


def _tdx_module(obj: dict[str, Any], path: str) -> TdxModule:
    return TdxModule(
        mr_signer=hex_member(obj, "mrsigner", path, 48),
        attributes=hex_member(obj, "attributes", path, 8),
        attributes_mask=hex_member(obj, "attributesMask", path, 8),
    )


def _tdx_module_identity(doc: Any, path: str) -> TdxModuleIdentity:
    obj = require_object(doc, path)
    module = _tdx_module(obj, path)
    return TdxModuleIdentity(
        id=typed_member(obj, "id", str, path),
        mr_signer=module.mr_signer,
        attributes=module.attributes,
        attributes_mask=module.attributes_mask,
        tcb_levels=_identity_levels(obj, path),
    )


def _tcb_level(doc: Any, path: str, *, tdx: bool) -> TcbLevel:
    obj = require_object(doc, path)
    tcb = require_object(typed_member(obj, "tcb", dict, path), f"{path}.tcb")
    tdx_components = None
    if tdx or "tdxtcbcomponents" in tcb:
        tdx_components = _components(tcb, "tdxtcbcomponents", f"{path}.tcb")
    return TcbLevel(
        sgx_tcb_components=_components(tcb, "sgxtcbcomponents", f"{path}.tcb"),
        pce_svn=uint_member(tcb, "pcesvn", f"{path}.tcb", 0xFFFF),
        tdx_tcb_components=tdx_components,
        tcb_date=utc_time_member(obj, "tcbDate", path),
        tcb_status=_status(obj, path, frozenset(TcbStatus)),
        advisory_ids=_advisory_ids(obj, path),
    )


def _components(tcb: dict[str, Any], key: str, path: str) -> tuple[int, ...]:
    items = typed_member(tcb, key, list, path)
    if len(items) != TCB_COMPONENT_COUNT:
        raise CollateralFormatError(
            f"{path}.{key} must list 16 components",
            check=f"{path}.{key}",
            expected=TCB_COMPONENT_COUNT,
            actual=len(items),
        )
    return tuple(
        uint_member(require_object(item, f"{path}.{key}[{i}]"), "svn", f"{path}.{key}[{i}]", 0xFF)
        for i, item in enumerate(items)
    )


# --- QE identity --------------------------------------------------------------------------------


def parse_qe_identity(doc: Any) -> QeIdentity:
    """The model of a decoded `enclaveIdentity` value."""
    path = "enclaveIdentity"
    obj = require_object(doc, path)
    return QeIdentity(
        id=typed_member(obj, "id", str, path),
        version=typed_member(obj, "version", int, path),
        issue_date=utc_time_member(obj, "issueDate", path),
        next_update=utc_time_member(obj, "nextUpdate", path),
        tcb_evaluation_data_number=typed_member(obj, "tcbEvaluationDataNumber", int, path),
        miscselect=int.from_bytes(hex_member(obj, "miscselect", path, 4), "big"),
        miscselect_mask=int.from_bytes(hex_member(obj, "miscselectMask", path, 4), "big"),
        attributes=hex_member(obj, "attributes", path, 16),
        attributes_mask=hex_member(obj, "attributesMask", path, 16),
        mr_signer=hex_member(obj, "mrsigner", path, 32),
        isv_prod_id=uint_member(obj, "isvprodid", path, 0xFFFF),
        tcb_levels=_identity_levels(obj, path),
    )


# --- shared by both documents -------------------------------------------------------------------


def _identity_levels(obj: dict[str, Any], path: str) -> tuple[IdentityTcbLevel, ...]:
    levels = []
    for i, item in enumerate(typed_member(obj, "tcbLevels", list, path)):
        level_path = f"{path}.tcbLevels[{i}]"
        level = require_object(item, level_path)
        tcb = require_object(typed_member(level, "tcb", dict, level_path), f"{level_path}.tcb")
        levels.append(
            IdentityTcbLevel(
                isv_svn=uint_member(tcb, "isvsvn", f"{level_path}.tcb", 0xFFFF),
                tcb_date=utc_time_member(level, "tcbDate", level_path),
                tcb_status=_status(level, level_path, IDENTITY_TCB_STATUSES),
                advisory_ids=_advisory_ids(level, level_path),
            )
        )
    if not levels:
        raise CollateralFormatError(
            "identity has no TCB levels", check=f"{path}.tcbLevels", expected=">= 1 level", actual=0
        )
    return tuple(levels)


def _status(obj: dict[str, Any], path: str, allowed: frozenset[TcbStatus]) -> TcbStatus:
    text = typed_member(obj, "tcbStatus", str, path)
    try:
        status = TcbStatus(text)
    except ValueError:
        status = None
    if status not in allowed:
        raise CollateralFormatError(
            f"{path}.tcbStatus is not a known status",
            check=f"{path}.tcbStatus",
            expected=sorted(s.value for s in allowed),
            actual=text,
        )
    return status


def _advisory_ids(obj: dict[str, Any], path: str) -> tuple[str, ...]:
    if "advisoryIDs" not in obj:
        return ()
    ids = typed_member(obj, "advisoryIDs", list, path)
    if not all(isinstance(i, str) for i in ids):
        raise CollateralFormatError(
            f"{path}.advisoryIDs must be strings", check=f"{path}.advisoryIDs"
        )
    return tuple(ids)
