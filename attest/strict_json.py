"""Strict reading of the JSON in DCAP collateral, and the UTC time text it uses.

Strict because the documents are signed: a duplicate key could be read two ways, a boolean must
never pass for an SVN, and a signed value must be cut out of its body byte for byte
(`member_texts`). Every failure raises `CollateralFormatError` naming the field (`path.key`).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from attest.errors import CollateralFormatError

# Upper bound for any one collateral document (the largest TCB info seen is ~5 KB, PCK CRL ~3 KB).
MAX_DOCUMENT_SIZE = 1 << 20

UTC_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_UTC_TIME_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # A signed document with two values for one key could be read two ways.
            raise CollateralFormatError("duplicate JSON key", check="json.keys", actual=key)
        result[key] = value
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicate_keys)


# --- whole documents ----------------------------------------------------------------------------


def load_json(text: str, what: str) -> Any:
    """Parse JSON text of at most MAX_DOCUMENT_SIZE characters; duplicate keys are an error."""
    if not isinstance(text, str):
        raise CollateralFormatError(
            f"{what} must be JSON text", check=what, expected="str", actual=type(text).__name__
        )
    if len(text) > MAX_DOCUMENT_SIZE:
        raise CollateralFormatError(
            f"{what} too large", check=what, expected=f"<= {MAX_DOCUMENT_SIZE}", actual=len(text)
        )
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise CollateralFormatError(
            f"{what} is not valid JSON", check=what, actual=str(exc)
        ) from None


def decode_utf8(data: str | bytes, what: str) -> str:
    """`data` as text: str as it is, bytes decoded as UTF-8."""
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise CollateralFormatError(f"{what} is not UTF-8", check=what) from None


def member_texts(body: str, what: str) -> dict[str, str]:
    """The top-level members of a JSON object with the exact source text of each value."""

    def fail(reason: str) -> CollateralFormatError:
        return CollateralFormatError(f"{what}: {reason}", check=what)

    def skip(pos: int) -> int:
        return _JSON_WHITESPACE.match(body, pos).end()  # type: ignore[union-attr]

    members: dict[str, str] = {}
    pos = skip(0)
    if body[pos : pos + 1] != "{":
        raise fail("not a JSON object")
    pos = skip(pos + 1)
    try:
        while body[pos : pos + 1] != "}":
            if body[pos : pos + 1] != '"':
                raise fail("expected a member name")
            # typeshed does not declare json.decoder.scanstring, the decoder's own string scanner.
            key, pos = json.decoder.scanstring(body, pos + 1)  # type: ignore[attr-defined]
            pos = skip(pos)
            if body[pos : pos + 1] != ":":
                raise fail("expected ':'")
            start = skip(pos + 1)
            _, end = _DECODER.raw_decode(body, start)
            if key in members:
                raise fail(f"duplicate member {key!r}")
            members[key] = body[start:end]
            pos = skip(end)
            if body[pos : pos + 1] == ",":
                pos = skip(pos + 1)
                if body[pos : pos + 1] == "}":
                    raise fail("trailing comma")
            elif body[pos : pos + 1] != "}":
                raise fail("expected ',' or '}'")
    except json.JSONDecodeError as exc:
        raise fail(f"invalid JSON ({exc})") from None
    if body[skip(pos + 1) :]:
        raise fail("data after the JSON object")
    return members


# --- values inside a document -------------------------------------------------------------------


def require_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CollateralFormatError(
            f"{path} must be an object", check=path, expected="object", actual=type(value).__name__
        )
    return value


def typed_member(obj: dict[str, Any], key: str, kind: type, path: str) -> Any:
    """`obj[key]`, which must be present and of type `kind` (a bool is never an int)."""
    if key not in obj:
        raise CollateralFormatError(
            f"{path}.{key} is missing",
            check=f"{path}.{key}",
            expected=kind.__name__,
            actual="absent",
        )
    value = obj[key]
    # JSON true/false are ints in Python; an SVN or version must never be a boolean.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CollateralFormatError(
            f"{path}.{key} has the wrong type",
            check=f"{path}.{key}",
            expected=kind.__name__,
            actual=type(value).__name__,
        )
    return value


def uint_member(obj: dict[str, Any], key: str, path: str, high: int) -> int:
    """An integer member in 0..`high`."""
    value: int = typed_member(obj, key, int, path)
    if not 0 <= value <= high:
        raise CollateralFormatError(
            f"{path}.{key} out of range", check=f"{path}.{key}", expected=f"0..{high}", actual=value
        )
    return value


def utc_time_member(obj: dict[str, Any], key: str, path: str) -> datetime:
    """A `YYYY-MM-DDTHH:MM:SSZ` member, as an aware UTC datetime."""
    text = typed_member(obj, key, str, path)
    if not _UTC_TIME_PATTERN.fullmatch(text):
        raise CollateralFormatError(
            f"{path}.{key} is not a UTC time",
            check=f"{path}.{key}",
            expected="YYYY-MM-DDTHH:MM:SSZ",
            actual=text,
        )
    try:
        return datetime.strptime(text, UTC_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise CollateralFormatError(
            f"{path}.{key} is not a valid date", check=f"{path}.{key}", actual=text
        ) from None


def hex_member(obj: dict[str, Any], key: str, path: str, size: int) -> bytes:
    """A hex string member that decodes to exactly `size` bytes."""
    value = hex_bytes(typed_member(obj, key, str, path), f"{path}.{key}")
    if len(value) != size:
        raise CollateralFormatError(
            f"{path}.{key} has the wrong size",
            check=f"{path}.{key}",
            expected=f"{size} bytes",
            actual=len(value),
        )
    return value


def hex_bytes(text: str, what: str) -> bytes:
    """Bytes from hex digits (either case, whole bytes only: no spaces, no odd length)."""
    try:
        if not _HEX.fullmatch(text):
            raise ValueError(text[:32])
        return bytes.fromhex(text)
    except (TypeError, ValueError):
        raise CollateralFormatError(
            f"{what} is not hex", check=what, expected="hex string", actual=repr(text)[:40]
        ) from None


def format_utc_time(moment: datetime) -> str:
    """The inverse of `utc_time_member`: `moment` as `YYYY-MM-DDTHH:MM:SSZ`."""
    return moment.astimezone(UTC).strftime(UTC_TIME_FORMAT)
