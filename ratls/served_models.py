"""The models a certificate says its TD serves, and the DER of the MODEL_DIGESTS extension.

A served model is a name and a digest (the dm-verity root hash of its image). MODEL_DIGESTS
(`ratls.profile`) lists them as DER, in the extnValue contents:

    ServedModels ::= SEQUENCE SIZE (1..16) OF ServedModel   -- ascending by name, names unique
    ServedModel  ::= SEQUENCE {
        name    UTF8String,     -- 1..64 octets, no control characters
        digest  OCTET STRING }  -- 20..64 octets

One set, one encoding: entries in ascending order of name (code point order, which is also the
order of the UTF-8 octets), definite minimal lengths (`attest.der`), nothing after the outer
SEQUENCE, and no extension at all for an empty set. The decoder accepts that encoding only, so two
verifiers never read two sets from one certificate.

A model may be unnamed (`name=None`): the single-model form of profile v1 before MODEL_DIGESTS,
which states a digest and no name. It is never written into MODEL_DIGESTS, and never next to
other models.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from attest.der import TAG_OCTET_STRING, TAG_SEQUENCE, Tlv, elements
from attest.errors import FormatError
from ratls.errors import CertificateFormatError

TAG_UTF8_STRING = 0x0C

# A dm-verity root hash is one digest of the tree's hash algorithm: 20 (sha1) to 64 (sha512) bytes.
MODEL_DIGEST_MIN_SIZE = 20
MODEL_DIGEST_MAX_SIZE = 64
# Bounds what a verifier reads from an untrusted certificate (at most ~2.2 KB of MODEL_DIGESTS).
MAX_SERVED_MODELS = 16
# The loader's names are 1-64 ASCII characters (`loader/images/names.py`); any UTF-8 within 64
# octets is accepted here, as the certificate profile does not depend on the loader's alphabet.
MODEL_NAME_MAX_SIZE = 64

_WHAT = "model_digests"
_LONG_LENGTH = 0x80


@dataclass(frozen=True)
class ServedModel:
    """One model the certificate says is served: its name (None: unnamed) and its digest."""

    name: str | None
    digest: bytes

    def __post_init__(self) -> None:
        if self.name is not None:
            check_model_name(self.name)
        check_model_digest(self.digest)


def check_model_digest(digest: bytes) -> None:
    if not isinstance(digest, bytes):
        raise CertificateFormatError(
            "model digest must be bytes", check="model_digest_type", actual=type(digest).__name__
        )
    if not MODEL_DIGEST_MIN_SIZE <= len(digest) <= MODEL_DIGEST_MAX_SIZE:
        raise CertificateFormatError(
            "model digest length out of range",
            check="model_digest_length",
            expected=f"{MODEL_DIGEST_MIN_SIZE}..{MODEL_DIGEST_MAX_SIZE} bytes",
            actual=f"{len(digest)} bytes",
        )


def check_model_name(name: str) -> None:
    """1..64 octets of UTF-8 without control characters (names end up in logs and terminals)."""
    if not isinstance(name, str):
        raise CertificateFormatError(
            "model name must be a string", check="model_name", actual=type(name).__name__
        )
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise CertificateFormatError(
            "model name is not encodable as UTF-8", check="model_name", actual=repr(name[:80])
        ) from None
    if not 1 <= size <= MODEL_NAME_MAX_SIZE:
        raise CertificateFormatError(
            "model name length out of range",
            check="model_name",
            expected=f"1..{MODEL_NAME_MAX_SIZE} UTF-8 octets",
            actual=f"{size} octets",
        )
    # C0, DEL and C1: a fixed set, unlike str.isprintable(), which follows Unicode versions.
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        raise CertificateFormatError(
            "model name contains a control character", check="model_name", actual=repr(name)
        )


def served_models(models: Iterable[ServedModel]) -> tuple[ServedModel, ...]:
    """The canonical set for issuance: sorted by name; at most 16, names unique, an unnamed
    model only alone. Raises CertificateFormatError."""
    ordered = tuple(sorted(models, key=lambda m: m.name or ""))
    if len(ordered) > MAX_SERVED_MODELS:
        raise _count_error(len(ordered))
    if len(ordered) > 1 and any(m.name is None for m in ordered):
        raise CertificateFormatError(
            "several models need a name each (an unnamed model can only be served alone)",
            check=f"{_WHAT}.unnamed",
        )
    for previous, model in pairwise(ordered):
        if previous.name == model.name:
            raise _duplicate_error(model)
    return ordered


def encode_model_digests(models: Sequence[ServedModel]) -> bytes:
    """The MODEL_DIGESTS extnValue for a non-empty set of named models, in canonical order."""
    ordered = served_models(models)
    if not ordered:
        raise _count_error(0)
    if ordered[0].name is None:
        raise CertificateFormatError(
            "MODEL_DIGESTS names every model it lists", check=f"{_WHAT}.unnamed"
        )
    entries = b"".join(
        _tlv(
            TAG_SEQUENCE,
            _tlv(TAG_UTF8_STRING, (m.name or "").encode("utf-8"))
            + _tlv(TAG_OCTET_STRING, m.digest),
        )
        for m in ordered
    )
    return _tlv(TAG_SEQUENCE, entries)


def decode_model_digests(value: bytes) -> tuple[ServedModel, ...]:
    """The served models of a MODEL_DIGESTS extnValue, strictly. Raises CertificateFormatError
    naming the check: `model_digests.{tlv,length,tag}` (not DER), `.sequence`, `.trailing_bytes`,
    `.count`, `.entry`, `model_name`, `model_digest_length`, `.duplicate_name`, `.order`."""
    # 1. Exactly one SEQUENCE, covering the value.
    outer = _elements(value)
    if not outer or outer[0][0] != TAG_SEQUENCE:
        raise CertificateFormatError(
            "MODEL_DIGESTS is not a SEQUENCE",
            check=f"{_WHAT}.sequence",
            expected=hex(TAG_SEQUENCE),
            actual=hex(outer[0][0]) if outer else "empty",
        )
    if len(outer) > 1:
        raise CertificateFormatError(
            "MODEL_DIGESTS has bytes after its SEQUENCE",
            check=f"{_WHAT}.trailing_bytes",
            expected=f"{_size(outer[0])} bytes",
            actual=f"{len(value)} bytes",
        )
    # 2. 1..16 entries.
    entries = _elements(outer[0][1])
    if not 1 <= len(entries) <= MAX_SERVED_MODELS:
        raise _count_error(len(entries))
    # 3. Each entry SEQUENCE { UTF8String, OCTET STRING }, each value within its bounds.
    models = tuple(_decode_entry(index, entry) for index, entry in enumerate(entries))
    # 4. Names strictly ascending: sorted, and no name twice.
    for index, (previous, model) in enumerate(pairwise(models), start=1):
        if previous.name == model.name:
            raise _duplicate_error(model)
        if (previous.name or "") > (model.name or ""):
            raise CertificateFormatError(
                f"MODEL_DIGESTS entry {index} is out of order",
                check=f"{_WHAT}.order",
                expected=f"after {previous.name!r}",
                actual=repr(model.name),
            )
    return models


def _decode_entry(index: int, entry: Tlv) -> ServedModel:
    fields = _elements(entry[1]) if entry[0] == TAG_SEQUENCE else []
    tags = [tag for tag, _ in fields]
    if tags != [TAG_UTF8_STRING, TAG_OCTET_STRING]:
        raise CertificateFormatError(
            f"MODEL_DIGESTS entry {index} is not SEQUENCE {{UTF8String, OCTET STRING}}",
            check=f"{_WHAT}.entry",
            expected=[hex(TAG_UTF8_STRING), hex(TAG_OCTET_STRING)],
            actual=[hex(t) for t in tags] if entry[0] == TAG_SEQUENCE else hex(entry[0]),
        )
    try:
        name = fields[0][1].decode("utf-8")
    except UnicodeDecodeError:
        raise CertificateFormatError(
            f"MODEL_DIGESTS entry {index}: name is not UTF-8", check="model_name"
        ) from None
    return ServedModel(name, fields[1][1])


def _elements(data: bytes) -> list[Tlv]:
    try:
        return elements(data, _WHAT)
    except FormatError as exc:
        raise CertificateFormatError(f"MODEL_DIGESTS is not DER: {exc}", check=exc.check) from None


def _count_error(count: int) -> CertificateFormatError:
    return CertificateFormatError(
        "number of served models out of range",
        check=f"{_WHAT}.count",
        expected=f"1..{MAX_SERVED_MODELS}",
        actual=count,
    )


def _duplicate_error(model: ServedModel) -> CertificateFormatError:
    return CertificateFormatError(
        "a model name appears twice", check=f"{_WHAT}.duplicate_name", actual=repr(model.name)
    )


def _tlv(tag: int, content: bytes) -> bytes:
    # DER definite length: short form below 128, else 0x80 | octet count, then big-endian.
    # (attest's writer lives with its simulated authority, which a verifier does not load.)
    size = len(content)
    if size < _LONG_LENGTH:
        return bytes([tag, size]) + content
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, _LONG_LENGTH | len(octets)]) + octets + content


def _size(element: Tlv) -> int:
    """The encoded size of an element read by `elements` (which only reads minimal lengths)."""
    return len(_tlv(element[0], element[1]))
