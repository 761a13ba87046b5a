"""Errors of the `ratls` package: one base class, subclasses by cause.

Evidence problems (`CertificateFormatError`, `CertificateError`, `BindingError`, `ModelDigestError`,
`ModelMeasurementError`) are about what the server presented; `EvidenceUnavailableError` is about
getting it (transport); `AttestationRefused` is what clients raise when a connection is refused,
carrying the full `AttestationResult` and the typed error that decided it. The transparency log's
Merkle proofs fail verification with `InclusionProofError` or `ConsistencyProofError` (bad
evidence); `MerkleTreeError` is a request the tree cannot answer (the log's side). Every error
names the check and, where there is one, the expected and the actual value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from checks.errors import CheckedError

if TYPE_CHECKING:
    from ratls.result import AttestationResult


class RatlsError(CheckedError):
    """Base class of every error raised by `ratls`."""

    stage = "ratls"


class CertificateFormatError(RatlsError):
    """Not an RA-TLS profile v1 certificate: bad DER, wrong key, missing or malformed extension."""

    stage = "parse"


class CertificateError(RatlsError):
    """A well-formed certificate that is not acceptable: signature, validity window, host name."""

    stage = "certificate"


class HostnameMismatchError(CertificateError):
    """The host the client connected to is not among the certificate's subject alternative names."""


class BindingError(RatlsError):
    """The quote's REPORTDATA does not bind this certificate's key (certificate or nonce mode)."""

    stage = "binding"


class ModelDigestError(RatlsError):
    """The served models fail the policy: no model under an allowlist, a served digest not
    allowlisted, or a required digest not served.

    `checks` holds every model check that ran (`attest.policy.PolicyCheck`), not only the failed
    one.
    """

    stage = "validate"

    def __init__(self, message: str, *, checks: tuple[Any, ...] = (), **details: Any) -> None:
        super().__init__(message, **details)
        self.checks = checks


class ModelMeasurementError(RatlsError):
    """The RTMR3 event log does not measure the certificate's models: with one model, its last
    model event measures another digest; with several, one of them has no model event."""

    stage = "verify"


class PolicyFormatError(RatlsError):
    """An appraisal policy file that cannot be read or names an unknown field."""

    stage = "policy"


class NonceError(RatlsError):
    """A nonce outside the accepted length (bad input: nothing is generated or sent)."""

    stage = "nonce"


class EvidenceUnavailableError(RatlsError):
    """Evidence or collateral could not be obtained from the server (transport, HTTP, size)."""

    stage = "transport"


class IssuanceError(RatlsError):
    """The issuer could not produce an identity (quote provider failure, bad settings)."""

    stage = "issue"


class IdentityUnavailableError(RatlsError):
    """The server has no usable identity to present; the handshake is aborted, never downgraded."""

    stage = "identity"


class SignatureError(RatlsError):
    """A signed JSON document whose purpose, signer or signature does not verify."""

    stage = "signature"


class ReceiptError(RatlsError):
    """A receipt that does not match the request, the response, the certificate or its own hash.

    `check` names the receipt field that mismatched.
    """

    stage = "receipt"


class IncompleteReceiptError(ReceiptError):
    """A genuine receipt whose response was cut (client disconnected or engine failed mid-stream).

    `actual` is the receipt's outcome; `check` is "outcome".
    """


class ReceiptChainError(ReceiptError):
    """A sequence of receipts whose hash chain is broken; `index` is the first bad position."""

    def __init__(self, message: str, *, index: int, **kwargs: Any) -> None:
        self.index = index
        super().__init__(f"receipt {index}: {message}", **kwargs)


class MerkleTreeError(RatlsError):
    """A Merkle tree asked for what it does not hold: an index or a size beyond its leaves, or a
    leaf hash of the wrong size."""

    stage = "merkle"


class InclusionProofError(RatlsError):
    """An inclusion proof (RFC 9162 2.1.3) that does not prove the leaf is in the tree of that root.

    `check` is "leaf_index", "hash_size", "proof_length" or "root_hash".
    """

    stage = "inclusion"


class ConsistencyProofError(RatlsError):
    """A consistency proof (RFC 9162 2.1.4) that does not prove the first tree is a prefix of the
    second.

    `check` is "tree_size", "hash_size", "proof_length", "first_root" or "second_root".
    """

    stage = "consistency"


class AttestationRefused(RatlsError):
    """A server whose attestation did not verify: nothing was sent on the connection.

    `result` is the full AttestationResult; `cause` is the typed error (from `attest` or `ratls`)
    of the first failing check.
    """

    stage = "attestation"

    def __init__(self, result: AttestationResult, cause: Exception | None = None) -> None:
        self.result = result
        self.cause = cause
        first = result.errors[0] if result.errors else None
        reason = f"[{first.stage}] {first.message}" if first else "not verified"
        super().__init__(f"server attestation refused: {reason}")
