"""Client-side RA-TLS verification: certificate, quote, DCAP, key binding, policy, model digest.

`RatlsVerifier.attest(...)` always returns an AttestationResult (developer portal, CLI);
`RatlsVerifier.verify(...)` raises `AttestationRefused` unless verified (clients). Clock, trust
root (inside the injected `attest` DcapVerifier), collateral source and policy are injected.
Simulated evidence verifies only when the DcapVerifier was built with the simulated root, and
then every result says `tee: simulated`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from attest.errors import AttestError, PolicyError
from attest.quote import Quote, parse_quote
from attest.rtmr import RtmrEvent, event_digest, verify_replay
from attest.verify import DcapVerifier
from checks.errors import show
from ratls.clock import Clock
from ratls.collateral import CollateralSource, earliest_next_update
from ratls.errors import (
    AttestationRefused,
    BindingError,
    ModelDigestError,
    ModelMeasurementError,
    RatlsError,
)
from ratls.evidence import NonceEvidence, check_nonce_evidence
from ratls.policy import AppraisalPolicy
from ratls.profile import (
    MODEL_EVENT_TYPE,
    MODEL_RTMR,
    RatlsCertificate,
    check_certificate,
    check_hostname,
    nonce_report_data,
    parse_certificate,
)
from ratls.result import (
    AttestationResult,
    Binding,
    CertificateInfo,
    Check,
    ErrorInfo,
    Measurements,
    Outcome,
    ServedModelInfo,
)

log = logging.getLogger(__name__)


class _Run:
    """The checks and facts gathered by one verification, in order."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.checks: list[Check] = []
        self.fields: dict[str, Any] = {}
        self.error: Exception | None = None
        self.result: AttestationResult

    def record(self, name: str, stage: str, outcome: Outcome, expected: Any, actual: Any) -> None:
        self.checks.append(
            Check(
                name=name,
                stage=stage,
                outcome=outcome,
                expected=_text(expected),
                actual=_text(actual),
            )
        )

    def passed(self, name: str, stage: str, expected: Any, actual: Any) -> None:
        self.record(name, stage, "passed", expected, actual)

    def failed(self, exc: Exception) -> AttestationResult:
        """The refused result; the failed check is the error's (policy checks are all listed)."""
        self.error = exc
        error = ErrorInfo.from_exception(exc)
        name = error.check or error.type
        if not any(c.name == name and c.outcome == "failed" for c in self.checks):
            self.record(name, error.stage, "failed", error.expected, error.actual)
        return AttestationResult(
            verified=False, evaluated_at=self.now, checks=self.checks, errors=[error], **self.fields
        )


class RatlsVerifier:
    """Verifies a server's RA-TLS certificate (and, in nonce mode, its nonce evidence)."""

    def __init__(
        self,
        *,
        dcap: DcapVerifier,
        policy: AppraisalPolicy,
        collateral: CollateralSource,
        clock: Clock,
    ) -> None:
        self._dcap = dcap
        self._policy = policy
        self._collateral = collateral
        self._clock = clock

    def verify(
        self,
        certificate_der: bytes,
        *,
        hostname: str | None,
        evidence: NonceEvidence | None = None,
        nonce: bytes | None = None,
        now: datetime | None = None,
    ) -> AttestationResult:
        """Like `attest`, but raises AttestationRefused unless verified.

        The exception carries the result and, as `cause`, the typed error of the failed check.
        """
        run = self._run(certificate_der, hostname, evidence, nonce, now)
        if not run.result.verified:
            raise AttestationRefused(run.result, run.error)
        return run.result

    def refusal(self, exc: Exception, *, now: datetime | None = None) -> AttestationRefused:
        """The refusal for an error met before verification could start (e.g. transport)."""
        return AttestationRefused(_Run(now or self._clock()).failed(exc), exc)

    def attest(
        self,
        certificate_der: bytes,
        *,
        hostname: str | None,
        evidence: NonceEvidence | None = None,
        nonce: bytes | None = None,
        now: datetime | None = None,
    ) -> AttestationResult:
        """The verdict on a server certificate; never raises for bad evidence.

        `hostname=None` skips the SAN check (callers expose that only as an insecure option).
        Nonce mode when `evidence` and `nonce` are given: the evidence's quote is the one
        verified, bound to the certificate's key and our nonce; certificate mode otherwise.
        """
        return self._run(certificate_der, hostname, evidence, nonce, now).result

    def _run(
        self,
        certificate_der: bytes,
        hostname: str | None,
        evidence: NonceEvidence | None,
        nonce: bytes | None,
        now: datetime | None,
    ) -> _Run:
        if (evidence is None) != (nonce is None):
            raise ValueError("nonce mode needs both the evidence and the nonce")
        run = _Run(now or self._clock())
        try:
            run.result = self._attest(run, certificate_der, hostname, evidence, nonce)
        except (RatlsError, AttestError) as exc:
            log.info("attestation refused: %s", exc)
            run.result = run.failed(exc)
        return run

    def _attest(
        self,
        run: _Run,
        certificate_der: bytes,
        hostname: str | None,
        evidence: NonceEvidence | None,
        nonce: bytes | None,
    ) -> AttestationResult:
        now = run.now
        # 1. The certificate: profile v1 structure, self-signature, validity, host name.
        cert = parse_certificate(certificate_der)
        run.fields["certificate"] = _certificate_info(cert)
        run.fields["model_digest"] = cert.model_digest.hex() if cert.model_digest else None
        run.fields["models"] = [
            ServedModelInfo(name=m.name, digest=m.digest.hex()) for m in cert.models
        ]
        run.passed("certificate_profile", "parse", "RA-TLS profile v1", "RA-TLS profile v1")
        check_certificate(cert, now=now)
        run.passed("certificate_signature", "certificate", "self-signed", "self-signed")
        run.passed(
            "certificate_validity",
            "certificate",
            f"{cert.not_before.isoformat()} .. {cert.not_after.isoformat()}",
            now.isoformat(),
        )
        self._policy.check_certificate_lifetime(cert, now=now)
        run.passed(
            "certificate_lifetime",
            "certificate",
            f"period <= {self._policy.max_certificate_validity}, "
            f"age <= {self._policy.max_certificate_age}",
            f"period {cert.not_after - cert.not_before}, age {now - cert.not_before}",
        )
        if hostname is not None:
            check_hostname(cert, hostname)
            run.passed("hostname", "certificate", hostname, "in subject alternative names")

        # 2. The evidence: the certificate's quote, or the nonce answer for this connection.
        binding_mode: Literal["certificate", "nonce"]
        if evidence is not None and nonce is not None:
            check_nonce_evidence(evidence, nonce, cert)
            run.passed("nonce_echo", "binding", nonce.hex(), evidence.nonce)
            raw_quote = evidence.quote_bytes()
            binding_mode, expected_report_data = "nonce", nonce_report_data(cert.spki, nonce)
        else:
            raw_quote = cert.quote
            binding_mode, expected_report_data = "certificate", cert.report_data

        # 3. Parse, then DCAP-verify the quote against collateral for its platform.
        quote = parse_quote(raw_quote)
        run.passed("quote_format", "parse", "TDX quote v4/v5", f"TDX quote v{quote.version}")
        collateral = self._collateral.collateral_for(quote, now=now)
        run.fields["collateral"] = collateral.identity.to_dict()
        verified = self._dcap.verify(quote, collateral, now=now)
        run.fields.update(
            tee="simulated" if verified.simulated else "tdx",
            tcb_status=verified.tcb_status.value,
            advisory_ids=list(verified.advisory_ids),
            measurements=_measurements(quote),
            trust_root_sha256=verified.root_sha256,
        )
        run.passed(
            "dcap",
            "verify",
            f"quote chains to root {verified.root_sha256}",
            f"verified, TCB {verified.tcb_status.value}",
        )

        # 4. Key binding: REPORTDATA is the formula over this certificate's key.
        actual_report_data = quote.body.report_data
        held = actual_report_data == expected_report_data
        run.fields["binding"] = Binding(
            mode=binding_mode,
            held=held,
            expected_report_data=expected_report_data.hex(),
            actual_report_data=actual_report_data.hex(),
            nonce=nonce.hex() if nonce else None,
        )
        if not held:
            raise BindingError(
                f"quote REPORTDATA does not bind this certificate's key ({binding_mode} mode)",
                check="key_binding",
                expected=expected_report_data,
                actual=actual_report_data,
            )
        run.passed("key_binding", "binding", expected_report_data, actual_report_data)

        # 5. The RTMR event log of nonce evidence, when present, must replay to the quote's RTMR3
        #    and measure the models the certificate claims (`_check_measured_model`).
        event_log = evidence.rtmr_event_log() if evidence is not None else None
        if event_log is not None:
            verify_replay(event_log.events, quote.body.rtmr, indices=(MODEL_RTMR,))
            run.passed("rtmr3_event_log", "verify", "replay of the event log", "matches RTMR3")
            _check_measured_model(run, cert, event_log.events)

        # 6. Appraisal policy: TD attributes, TCB status and advisories, measurements, and
        #    REPORTDATA (pinned to the binding value, so the listed checks agree with step 4).
        try:
            outcome = self._policy.validate_quote(verified, report_data=expected_report_data)
        except PolicyError as exc:
            for check in exc.checks:
                run.record(
                    check.name, "validate", check.outcome.value, check.expected, check.actual
                )
            raise
        for check in outcome.checks:
            run.record(check.name, "validate", check.outcome.value, check.expected, check.actual)

        # 7. Served models: allowlist and required digests.
        try:
            model_checks = self._policy.validate_models(cert.models)
        except ModelDigestError as exc:
            for check in exc.checks:
                run.record(
                    check.name, "validate", check.outcome.value, check.expected, check.actual
                )
            raise
        for check in model_checks:
            run.record(check.name, "validate", check.outcome.value, check.expected, check.actual)

        return AttestationResult(
            verified=True,
            evaluated_at=now,
            valid_until=min(cert.not_after, earliest_next_update(collateral)),
            checks=run.checks,
            **run.fields,
        )


def _check_measured_model(run: _Run, cert: RatlsCertificate, events: Sequence[RtmrEvent]) -> None:
    """The replayed RTMR3 log against the certificate's models.

    One model: the log's last model event must measure it (a load measures; nothing else does).
    Several: each digest must have a model event somewhere in the log. That is all a log can
    show once several models are served: unloads measure nothing, so which of the measured
    models are still loaded is the certificate's word (signed by the key the quote binds).
    The one-model rule holds while the appliance serves one model at a time; once it serves
    several, unloading down to one leaves another model's event last, and this rule must change
    with it (e.g. an appliance that measures unloads).
    """
    model_events = [e for e in events if e.index == MODEL_RTMR and e.event_type == MODEL_EVENT_TYPE]
    if len(cert.models) > 1:
        _check_measured_models(run, cert, model_events)
        return
    last = model_events[-1] if model_events else None
    measured = _measured_digest(last)
    if cert.model_digest is None:
        # No model loaded. An unload measures nothing, so the log still ends with the last model
        # that was loaded (if any): there is nothing to compare.
        run.record("rtmr3_model_digest", "verify", "not_applicable", "no model digest", measured)
        return
    # Comparing event digests also covers an event logged without its data.
    if last is None or last.digest != event_digest(MODEL_EVENT_TYPE, cert.model_digest):
        raise ModelMeasurementError(
            "RTMR3's last model event does not measure the certificate's model digest",
            check="rtmr3_model_digest",
            expected=cert.model_digest.hex(),
            actual=measured,
        )
    run.passed("rtmr3_model_digest", "verify", cert.model_digest.hex(), measured)


def _check_measured_models(
    run: _Run, cert: RatlsCertificate, model_events: Sequence[RtmrEvent]
) -> None:
    # Comparing event digests also covers events logged without their data.
    measured = {e.digest for e in model_events}
    served = [m.digest.hex() for m in cert.models]
    missing = [m for m in cert.models if event_digest(MODEL_EVENT_TYPE, m.digest) not in measured]
    if missing:
        raise ModelMeasurementError(
            "RTMR3's event log has no model event for "
            + ", ".join(f"{m.name} ({m.digest.hex()})" for m in missing),
            check="rtmr3_model_digests",
            expected=served,
            actual="not measured: " + show([m.digest for m in missing]),
        )
    run.passed(
        "rtmr3_model_digests",
        "verify",
        served,
        f"each has a model event ({len(model_events)} model events in the log)",
    )


def _measured_digest(event: RtmrEvent | None) -> str:
    if event is None:
        return "no model event"
    if event.data is None:
        return f"event digest {event.digest.hex()} (no data)"
    return event.data.hex()


def _certificate_info(cert: RatlsCertificate) -> CertificateInfo:
    return CertificateInfo(
        sha256_fingerprint=cert.fingerprint.hex(),
        subject=cert.certificate.subject.rfc4514_string(),
        not_before=cert.not_before,
        not_after=cert.not_after,
        dns_names=list(cert.dns_names),
        ip_addresses=[str(a) for a in cert.ip_addresses],
        pem=cert.pem(),
    )


def _measurements(quote: Quote) -> Measurements:
    body = quote.body
    return Measurements(
        mr_td=body.mr_td.hex(),
        rtmr=[r.hex() for r in body.rtmr],
        mr_config_id=body.mr_config_id.hex(),
        mr_owner=body.mr_owner.hex(),
        mr_owner_config=body.mr_owner_config.hex(),
        xfam=body.xfam.hex(),
        td_attributes=body.td_attributes.hex(),
        debug=body.debug,
        mr_seam=body.mr_seam.hex(),
        mr_signer_seam=body.mr_signer_seam.hex(),
        seam_attributes=body.seam_attributes.hex(),
        tee_tcb_svn=body.tee_tcb_svn.hex(),
        report_data=body.report_data.hex(),
        quote_version=quote.version,
    )


def _text(value: Any) -> str | None:
    return None if value is None else show(value)
