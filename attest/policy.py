"""The validate stage: an appraisal policy over a `VerifiedQuote`, loaded from TOML or JSON.

Fail-closed rules:
- A measurement field that is absent is "not pinned", and the outcome says so for that check;
  an empty list pins to nothing and rejects every quote.
- TD attributes: a debug TD (any bit of the TUD group, bits 0-7, of which bit 0 is DEBUG),
  reserved bits, a cleared SEPT_VE_DISABLE (bit 28) and, for TD report 1.5, a non-zero
  MRSERVICETD are rejected. Each relaxation is a field whose name contains `unsafe`.
- TCB status: only `UpToDate` by default. `allowed_tcb_statuses` may add SWHardeningNeeded,
  ConfigurationNeeded and ConfigurationAndSWHardeningNeeded; OutOfDate and
  OutOfDateConfigurationNeeded only through `unsafe_allowed_tcb_statuses`; Revoked never (it is
  a verification error already). Advisory IDs must all be allowlisted (default: none) unless
  `unsafe_allow_any_advisory`.
- Unknown fields in a policy file are errors: a typo must never silently disable a check.

`validate(verified, policy)` runs every check, records each (name, expected, actual, outcome),
and raises `PolicyError` naming the first failed check (with all of them in `.checks`) or returns
a `PolicyOutcome` with the list.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, StrictBool, StrictStr
from pydantic import ValidationError as PydanticValidationError

from attest.collateral_documents import TcbStatus
from attest.errors import AttestError, PolicyError, PolicyFormatError
from attest.quote import REPORT_DATA_SIZE, TD_ATTRIBUTE_SEPT_VE_DISABLE, TdReport
from attest.verify import VerifiedQuote

# TD attribute bits (TDX module ABI; names as in Linux's asm/shared/tdx.h).
TD_ATTRIBUTES_TUD_MASK = 0xFF  # "TD under debug": DEBUG (bit 0) and debug-only features
TD_ATTRIBUTES_KNOWN = (
    TD_ATTRIBUTES_TUD_MASK
    | 1 << 16  # ICSSD
    | 1 << 27  # LASS
    | TD_ATTRIBUTE_SEPT_VE_DISABLE
    | 1 << 29  # MIGRATABLE
    | 1 << 30  # PKS
    | 1 << 31  # KL
    | 1 << 62  # TPA
    | 1 << 63  # PERFMON
)

ModelT = TypeVar("ModelT", bound=BaseModel)

MEASUREMENT_SIZE = 48
XFAM_SIZE = 8
TD_ATTRIBUTES_SIZE = 8

SAFE_TCB_STATUSES = (
    TcbStatus.UP_TO_DATE,
    TcbStatus.SW_HARDENING_NEEDED,
    TcbStatus.CONFIGURATION_NEEDED,
    TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
)
UNSAFE_TCB_STATUSES = (TcbStatus.OUT_OF_DATE, TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED)


def _hex_bytes(size: int) -> Callable[[Any], bytes]:
    def parse(value: Any) -> bytes:
        if isinstance(value, bytes) and len(value) == size:
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected a hex string of {size} bytes")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"not hex: {value[:24]!r}") from None
        if len(raw) != size:
            raise ValueError(f"expected {size} bytes ({2 * size} hex digits), got {len(raw)}")
        return raw

    return parse


def _to_hex(value: bytes) -> str:
    return value.hex()


Measurement = Annotated[
    bytes,
    BeforeValidator(_hex_bytes(MEASUREMENT_SIZE)),
    PlainSerializer(_to_hex, return_type=str),
]
Xfam = Annotated[
    bytes, BeforeValidator(_hex_bytes(XFAM_SIZE)), PlainSerializer(_to_hex, return_type=str)
]
TdAttributes = Annotated[
    bytes,
    BeforeValidator(_hex_bytes(TD_ATTRIBUTES_SIZE)),
    PlainSerializer(_to_hex, return_type=str),
]
ReportData = Annotated[
    bytes,
    BeforeValidator(_hex_bytes(REPORT_DATA_SIZE)),
    PlainSerializer(_to_hex, return_type=str),
]
SafeStatus = Literal[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
]
UnsafeStatus = Literal["OutOfDate", "OutOfDateConfigurationNeeded"]
if set(get_args(SafeStatus)) != {s.value for s in SAFE_TCB_STATUSES} or set(
    get_args(UnsafeStatus)
) != {s.value for s in UNSAFE_TCB_STATUSES}:
    raise RuntimeError("SafeStatus/UnsafeStatus disagree with the TCB status tuples")

# Allowlist fields of the policy, in check order.
MEASUREMENT_FIELDS = (
    "mr_td",
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "mr_config_id",
    "mr_owner",
    "mr_owner_config",
    "xfam",
    "td_attributes",
)


def _measurements(body: TdReport) -> dict[str, bytes]:
    return {
        "mr_td": body.mr_td,
        **{f"rtmr{index}": value for index, value in enumerate(body.rtmr)},
        "mr_config_id": body.mr_config_id,
        "mr_owner": body.mr_owner,
        "mr_owner_config": body.mr_owner_config,
        "xfam": body.xfam,
        "td_attributes": body.td_attributes,
    }


def _safe_statuses_only(value: Any) -> Any:
    items = value if isinstance(value, list | tuple) else ()
    unsafe = {s.value for s in UNSAFE_TCB_STATUSES} & {
        item for item in items if isinstance(item, str)
    }
    if unsafe:
        raise ValueError(f"{sorted(unsafe)} may only be listed in unsafe_allowed_tcb_statuses")
    return value


class Policy(BaseModel):
    """What a verified quote must show to be accepted. Defaults are the strict ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mr_td: tuple[Measurement, ...] | None = None
    rtmr0: tuple[Measurement, ...] | None = None
    rtmr1: tuple[Measurement, ...] | None = None
    rtmr2: tuple[Measurement, ...] | None = None
    rtmr3: tuple[Measurement, ...] | None = None
    mr_config_id: tuple[Measurement, ...] | None = None
    mr_owner: tuple[Measurement, ...] | None = None
    mr_owner_config: tuple[Measurement, ...] | None = None
    xfam: tuple[Xfam, ...] | None = None
    # The whole attribute word, pinned as the TD showed it (the rules above apply regardless).
    td_attributes: tuple[TdAttributes, ...] | None = None
    report_data: ReportData | None = None

    allowed_tcb_statuses: Annotated[
        tuple[SafeStatus, ...], BeforeValidator(_safe_statuses_only)
    ] = (TcbStatus.UP_TO_DATE.value,)
    unsafe_allowed_tcb_statuses: tuple[UnsafeStatus, ...] = ()
    allowed_advisory_ids: tuple[StrictStr, ...] = ()
    unsafe_allow_any_advisory: StrictBool = False

    unsafe_allow_debug: StrictBool = False
    unsafe_allow_reserved_td_attributes: StrictBool = False
    unsafe_allow_sept_ve: StrictBool = False
    unsafe_allow_service_td: StrictBool = False

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "policy") -> Policy:
        """Validate a mapping (parsed TOML or JSON); errors name the field."""
        return validate_mapping(cls, data, source=source, error=PolicyFormatError)

    @classmethod
    def from_toml(cls, text: str, *, source: str = "policy") -> Policy:
        return cls._from_text(text, tomllib.loads, tomllib.TOMLDecodeError, "TOML", source)

    @classmethod
    def from_json(cls, text: str, *, source: str = "policy") -> Policy:
        return cls._from_text(text, json.loads, json.JSONDecodeError, "JSON", source)

    @classmethod
    def _from_text(
        cls, text: str, loads: Any, error: type[Exception], kind: str, source: str
    ) -> Policy:
        try:
            data = loads(text)
        except error as exc:
            raise PolicyFormatError(f"{source}: not valid {kind}: {exc}", check=source) from None
        return cls.from_mapping(data, source=source)

    def with_report_data(self, report_data: bytes) -> Policy:
        """This policy, also requiring REPORTDATA to equal `report_data` (64 bytes)."""
        return self.from_mapping({**self.model_dump(exclude_none=True), "report_data": report_data})


def validate_mapping(
    model: type[ModelT], data: Any, *, source: str, error: type[AttestError]
) -> ModelT:
    """`model` validated from a mapping (parsed TOML or JSON); `error` names the first bad field
    (the policies of the TD and of the GPU read their files alike)."""
    if not isinstance(data, dict):
        raise error(
            f"{source}: a policy is a table/object",
            check=source,
            expected="object",
            actual=type(data).__name__,
        )
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or source
        raise error(
            f"{source}: {field}: {first['msg']}", check=field, actual=_short(first.get("input"))
        ) from None


def load_policy(path: Path) -> Policy:
    """A policy file: `.toml` or `.json` by suffix."""
    path = Path(path)
    loaders = {".toml": Policy.from_toml, ".json": Policy.from_json}
    if path.suffix not in loaders:
        raise PolicyFormatError(
            "policy file must be .toml or .json",
            check="policy.path",
            expected=sorted(loaders),
            actual=path.suffix or "no suffix",
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFormatError(
            f"cannot read policy file {path}: {exc}", check="policy.path"
        ) from None
    return loaders[path.suffix](text, source=str(path))


class CheckOutcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_PINNED = "not_pinned"
    UNSAFE_ALLOWED = "unsafe_allowed"


@dataclass(frozen=True)
class PolicyCheck:
    name: str
    expected: str
    actual: str
    outcome: CheckOutcome

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "expected": self.expected,
            "actual": self.actual,
            "outcome": self.outcome.value,
        }


@dataclass(frozen=True)
class PolicyOutcome:
    """Every check that ran on an accepted quote."""

    checks: tuple[PolicyCheck, ...]

    @property
    def not_pinned(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.checks if c.outcome is CheckOutcome.NOT_PINNED)

    @property
    def unsafe_allowed(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.checks if c.outcome is CheckOutcome.UNSAFE_ALLOWED)


def validate(verified: VerifiedQuote, policy: Policy) -> PolicyOutcome:
    """Apply `policy` to a verified quote. Raises `PolicyError` (with `.checks`) on any failure."""
    body = verified.quote.body
    attributes = body.td_attributes_value
    checks: list[PolicyCheck] = []

    def flag(name: str, ok: bool, expected: str, actual: str, relaxed: bool) -> None:
        outcome = (
            CheckOutcome.PASSED
            if ok
            else (CheckOutcome.UNSAFE_ALLOWED if relaxed else CheckOutcome.FAILED)
        )
        checks.append(PolicyCheck(name, expected, actual, outcome))

    # 1. TD attributes.
    flag(
        "td_attributes.debug",
        not attributes & TD_ATTRIBUTES_TUD_MASK,
        "no TUD bits (not a debug TD)",
        f"{attributes & TD_ATTRIBUTES_TUD_MASK:#04x}",
        policy.unsafe_allow_debug,
    )
    reserved = attributes & ~TD_ATTRIBUTES_KNOWN
    flag(
        "td_attributes.reserved",
        not reserved,
        "no reserved bits",
        f"{reserved:#018x}",
        policy.unsafe_allow_reserved_td_attributes,
    )
    flag(
        "td_attributes.sept_ve_disable",
        bool(attributes & TD_ATTRIBUTE_SEPT_VE_DISABLE),
        "set",
        "set" if attributes & TD_ATTRIBUTE_SEPT_VE_DISABLE else "clear",
        policy.unsafe_allow_sept_ve,
    )
    if body.mr_service_td is None:
        checks.append(
            PolicyCheck("mr_service_td", "zero", "absent (TD report 1.0)", CheckOutcome.PASSED)
        )
    else:
        flag(
            "mr_service_td",
            body.mr_service_td == bytes(len(body.mr_service_td)),
            "zero",
            body.mr_service_td.hex(),
            policy.unsafe_allow_service_td,
        )

    # 2. TCB status and advisories.
    status = verified.tcb_status.value
    safe, unsafe = set(policy.allowed_tcb_statuses), set(policy.unsafe_allowed_tcb_statuses)
    flag("tcb_status", status in safe, f"one of {sorted(safe)}", status, status in unsafe)
    unknown = [a for a in verified.advisory_ids if a not in policy.allowed_advisory_ids]
    flag(
        "advisory_ids",
        not unknown,
        f"only {sorted(policy.allowed_advisory_ids)}",
        ", ".join(verified.advisory_ids) or "none",
        policy.unsafe_allow_any_advisory,
    )

    # 3. Measurements: allowlists, or explicitly not pinned.
    measurements = _measurements(body)
    for field in MEASUREMENT_FIELDS:
        allowed, actual = getattr(policy, field), measurements[field]
        if allowed is None:
            checks.append(PolicyCheck(field, "not pinned", actual.hex(), CheckOutcome.NOT_PINNED))
        else:
            checks.append(
                PolicyCheck(
                    field,
                    _one_of(allowed),
                    actual.hex(),
                    CheckOutcome.PASSED if actual in allowed else CheckOutcome.FAILED,
                )
            )

    # 4. REPORTDATA.
    if policy.report_data is None:
        checks.append(
            PolicyCheck(
                "report_data", "not pinned", body.report_data.hex(), CheckOutcome.NOT_PINNED
            )
        )
    else:
        ok = body.report_data == policy.report_data
        checks.append(
            PolicyCheck(
                "report_data",
                policy.report_data.hex(),
                body.report_data.hex(),
                CheckOutcome.PASSED if ok else CheckOutcome.FAILED,
            )
        )

    return conclude(checks, PolicyError, "the quote")


def conclude(checks: list[PolicyCheck], error: type[PolicyError], subject: str) -> PolicyOutcome:
    """The outcome of checks that all ran; `error` naming the first failed one (with every check
    in `.checks`) if any failed."""
    failed = [c for c in checks if c.outcome is CheckOutcome.FAILED]
    if failed:
        first = failed[0]
        raise error(
            f"policy rejects {subject}: {first.name}",
            check=first.name,
            expected=first.expected,
            actual=first.actual,
            checks=tuple(checks),
        )
    return PolicyOutcome(tuple(checks))


def _one_of(values: tuple[bytes, ...]) -> str:
    return (
        "one of [" + ", ".join(v.hex() for v in values) + "]"
        if values
        else "nothing (empty allowlist)"
    )


def _short(value: Any) -> str:
    text = value.hex() if isinstance(value, bytes) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
