"""The appraisal policy of RA-TLS: `attest`'s TD policy, the served models' digests, and the
bounds on the certificate itself.

A policy file is an `attest` policy file (`.toml` or `.json`) with these more optional keys:

    allowed_model_digests = ["<hex dm-verity root hash>", ...]
    required_model_digests = ["<hex dm-verity root hash>", ...]
    max_certificate_validity_hours = 24   # notAfter - notBefore, at most
    max_certificate_age_hours = 24        # now - notBefore, at most
    unsafe_allow_unpinned = false         # accept a TD whose MRTD/RTMR0-2 this file leaves open
    [origin]                              # where the pinned values came from (informational)
    method = "trust-on-first-use"
    source = "https://appliance.example:8443"
    observed_at = "2026-12-06T20:00:00+00:00"

Pinning is the default: a policy that leaves MRTD or any of RTMR0-2 unpinned refuses every
server (check `measurements_pinned`), unless it says `unsafe_allow_unpinned` (the CLI's
`--unsafe-unpinned`, the library's `AppraisalPolicy.unsafe_unpinned()`). Each register takes a
list, so an image upgrade can accept two releases at once. `appliance policy init` writes a
policy from a verified quote.

The served models (`validate_models`), each key checked on its own:
* `allowed_model_digests`: every served model's digest must be in the list. Absent: not pinned
  (results say so). An empty list rejects every server, and a certificate that serves no model
  never matches a pinned list. Check `model_digest` when the certificate serves at most one
  model (as before MODEL_DIGESTS), `model_digests` when it serves several.
* `required_model_digests`: each listed digest must be served (by some model; names are not
  compared). Absent: no check; an empty list requires nothing. Check `required_model_digests`.
So a tenant who needs exactly models A and B lists both in each. Unknown keys are errors, as in
`attest`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from attest.errors import PolicyError, PolicyFormatError
from attest.policy import CheckOutcome, Policy, PolicyCheck, PolicyOutcome, validate
from attest.verify import VerifiedQuote
from checks.errors import show
from ratls.errors import CertificateError, ModelDigestError
from ratls.profile import DEFAULT_VALIDITY, RatlsCertificate
from ratls.served_models import MODEL_DIGEST_MAX_SIZE, MODEL_DIGEST_MIN_SIZE, ServedModel

MODEL_DIGESTS_KEY = "allowed_model_digests"
REQUIRED_MODEL_DIGESTS_KEY = "required_model_digests"
MAX_VALIDITY_KEY = "max_certificate_validity_hours"
MAX_AGE_KEY = "max_certificate_age_hours"
UNSAFE_UNPINNED_KEY = "unsafe_allow_unpinned"
ORIGIN_KEY = "origin"

# The registers that say which TD this is: its firmware-loaded image (MRTD), firmware (RTMR0),
# boot loader and kernel command line (RTMR1), kernel and initrd (RTMR2). RTMR3 is the runtime
# register (the model), which the model digest check covers.
REQUIRED_PINS = ("mr_td", "rtmr0", "rtmr1", "rtmr2")
PINNING_CHECK = "measurements_pinned"
# The allowlist check keeps its name for certificates with at most one model.
MODEL_DIGEST_CHECK = "model_digest"
MODEL_DIGESTS_CHECK = "model_digests"
REQUIRED_MODELS_CHECK = "required_model_digests"

# The issuer's rotation (ratls.issuer: a new certificate and quote every DEFAULT_VALIDITY): a
# certificate that claims longer, or whose notBefore is older, was not made by that rotation.
DEFAULT_MAX_CERTIFICATE_VALIDITY = DEFAULT_VALIDITY
DEFAULT_MAX_CERTIFICATE_AGE = DEFAULT_VALIDITY
_MAX_HOURS = 24 * 366


@dataclass(frozen=True)
class PolicyOrigin:
    """Where a policy's pinned values came from; written by `appliance policy init`."""

    method: str
    source: str
    observed_at: str
    tee: str | None = None
    tcb_status: str | None = None
    certificate_sha256: str | None = None

    @classmethod
    def from_document(cls, document: Any) -> PolicyOrigin:
        names = {f.name for f in fields(cls)}
        if (
            not isinstance(document, Mapping)
            or not set(document) <= names
            or not all(isinstance(v, str) for v in document.values())
            or not {"method", "source", "observed_at"} <= set(document)
        ):
            raise PolicyFormatError(
                f"{ORIGIN_KEY} must be a table of strings with method, source and observed_at",
                check=ORIGIN_KEY,
                expected=sorted(names),
                actual=sorted(document)
                if isinstance(document, Mapping)
                else type(document).__name__,
            )
        return cls(**document)

    def to_document(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


@dataclass(frozen=True)
class AppraisalPolicy:
    """What a server must show: `tdx` (measurements, TD attributes, TCB), the served models'
    digests, and a certificate within the issuer's rotation."""

    tdx: Policy = field(default_factory=Policy)
    allowed_model_digests: frozenset[bytes] | None = None
    required_model_digests: frozenset[bytes] | None = None
    max_certificate_validity: timedelta = DEFAULT_MAX_CERTIFICATE_VALIDITY
    max_certificate_age: timedelta = DEFAULT_MAX_CERTIFICATE_AGE
    unsafe_allow_unpinned: bool = False
    origin: PolicyOrigin | None = None

    @classmethod
    def unsafe_unpinned(cls) -> AppraisalPolicy:
        """attest's strict defaults (no debug TD, UpToDate only, no advisories) with nothing
        pinned: any genuine TD passes. For development and for `policy init`'s first look."""
        return cls(unsafe_allow_unpinned=True)

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], *, source: str = "policy"
    ) -> AppraisalPolicy:
        """From a parsed policy file. Raises attest's PolicyFormatError naming the field."""
        if not isinstance(document, Mapping):
            raise PolicyFormatError(f"{source}: a policy is a table/object", check=source)
        tdx_fields = dict(document)
        digests = tdx_fields.pop(MODEL_DIGESTS_KEY, None)
        required = tdx_fields.pop(REQUIRED_MODEL_DIGESTS_KEY, None)
        validity = tdx_fields.pop(MAX_VALIDITY_KEY, None)
        age = tdx_fields.pop(MAX_AGE_KEY, None)
        unpinned = tdx_fields.pop(UNSAFE_UNPINNED_KEY, False)
        origin = tdx_fields.pop(ORIGIN_KEY, None)
        if not isinstance(unpinned, bool):
            raise PolicyFormatError(
                f"{UNSAFE_UNPINNED_KEY} must be true or false",
                check=UNSAFE_UNPINNED_KEY,
                actual=repr(unpinned),
            )
        return cls(
            tdx=Policy.from_mapping(tdx_fields, source=source),
            allowed_model_digests=None if digests is None else parse_model_digests(digests),
            required_model_digests=None
            if required is None
            else parse_model_digests(required, key=REQUIRED_MODEL_DIGESTS_KEY),
            max_certificate_validity=_hours(
                validity, MAX_VALIDITY_KEY, DEFAULT_MAX_CERTIFICATE_VALIDITY
            ),
            max_certificate_age=_hours(age, MAX_AGE_KEY, DEFAULT_MAX_CERTIFICATE_AGE),
            unsafe_allow_unpinned=unpinned,
            origin=None if origin is None else PolicyOrigin.from_document(origin),
        )

    @classmethod
    def load(cls, path: Path) -> AppraisalPolicy:
        """A policy file, `.toml` or `.json` by suffix."""
        path = Path(path)
        if path.suffix not in (".toml", ".json"):
            raise PolicyFormatError(
                "policy file must be .toml or .json",
                check="policy.path",
                expected=[".json", ".toml"],
                actual=path.suffix or "none",
            )
        try:
            text = path.read_text("utf-8")
            document = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise PolicyFormatError(
                f"cannot read policy file {path}: {exc}", check="policy.path"
            ) from None
        return cls.from_document(document, source=str(path))

    def with_model_digests(self, digests: Iterable[bytes]) -> AppraisalPolicy:
        return replace(self, allowed_model_digests=frozenset(digests))

    def with_required_model_digests(self, digests: Iterable[bytes]) -> AppraisalPolicy:
        return replace(self, required_model_digests=frozenset(digests))

    def allowing_unpinned_unsafely(self) -> AppraisalPolicy:
        return replace(self, unsafe_allow_unpinned=True)

    def check_certificate_lifetime(self, cert: RatlsCertificate, *, now: datetime) -> None:
        """The certificate's validity period and age within the bounds. Raises CertificateError."""
        period = cert.not_after - cert.not_before
        if period > self.max_certificate_validity:
            raise CertificateError(
                "certificate validity period is longer than the policy allows",
                check="certificate_lifetime",
                expected=f"<= {self.max_certificate_validity}",
                actual=str(period),
            )
        age = now - cert.not_before
        if age > self.max_certificate_age:
            raise CertificateError(
                "certificate is older than the policy allows",
                check="certificate_age",
                expected=f"<= {self.max_certificate_age}",
                actual=str(age),
            )

    def validate_quote(self, verified: VerifiedQuote, *, report_data: bytes) -> PolicyOutcome:
        """attest's validate stage, with REPORTDATA pinned to the binding formula's value, then
        the pinning rule.

        Raises attest's PolicyError naming the first failed check (all checks in `.checks`).
        """
        outcome = validate(verified, self.tdx.with_report_data(report_data))
        unpinned = [name for name in REQUIRED_PINS if getattr(self.tdx, name) is None]
        pinning = PolicyCheck(
            PINNING_CHECK,
            ", ".join(REQUIRED_PINS) + " pinned",
            "not pinned: " + ", ".join(unpinned) if unpinned else "all pinned",
            CheckOutcome.PASSED
            if not unpinned
            else CheckOutcome.UNSAFE_ALLOWED
            if self.unsafe_allow_unpinned
            else CheckOutcome.FAILED,
        )
        checks = (*outcome.checks, pinning)
        if pinning.outcome is CheckOutcome.FAILED:
            raise PolicyError(
                "the policy does not pin " + ", ".join(unpinned) + ": write one with "
                "`appliance policy init`, or accept any TD explicitly (unsafe)",
                check=PINNING_CHECK,
                expected=pinning.expected,
                actual=pinning.actual,
                checks=checks,
            )
        return PolicyOutcome(checks)


    def validate_models(self, models: Sequence[ServedModel]) -> tuple[PolicyCheck, ...]:
        """The served models against the allowlist, then the required digests (module docstring).

        Raises ModelDigestError naming the first failed check (all checks in `.checks`).
        """
        served = [m.digest for m in models]
        shown = show(served) if len(models) > 1 else served[0].hex() if served else "none"
        checks: list[PolicyCheck] = []
        refusals: list[str] = []

        # 1. Every served digest allowlisted (and some model served).
        name = MODEL_DIGEST_CHECK if len(models) <= 1 else MODEL_DIGESTS_CHECK
        allowed = self.allowed_model_digests
        if allowed is None:
            checks.append(PolicyCheck(name, "not pinned", shown, CheckOutcome.NOT_PINNED))
        else:
            outside = [m for m in models if m.digest not in allowed]
            if not models:
                refusals.append("no model is loaded")
            elif outside:
                refusals.append(
                    "model digest is not in the allowlist"
                    if len(models) == 1
                    else "served models are not in the allowlist: " + _names(outside)
                )
            checks.append(
                PolicyCheck(
                    name,
                    show(sorted(d.hex() for d in allowed)),
                    shown,
                    CheckOutcome.FAILED if not models or outside else CheckOutcome.PASSED,
                )
            )

        # 2. Every required digest served.
        required = self.required_model_digests
        if required is not None:
            missing = sorted(d.hex() for d in required - set(served))
            if missing:
                refusals.append("required model digests are not served: " + ", ".join(missing))
            checks.append(
                PolicyCheck(
                    REQUIRED_MODELS_CHECK,
                    show(sorted(d.hex() for d in required)),
                    shown,
                    CheckOutcome.FAILED if missing else CheckOutcome.PASSED,
                )
            )

        failed = [c for c in checks if c.outcome is CheckOutcome.FAILED]
        if failed:
            raise ModelDigestError(
                refusals[0],
                check=failed[0].name,
                expected=failed[0].expected,
                actual=failed[0].actual,
                checks=tuple(checks),
            )
        return tuple(checks)


def _names(models: Iterable[ServedModel]) -> str:
    return ", ".join(f"{m.name} ({m.digest.hex()})" for m in models)


def _hours(value: Any, key: str, default: timedelta) -> timedelta:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= _MAX_HOURS:
        raise PolicyFormatError(
            f"{key} must be a positive number of hours",
            check=key,
            expected=f"0 < hours <= {_MAX_HOURS}",
            actual=repr(value),
        )
    return timedelta(hours=value)


def parse_model_digests(values: Any, *, key: str = MODEL_DIGESTS_KEY) -> frozenset[bytes]:
    """A digest list (`key`) from its file form, a list of hex strings. Raises
    PolicyFormatError."""
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise PolicyFormatError(f"{key} must be a list of hex strings", check=key)
    digests = set()
    for value in values:
        try:
            digest = bytes.fromhex(value)
        except ValueError:
            raise PolicyFormatError(f"{key} entry is not hex", check=key, actual=value) from None
        if not MODEL_DIGEST_MIN_SIZE <= len(digest) <= MODEL_DIGEST_MAX_SIZE:
            raise PolicyFormatError(
                f"{key} entry has the wrong length",
                check=key,
                expected=f"{MODEL_DIGEST_MIN_SIZE}..{MODEL_DIGEST_MAX_SIZE} bytes",
                actual=f"{len(digest)} bytes",
            )
        digests.add(digest)
    return frozenset(digests)
