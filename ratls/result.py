"""AttestationResult: the JSON verdict on a server's RA-TLS evidence, for clients, CLI and portal.

Every check that ran is listed with its expected and actual value; a refused result lists the
errors (stage, type, message) and whatever was established before the failure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

RESULT_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Outcome = Literal["passed", "failed", "not_pinned", "not_applicable", "unsafe_allowed"]


class Check(_Model):
    """One check and its outcome; `expected`/`actual` as shown to people.

    `not_pinned`: the policy does not constrain this value (it is reported, not checked);
    `not_applicable`: the evidence gives this check nothing to compare (e.g. no model loaded);
    `unsafe_allowed`: it failed but an `unsafe_` policy switch let it pass.
    """

    name: str
    stage: str
    outcome: Outcome
    expected: str | None = None
    actual: str | None = None


class ErrorInfo(_Model):
    stage: str
    type: str
    message: str
    check: str | None = None
    expected: str | None = None
    actual: str | None = None

    @classmethod
    def from_exception(cls, exc: Exception) -> ErrorInfo:
        to_dict = getattr(exc, "to_dict", None)
        if callable(to_dict):
            return cls.model_validate(to_dict())
        return cls(stage="internal", type=type(exc).__name__, message=str(exc))


class Measurements(_Model):
    """The TD's measurements and attributes from the verified quote (hex)."""

    mr_td: str
    rtmr: list[str]
    mr_config_id: str
    mr_owner: str
    mr_owner_config: str
    xfam: str
    td_attributes: str
    debug: bool
    mr_seam: str
    mr_signer_seam: str
    seam_attributes: str
    tee_tcb_svn: str
    report_data: str
    quote_version: int


class CertificateInfo(_Model):
    sha256_fingerprint: str
    subject: str
    not_before: datetime
    not_after: datetime
    dns_names: list[str]
    ip_addresses: list[str]
    pem: str


class Binding(_Model):
    """How REPORTDATA was tied to the certificate's key, and whether it held."""

    mode: Literal["certificate", "nonce"]
    held: bool
    expected_report_data: str
    actual_report_data: str | None = None
    nonce: str | None = None


class ServedModelInfo(_Model):
    """One model the certificate says is served (hex digest); `name` None: the certificate
    states only the digest (MODEL_DIGEST alone)."""

    name: str | None
    digest: str


class AttestationResult(_Model):
    version: int = RESULT_VERSION
    verified: bool
    tee: Literal["tdx", "simulated"] | None = None
    evaluated_at: datetime
    # Until when this verdict may be reused: the earliest of the certificate's notAfter and the
    # collateral's next updates. None when not verified.
    valid_until: datetime | None = None
    tcb_status: str | None = None
    advisory_ids: list[str] = []
    measurements: Measurements | None = None
    binding: Binding | None = None
    # The one served model's digest; None with no model and with several (then see `models`).
    model_digest: str | None = None
    # Every served model, sorted by name.
    models: list[ServedModelInfo] = []
    certificate: CertificateInfo | None = None
    collateral: dict[str, Any] | None = None
    trust_root_sha256: str | None = None
    checks: list[Check] = []
    errors: list[ErrorInfo] = []

    def summary(self) -> str:
        """A few readable lines for terminals (the CLI's default output)."""
        lines = [
            f"{'VERIFIED' if self.verified else 'REFUSED'}"
            f"{' (SIMULATED evidence, not a real TDX platform)' if self.tee == 'simulated' else ''}"
        ]
        if self.certificate:
            lines.append(
                f"  certificate  sha256 {self.certificate.sha256_fingerprint}"
                f", valid {self.certificate.not_before:%Y-%m-%d %H:%M} .. "
                f"{self.certificate.not_after:%Y-%m-%d %H:%M} UTC"
            )
        if self.tcb_status:
            advisories = ", ".join(self.advisory_ids) or "no advisories"
            lines.append(f"  tcb status   {self.tcb_status} ({advisories})")
        if self.measurements:
            lines.append(f"  mr_td        {self.measurements.mr_td}")
            for i, value in enumerate(self.measurements.rtmr):
                lines.append(f"  rtmr{i}        {value}")
            lines.append(f"  debug        {self.measurements.debug}")
        if self.binding:
            lines.append(
                f"  binding      {self.binding.mode} mode, "
                f"{'held' if self.binding.held else 'DID NOT HOLD'}"
            )
        if len(self.models) > 1:
            lines.append(f"  models       {len(self.models)} served")
            lines += [f"    {m.name} {m.digest}" for m in self.models]
        else:
            named = f" ({self.models[0].name})" if self.models and self.models[0].name else ""
            lines.append(f"  model digest {self.model_digest or 'none (no model loaded)'}{named}")
        counts = {o: sum(c.outcome == o for c in self.checks) for o in get_args(Outcome)}
        tally = ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in counts.items() if n)
        lines.append(f"  checks       {tally}")
        for check in self.checks:
            if check.outcome in ("failed", "unsafe_allowed"):
                lines.append(
                    f"    {check.outcome.upper()} {check.name}: "
                    f"expected {check.expected}, actual {check.actual}"
                )
        for error in self.errors:
            lines.append(f"  error        [{error.stage}] {error.type}: {error.message}")
        return "\n".join(lines)
