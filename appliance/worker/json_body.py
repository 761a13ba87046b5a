"""The JSON of a request body: a strict parse for the routes that need the document, and for
inference only what routing reads (`model`, `stream`), without stalling the event loop.

Both paths accept RFC 8259 JSON in UTF-8 only (no NaN or Infinity, no byte-order mark) and, like
`json` (and so the engine), take the last of duplicate keys. A body up to OFF_LOOP_BYTES is parsed
with `json` on the loop (microseconds). A larger one is checked by SQLite's JSON functions in a
thread: `json.loads` of 4 MiB of `[[],[],...]` holds the loop for ~250 ms, and in a thread it
would hold the GIL as long (it never releases it), stalling every stream of the worker; SQLite
parses without the GIL and without building Python objects, and returns the two top-level fields
only. Nesting: `json` stops at Python's recursion limit (~1000 levels), SQLite at 2000; a body
either refuses is a 400, never a RecursionError's 500.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from appliance.errors import BadRequest

# json.loads of 16 KiB of the worst case (empty arrays) holds the loop for ~1 ms; a thread hop and
# an SQLite connection cost ~0.1 ms, paid only above this.
OFF_LOOP_BYTES = 16 * 1024

# SQLite type names as the `json` module's Python types, so that both paths word errors alike.
_PYTHON_TYPE = {"null": "NoneType", "true": "bool", "false": "bool", "integer": "int",
                "real": "float", "text": "str", "array": "list", "object": "dict"}
# json_valid() with one argument accepts canonical RFC 8259 JSON only (no JSON5). The text is
# bound as TEXT: SQLite >= 3.45 reads a BLOB argument as its binary JSONB.
_DOCUMENT = "SELECT json_valid(?1), CASE WHEN json_valid(?1) THEN json_type(?1) END"
_ROUTING_MEMBERS = ("SELECT key, type, atom FROM json_each(?1) "
                    "WHERE key IN ('model', 'stream') ORDER BY id")


@dataclass(frozen=True)
class RoutingFields:
    model: str
    stream: bool


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# A constant: json.loads with options builds a new decoder per call.
_STRICT_JSON = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. Raises BadRequest."""
    try:
        document = _STRICT_JSON.decode(body.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _invalid_json() from None
    if not isinstance(document, dict):
        raise _not_an_object(type(document).__name__)
    return document


def routing_fields(body: bytes) -> RoutingFields:
    """`model` and `stream` of a body parsed with `json` (on the loop: small bodies)."""
    document = parse_json_object(body)
    model = document.get("model")
    stream = document.get("stream")
    return _checked(
        model if isinstance(model, str) else None,
        stream if stream is None or isinstance(stream, bool) else type(stream).__name__,
    )


def scan_routing_fields(body: bytes) -> RoutingFields:
    """`model` and `stream` of a body checked by SQLite (blocking, GIL released: for a thread)."""
    # SQLite's JSON reader stops at a NUL, so a body with one would pass as its prefix; JSON has
    # none outside escapes anyway.
    if b"\0" in body:
        raise _invalid_json()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid_json() from None
    connection = sqlite3.connect(":memory:")
    try:
        # Bytes: SQLite turns an escaped lone surrogate into bytes that are not UTF-8.
        connection.text_factory = bytes
        valid, kind = connection.execute(_DOCUMENT, (text,)).fetchone()
        if not valid:
            raise _invalid_json()
        if kind != b"object":
            raise _not_an_object(_PYTHON_TYPE[kind.decode()])
        # Rows in document order: a later duplicate replaces an earlier one, as in `json`.
        members = {key: (value_type, atom) for key, value_type, atom
                   in connection.execute(_ROUTING_MEMBERS, (text,))}
    finally:
        connection.close()
    model_type, model = members.get(b"model", (None, None))
    stream_type, _ = members.get(b"stream", (b"null", None))
    if stream_type in (b"true", b"false", b"null"):
        stream: bool | str | None = {b"true": True, b"false": False, b"null": None}[stream_type]
    else:
        stream = _PYTHON_TYPE[stream_type.decode()]
    return _checked(model.decode("utf-8", "surrogatepass") if model_type == b"text" else None,
                    stream)


async def read_routing_fields(body: bytes) -> RoutingFields:
    """`model` and `stream` of an inference body; a large body is checked off the event loop."""
    if len(body) <= OFF_LOOP_BYTES:
        return routing_fields(body)
    return await asyncio.to_thread(scan_routing_fields, body)


def _checked(model: str | None, stream: bool | str | None) -> RoutingFields:
    """`stream`: the value, None when absent or null, or the name of its wrong type."""
    if not model:
        raise BadRequest("`model` is required and must be a non-empty string", param="model",
                         code="missing_model")
    if isinstance(stream, str):
        raise BadRequest(f"`stream` must be a boolean, got {stream}", param="stream",
                         code="invalid_type")
    return RoutingFields(model, bool(stream))


def _invalid_json() -> BadRequest:
    return BadRequest("the request body is not valid JSON", code="invalid_json")


def _not_an_object(type_name: str) -> BadRequest:
    return BadRequest(f"the request body must be a JSON object, got {type_name}",
                      code="invalid_json")
