"""Errors of the service, one class per HTTP outcome, each rendered as the OpenAI error envelope.

`{"error": {"message", "type", "param", "code"}}`: `type` follows OpenAI's names so that the stock
SDK maps them to its own exception classes; `code` is a stable machine-readable reason. Messages
name the field and the expected and actual value, never a prompt, a completion or a secret.
"""

from __future__ import annotations

import json
from typing import Any


class ApplianceError(Exception):
    """Base class of every error the service raises."""


class ApiError(ApplianceError):
    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message, "type": self.type, "param": self.param, "code": self.code,
            }
        }

    def body(self) -> bytes:
        return json.dumps(self.envelope()).encode()

    @classmethod
    def for_status(cls, status: int, message: str, *, code: str | None = None) -> ApiError:
        """The error class of `status` (its OpenAI type), keeping `status` even when no class
        has it."""
        error = _BY_STATUS.get(status, ApiError)(message, code=code)
        error.status = status
        return error

    @classmethod
    def from_envelope(cls, status: int, document: dict[str, Any]) -> ApiError:
        """Rebuilds an error that crossed the control channel (same status, type and code)."""
        detail = document.get("error") if isinstance(document, dict) else None
        if not isinstance(detail, dict):
            return UpstreamError(f"malformed error from the supervisor (status {status})")
        error_class = _BY_STATUS.get(status, ApiError)
        error = error_class(
            str(detail.get("message", "")), code=detail.get("code"), param=detail.get("param")
        )
        error.status = status
        return error


class BadRequest(ApiError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidChallenge(BadRequest):
    """A developer portal challenge that is not 16-64 bytes in hex."""

    code = "invalid_challenge"


class Unauthorized(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_token"


class Forbidden(ApiError):
    status = 403
    type = "permission_error"
    code = "lifecycle_closed"


class NotFound(ApiError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class MisdirectedRequest(ApiError):
    """The connection attested another model than the one served now: reconnect and verify."""

    status = 421
    type = "invalid_request_error"
    code = "certificate_superseded"


class Conflict(ApiError):
    status = 409
    type = "conflict_error"
    code = "lifecycle_busy"


class PayloadTooLarge(ApiError):
    status = 413
    type = "invalid_request_error"
    code = "body_too_large"


class TooManyRequests(ApiError):
    """A rate limit was reached; `retry_after`: whole seconds until a request may succeed."""

    status = 429
    type = "requests"  # OpenAI's type for a request-rate limit
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message, code=code, param=param)
        self.retry_after = retry_after


class UnsupportedMediaType(ApiError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class UpstreamError(ApiError):
    """The engine could not be reached or broke the protocol (502)."""

    status = 502
    type = "upstream_error"
    code = "engine_unreachable"


class ServiceUnavailable(ApiError):
    """No model is ready, or the supervisor is not answering (503)."""

    status = 503
    type = "service_unavailable_error"
    code = "model_not_ready"


class UpstreamTimeout(ApiError):
    status = 504
    type = "upstream_error"
    code = "engine_idle_timeout"


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict,
                MisdirectedRequest, TooManyRequests,
                PayloadTooLarge, UnsupportedMediaType, UpstreamError, ServiceUnavailable,
                UpstreamTimeout)
}


class ControlChannelError(ApplianceError):
    """The supervisor's control socket is unreachable or answered something unreadable."""


class ReceiptStoreError(ApplianceError):
    """The receipt log could not be written or read."""


class StartupError(ApplianceError):
    """`appliance serve` cannot start with this configuration or environment."""
