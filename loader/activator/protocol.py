"""The activator's wire protocol: one JSON line each way per connection, over a Unix socket.

    -> {"op": "activate",   "model": NAME, "digest": HEX}\\n
    <- {"ok": true, "result": {"model": NAME, "digest": HEX, "path": MOUNT_POINT}}\\n
    -> {"op": "deactivate", "model": NAME, "digest": HEX}\\n
    <- {"ok": true, "result": {"model": NAME, "digest": HEX, "path": MOUNT_POINT}}\\n
    -> {"op": "status"}\\n
    <- {"ok": true, "result": {"active": [{"model": ..., "digest": ..., "path": ...}, ...],
                               "stale": [{"device": ..., "mount_points": [...], "error": ...}]}}\\n
    <- {"ok": false, "error": {"type": "RecordError", "message": ..., "check": ..., ...}}\\n

Strict on both sides: bounded lines, no unknown keys, no type coercion, lower-case hex digests.
Errors cross as `LoaderError.to_dict()` and are rebuilt as the same class on the client when it
is one the activator can raise; anything else arrives as a plain ActivatorError.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loader.errors import (
    ActivationError,
    ActivatorError,
    ActivatorPeerError,
    ActivatorProtocolError,
    ExpectedDigestMismatchError,
    LoaderError,
    ModelNameError,
    ModelNotActiveError,
    ModelNotFoundError,
    ParameterMismatchError,
    RecordError,
    StaleMappingError,
    SuperblockError,
    VerityIOError,
    VerityParamsError,
)

MAX_REQUEST_BYTES = 1024  # a name (<= 64) and a digest (<= 128 hex) fit many times over
MAX_ANSWER_BYTES = 64 * 1024  # a status lists a few models; an error carries at most 2 KB of stderr

# A root hash is one digest of 20 (sha1) to 64 (sha512) bytes; lower case, as records store it.
_DIGEST_PATTERN = r"^(?:[0-9a-f]{2}){20,64}$"

# What the activator raises on purpose, rebuilt by class on the client. Each takes (message).
_REMOTE_ERRORS: dict[str, type[LoaderError]] = {
    cls.__name__: cls
    for cls in (
        ActivationError, ActivatorError, ActivatorPeerError, ActivatorProtocolError,
        ExpectedDigestMismatchError, ModelNameError, ModelNotActiveError, ModelNotFoundError,
        ParameterMismatchError, RecordError, StaleMappingError, SuperblockError, VerityIOError,
        VerityParamsError,
    )
}  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_Document = TypeVar("_Document", bound=_Strict)


class ActivatorRequest(_Strict):
    op: Literal["activate", "deactivate", "status"]
    model: str | None = Field(default=None, max_length=64)
    digest: str | None = Field(default=None, pattern=_DIGEST_PATTERN)

    @model_validator(mode="after")
    def _arguments_match_the_op(self) -> ActivatorRequest:
        named = self.model is not None and self.digest is not None
        if self.op == "status" and (self.model is not None or self.digest is not None):
            raise ValueError("status takes no model or digest")
        if self.op != "status" and not named:
            raise ValueError(f"{self.op} needs a model and a digest")
        return self


class ActiveModel(_Strict):
    model: str
    digest: str = Field(pattern=_DIGEST_PATTERN)
    path: str

    @model_validator(mode="after")
    def _path_is_absolute(self) -> ActiveModel:
        if not Path(self.path).is_absolute():
            raise ValueError("path must be absolute")
        return self


class StaleModel(_Strict):
    """A mapping that could not be torn down (loader.activator.recovery), with the last error."""

    device: str = Field(max_length=128)
    mount_points: list[str]
    error: str = Field(max_length=4096)


class ActivatorStatus(_Strict):
    active: list[ActiveModel]
    stale: list[StaleModel] = []


class ErrorDocument(_Strict):
    stage: str | None = Field(default=None, max_length=32)
    type: str = Field(max_length=64)
    message: str = Field(max_length=8192)
    check: str | None = None
    expected: str | None = None
    actual: str | None = None


class Answer(_Strict):
    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorDocument | None = None

    @model_validator(mode="after")
    def _result_or_error(self) -> Answer:
        if self.ok != (self.result is not None) or self.ok == (self.error is not None):
            raise ValueError("an answer has a result when ok, an error otherwise")
        return self


def parse_request(line: bytes) -> ActivatorRequest:
    return _parse(ActivatorRequest, line, "request")


def parse_answer(line: bytes) -> Answer:
    return _parse(Answer, line, "answer")


def parse_result(model: type[_Document], result: dict[str, Any]) -> _Document:
    return _parse(model, result, "answer")


def _parse(model: type[_Document], raw: bytes | dict[str, Any], what: str) -> _Document:
    try:
        if isinstance(raw, bytes):
            return model.model_validate_json(raw)
        return model.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise ActivatorProtocolError(
            f"malformed {what}: {where}: {first['msg']}", check=what
        ) from None


def encode(document: BaseModel | dict[str, Any]) -> bytes:
    data = document.model_dump() if isinstance(document, BaseModel) else document
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def error_answer(error: LoaderError) -> bytes:
    return encode({"ok": False, "error": error.to_dict()})


def rebuild_error(document: ErrorDocument) -> LoaderError:
    """The activator's error as the same loader class, with its check, expected and actual."""
    cls = _REMOTE_ERRORS.get(document.type, ActivatorError)
    # The message already carries expected and actual (LoaderError.to_dict); set them afterwards
    # so that they are not appended twice.
    error = cls(f"activator: {document.message}")
    error.check, error.expected, error.actual = document.check, document.expected, document.actual
    return error


def read_line(sock: socket.socket, limit: int, what: str) -> bytes:
    """One newline-terminated line of at most `limit` bytes; the socket's timeout applies."""
    buffer = bytearray()
    while b"\n" not in buffer:
        if len(buffer) > limit:
            raise ActivatorProtocolError(f"{what} longer than {limit} bytes", check=what)
        chunk = sock.recv(limit + 1 - len(buffer))
        if not chunk:
            raise ActivatorProtocolError(f"{what} ended before its newline", check=what)
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    if rest:
        raise ActivatorProtocolError(f"bytes after the {what} line", check=what)
    return line
