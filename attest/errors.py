"""Errors of the `attest` package, one class per stage.

parse -> `FormatError`; verify -> `VerificationError` (and `CollateralError` when collateral is
malformed, expired or inconsistent); fetch -> `CollateralUnavailableError`; validate ->
`PolicyError`. Every error names the check that failed and, where there is one, the expected and
the actual value, so that a caller can show a tenant exactly why evidence was refused.
"""

from __future__ import annotations

from typing import Any

from checks.errors import CheckedError


class AttestError(CheckedError):
    """Base class of every error raised by `attest`."""

    stage = "attest"


class FormatError(AttestError):
    """Bytes or documents that do not have the structure they claim (parse stage)."""

    stage = "parse"


class VerificationError(AttestError):
    """Evidence whose signatures, chains, revocation or TCB status do not verify (verify stage)."""

    stage = "verify"


class CollateralError(VerificationError):
    """Collateral that is malformed, outside its validity window, or does not fit the quote."""


class CollateralFormatError(CollateralError):
    """A collateral document that does not have the expected structure (JSON, hex, PEM, DER)."""


class CollateralExpiredError(CollateralError):
    """A collateral item (TCB info, QE identity, CRL) not valid at the verification time."""


class CollateralSignatureError(CollateralError):
    """A collateral signature that does not verify, or an issuer that does not chain to the root."""


class CollateralMismatchError(CollateralError):
    """Collateral for something else: wrong id or version, FMSPC, PCE-ID or CRL issuer."""


class CertificateError(VerificationError):
    """A certificate chain that does not lead to the trust root, or a malformed certificate."""


class CertificateValidityError(CertificateError):
    """A certificate not valid at the verification time (expired or not yet valid)."""


class RevokedError(VerificationError):
    """A certificate listed on its issuer's CRL."""


class SignatureError(VerificationError):
    """An evidence signature that does not verify: the quote's, or the QE report's."""


class KeyBindingError(VerificationError):
    """The QE report data does not bind the attestation key and QE auth data."""


class QeIdentityError(VerificationError):
    """A quoting enclave that is not the one the QE identity describes."""


class TdxModuleError(VerificationError):
    """A TDX module (MRSIGNERSEAM, SEAMATTRIBUTES, major version) the TCB info does not list."""


class TcbLevelError(VerificationError):
    """No TCB level of the collateral matches the platform, module or QE ("not supported")."""


class TcbRevokedError(TcbLevelError):
    """The matched TCB level is Revoked."""


class CollateralUnavailableError(AttestError):
    """Collateral could not be obtained: network down, PCS error, offline mode with a cold cache."""

    stage = "collateral"


class HttpGetError(CollateralUnavailableError):
    """A bounded HTTP GET (`attest.http_get.bounded_get`) failed; the subclass says how."""


class HttpStatusError(HttpGetError):
    """The server answered with a status other than 200 (`status_code`; `detail` says why)."""

    def __init__(self, message: str, *, status_code: int, detail: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.status_code = status_code
        self.detail = detail


class ResponseTooLargeError(HttpGetError):
    """The response body went past the caller's size limit (`max_size`)."""

    def __init__(self, message: str, *, max_size: int, **details: Any) -> None:
        super().__init__(message, **details)
        self.max_size = max_size


class HttpTransportError(HttpGetError):
    """No usable answer: connection, TLS, timeout or protocol failure (`error`, the client's)."""

    def __init__(self, message: str, *, error: Exception, **details: Any) -> None:
        super().__init__(message, **details)
        self.error = error


class PolicyError(AttestError):
    """Verified evidence that the appraisal policy rejects (validate stage).

    `checks` holds every check that ran (see `attest.policy.PolicyCheck`), not only the failed one.
    """

    stage = "validate"

    def __init__(self, message: str, *, checks: tuple[Any, ...] = (), **details: Any) -> None:
        super().__init__(message, **details)
        self.checks = checks


class PolicyFormatError(AttestError):
    """A policy file that cannot be read or names an unknown field."""

    stage = "policy"


class ProviderError(AttestError):
    """A quote provider could not produce a quote.

    Causes: no TDX device, a generation race, a library error.
    """

    stage = "provider"


class ProviderUnavailableError(ProviderError):
    """The quote interface is absent or is not TDX.

    Causes: no configfs-tsm entry, a wrong TSM, no library.
    """


class ProviderRaceError(ProviderError):
    """Another writer kept changing the configfs-tsm report entry while we read our quote."""


class QuoteGenerationError(ProviderError):
    """The interface exists but failed to produce a quote (kernel I/O error, library error code)."""


class RtmrExtendError(ProviderError):
    """An RTMR could not be extended (bad index or digest, device or library failure)."""


class AuthorityStoreError(AttestError):
    """The simulated authority's directory is incomplete, corrupt or has unsafe permissions."""

    stage = "simulated"


# --- NVIDIA GPU evidence (`attest.nvidia`) ------------------------------------------------------
# Apart from the TDX classes above, so that catching one kind of evidence's errors never catches
# the other's; each derives from the stage class it belongs to.


class GpuEvidenceFormatError(FormatError):
    """A GPU attestation report (SPDM GET_MEASUREMENTS request and response) that does not have
    the structure it claims; `check` names the field."""


class GpuVerificationError(VerificationError):
    """GPU evidence whose chain, signature, nonce, revocation or collateral does not verify."""


class GpuCertificateError(GpuVerificationError):
    """A device certificate chain that does not lead to the trust root, or whose leaf does not
    fit the report (not an end-entity certificate, no FWID, another FWID)."""


class GpuCertificateValidityError(GpuCertificateError):
    """A device certificate not valid at the verification time (expired or not yet valid)."""


class GpuSignatureError(GpuVerificationError):
    """The report's signature does not verify with the leaf certificate's key."""


class GpuNonceError(GpuVerificationError):
    """The requester nonce in the report is not the nonce the verifier asked for."""


class GpuRevokedError(GpuVerificationError):
    """A device certificate that its OCSP status says is revoked."""


class GpuCollateralError(GpuVerificationError):
    """Collateral given for the GPU evidence that cannot be used: an OCSP status missing for a
    certificate of the chain, not current, or unknown."""


class GpuPolicyError(PolicyError):
    """Verified GPU evidence that the GPU appraisal policy rejects (`checks` holds every check)."""


class GpuPolicyFormatError(PolicyFormatError):
    """A GPU policy that cannot be read or names an unknown field."""
