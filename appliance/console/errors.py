"""Errors of the console, by cause.

Configuration (`RegistryError`, `SecretUnavailableError`) stops the console at start or names the
setting that is wrong; `StateStoreError` is its own database failing. A push the console does not
accept raises a `Refused` subclass: an HTTP error (the OpenAI envelope of `appliance.errors`)
whose `code` is the reason the refusal is counted under. Messages name the field or check and
the expected and actual value, never a token.
"""

from __future__ import annotations

from typing import Any

from appliance.errors import ApiError, ApplianceError
from checks.errors import show


class ConsoleError(ApplianceError):
    """Base class of every error raised by the console."""


class RegistryError(ConsoleError):
    """The registry file cannot be read, or one of its fields is wrong; `field` names it
    (`appliances[2].url`)."""

    def __init__(self, message: str, *, field: str, expected: Any = None,
                 actual: Any = None) -> None:
        self.field = field
        shown = [f"{label} {show(value)}" for label, value in
                 (("expected", expected), ("actual", actual)) if value is not None]
        super().__init__(f"{field}: {message}" + (f" ({', '.join(shown)})" if shown else ""))


class SecretUnavailableError(ConsoleError):
    """A secret reference that does not resolve: an unset variable, an unreadable or empty file.
    The message names the reference, never a value."""


class StateStoreError(ConsoleError):
    """The console's SQLite state could not be read or written."""


class Refused(ConsoleError, ApiError):
    """A request the console refuses; `code` is the reason a refused push is counted under.

    `check` names the check that failed (the signature's member, the attestation check, the
    payload field), `enclave_id` the registered enclave it is counted against (None when the
    push names none).
    """

    def __init__(self, message: str, *, check: str | None = None, param: str | None = None,
                 expected: Any = None, actual: Any = None) -> None:
        shown = [f"{label} {show(value)}" for label, value in
                 (("expected", expected), ("actual", actual)) if value is not None]
        super().__init__(message + (f" ({', '.join(shown)})" if shown else ""), param=param)
        self.check = check
        self.enclave_id: str | None = None


class InvalidToken(Refused):
    status = 401
    type = "authentication_error"
    code = "invalid_token"


class MalformedPush(Refused):
    """Not a JSON object, a member of the wrong type, a time or certificate that does not parse."""

    status = 400
    type = "invalid_request_error"
    code = "malformed_push"


class BodyTooLarge(Refused):
    status = 413
    type = "invalid_request_error"
    code = "body_too_large"


class UnsignedPush(Refused):
    """No signature, or no certificate to check one with."""

    status = 422
    type = "invalid_request_error"
    code = "unsigned_push"


class UnknownEnclave(Refused):
    status = 403
    type = "permission_error"
    code = "unknown_enclave"


class BadSignature(Refused):
    """The signature does not verify with the certificate's key for the push purpose (a payload
    altered after signing, another purpose, a signature by another key)."""

    status = 403
    type = "permission_error"
    code = "bad_signature"


class StalePush(Refused):
    status = 422
    type = "invalid_request_error"
    code = "stale_push"


class FuturePush(Refused):
    """A payload time further ahead of the console's clock than the allowed skew: accepted, it
    would make every honest push until then look replayed."""

    status = 422
    type = "invalid_request_error"
    code = "push_from_future"


class CertificateRefused(Refused):
    """The certificate's RA-TLS verdict under the enclave's policy is a refusal."""

    status = 403
    type = "permission_error"
    code = "attestation_refused"


class ForeignCertificate(Refused):
    """An attested certificate that is not the registered enclave's: its names do not include
    the registered host, or the appliance at the registered URL holds another key."""

    status = 403
    type = "permission_error"
    code = "certificate_not_enclave"


class ReplayedPush(Refused):
    status = 409
    type = "conflict_error"
    code = "replayed_push"


class EvidenceUnavailable(Refused):
    """Collateral for the certificate's quote could not be had: not a verdict, not cached."""

    status = 503
    type = "service_unavailable_error"
    code = "evidence_unavailable"


class ApplianceUnreachable(Refused):
    """The registered URL did not complete a TLS handshake: its key cannot be compared."""

    status = 503
    type = "service_unavailable_error"
    code = "appliance_unreachable"


# The refusals about the certificate: an enclave with no accepted push shows its attestation as
# refused with the check the latest of these names (appliance/console/fleet.py).
ATTESTATION_REASONS = frozenset({CertificateRefused.code, ForeignCertificate.code})
