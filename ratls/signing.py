"""Canonical JSON and ECDSA-P256-SHA256 signatures with the attested key.

Canonical JSON is RFC 8785 (JCS): object members sorted by their UTF-16 code units, no
whitespace, UTF-8, JSON string escaping of `"`, `\\` and control characters only, numbers in the
ECMAScript form (integers as digits; other finite floats as the shortest round-trip form). NaN,
infinities, lone surrogates and non-string keys are refused. Any JCS implementation in another
language produces the same bytes, so a management plane can verify pushes without Python.

A signature is the raw `r || s` (2 x 32 bytes, big-endian), hex in JSON.

Signed JSON document (status pushes and other service messages)::

    {"purpose": "<what this is>", "payload": {...}, "certificate_sha256": "<hex>",
     "signature": "<hex r||s over canonical_json of the three other members>"}

`purpose` is inside the signed bytes, so a signature made for one kind of message never
verifies as another.
"""

from __future__ import annotations

import decimal
import hashlib
import math
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding

from ratls.errors import SignatureError

SIGNATURE_SIZE = 64
_COORDINATE_SIZE = 32
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value built from dict, list/tuple, str, int, float, bool, None."""
    parts: list[str] = []
    _write(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"string is not valid Unicode (lone surrogate): {exc}") from exc


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("JSON object keys must be strings")
        out.append("{")
        for i, key in enumerate(
            sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        ):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise ValueError(f"not a JSON value: {type(value).__name__}")


def _string(text: str) -> str:
    out = ['"']
    for char in text:
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif char < " ":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _number(value: float) -> str:
    # ECMAScript Number::toString (RFC 8785 section 3.2.2.3) from Python's shortest round-trip
    # digits: value = 0.DIGITS x 10^point.
    if not math.isfinite(value):
        raise ValueError(f"JSON has no representation for {value!r}")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits_tuple = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digits_tuple.digits))
    point = len(digits) + int(digits_tuple.exponent)
    if len(digits) <= point <= 21:
        text = digits + "0" * (point - len(digits))
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        exponent = point - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        text = f"{mantissa}e{'+' if exponent > 0 else '-'}{abs(exponent)}"
    return sign + text


def sign_bytes(private_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA-P256-SHA256 over `message`, as raw r || s (64 bytes)."""
    r, s = decode_dss_signature(private_key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(_COORDINATE_SIZE, "big") + s.to_bytes(_COORDINATE_SIZE, "big")


def verify_bytes(public_key: ec.EllipticCurvePublicKey, message: bytes, signature: bytes) -> None:
    """Raises SignatureError unless `signature` (r || s) is valid for `message`."""
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError(
            "signature has the wrong length",
            check="signature",
            expected=f"{SIGNATURE_SIZE} bytes",
            actual=f"{len(signature)} bytes",
        )
    der = encode_dss_signature(
        int.from_bytes(signature[:_COORDINATE_SIZE], "big"),
        int.from_bytes(signature[_COORDINATE_SIZE:], "big"),
    )
    try:
        public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError(
            "ECDSA-P256-SHA256 signature does not verify", check="signature"
        ) from None


def certificate_sha256(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def sign_json(
    payload: Mapping[str, Any],
    *,
    purpose: str,
    private_key: ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
) -> dict[str, Any]:
    """A signed JSON document (see the module docstring) for `payload`."""
    if not purpose:
        raise ValueError("purpose must be a non-empty string")
    signed = {
        "purpose": purpose,
        "payload": dict(payload),
        "certificate_sha256": certificate_sha256(certificate),
    }
    signature = sign_bytes(private_key, canonical_json(signed))
    return {**signed, "signature": signature.hex()}


def verify_json(
    document: Mapping[str, Any], *, purpose: str, certificate: x509.Certificate
) -> dict[str, Any]:
    """The payload of a signed JSON document made by `certificate`'s key for `purpose`.

    `certificate` must be one the caller has attested. Raises SignatureError naming the check.
    """
    expected_keys = {"purpose", "payload", "certificate_sha256", "signature"}
    if not isinstance(document, Mapping) or set(document) != expected_keys:
        raise SignatureError(
            "not a signed JSON document",
            check="members",
            expected=sorted(expected_keys),
            actual=sorted(document) if isinstance(document, Mapping) else type(document).__name__,
        )
    for name, expected, what in (
        ("purpose", purpose, "document was signed for another purpose"),
        ("certificate_sha256", certificate_sha256(certificate), "document names another signer"),
    ):
        if document[name] != expected:
            raise SignatureError(what, check=name, expected=expected, actual=document[name])
    if not isinstance(document["payload"], Mapping):
        raise SignatureError("payload is not a JSON object", check="payload")
    signature = _hex_field(document["signature"], "signature")
    public_key = certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise SignatureError("signing certificate has no EC key", check="key_type")
    signed = {k: document[k] for k in ("purpose", "payload", "certificate_sha256")}
    try:
        message = canonical_json(signed)
    except ValueError as exc:
        raise SignatureError(
            f"document is not canonicalisable JSON: {exc}", check="payload"
        ) from exc
    verify_bytes(public_key, message, signature)
    return dict(document["payload"])


def _hex_field(value: Any, name: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        raise SignatureError(f"{name} is not hex", check=name) from None
