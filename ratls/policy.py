"""The appraisal policy of RA-TLS: `attest`'s TD policy plus the model digest allowlist.

A policy file is an `attest` policy file (`.toml` or `.json`) with one more optional key:

    allowed_model_digests = ["<hex dm-verity root hash>", ...]

Absent: the model digest is not pinned (results say so). An empty list rejects every server,
and a certificate without a model digest (no model loaded) never matches a pinned list. Unknown
keys are errors, as in `attest`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from attest.errors import PolicyFormatError
from attest.policy import Policy, PolicyOutcome, validate
from attest.verify import VerifiedQuote
from ratls.profile import MODEL_DIGEST_MAX_SIZE, MODEL_DIGEST_MIN_SIZE

MODEL_DIGESTS_KEY = "allowed_model_digests"


@dataclass(frozen=True)
class AppraisalPolicy:
    """What a server must show: `tdx` (measurements, TD attributes, TCB) and the model digest."""

    tdx: Policy = field(default_factory=Policy)
    allowed_model_digests: frozenset[bytes] | None = None

    @classmethod
    def default(cls) -> AppraisalPolicy:
        """attest's strict defaults (no debug TD, UpToDate only, no advisories); nothing pinned."""
        return cls()

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], *, source: str = "policy"
    ) -> AppraisalPolicy:
        """From a parsed policy file. Raises attest's PolicyFormatError naming the field."""
        if not isinstance(document, Mapping):
            raise PolicyFormatError(f"{source}: a policy is a table/object", check=source)
        fields = dict(document)
        digests = fields.pop(MODEL_DIGESTS_KEY, None)
        return cls(
            tdx=Policy.from_mapping(fields, source=source),
            allowed_model_digests=None if digests is None else parse_model_digests(digests),
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

    def validate_quote(self, verified: VerifiedQuote, *, report_data: bytes) -> PolicyOutcome:
        """attest's validate stage, with REPORTDATA pinned to the binding formula's value.

        Raises attest's PolicyError naming the first failed check (all checks in `.checks`).
        """
        return validate(verified, self.tdx.with_report_data(report_data))


def parse_model_digests(values: Any) -> frozenset[bytes]:
    """The allowlist from its file form, a list of hex strings. Raises PolicyFormatError."""
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise PolicyFormatError(
            f"{MODEL_DIGESTS_KEY} must be a list of hex strings", check=MODEL_DIGESTS_KEY
        )
    digests = set()
    for value in values:
        try:
            digest = bytes.fromhex(value)
        except ValueError:
            raise PolicyFormatError(
                f"{MODEL_DIGESTS_KEY} entry is not hex", check=MODEL_DIGESTS_KEY, actual=value
            ) from None
        if not MODEL_DIGEST_MIN_SIZE <= len(digest) <= MODEL_DIGEST_MAX_SIZE:
            raise PolicyFormatError(
                f"{MODEL_DIGESTS_KEY} entry has the wrong length",
                check=MODEL_DIGESTS_KEY,
                expected=f"{MODEL_DIGEST_MIN_SIZE}..{MODEL_DIGEST_MAX_SIZE} bytes",
                actual=f"{len(digest)} bytes",
            )
        digests.add(digest)
    return frozenset(digests)
