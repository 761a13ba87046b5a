"""A simulated TDX attestation authority, so that the whole DCAP path runs in dev and CI.

`SimulatedAuthority` keeps a generated root CA, PCK chain, TCB signing certificate and
attestation key in a directory; `SimulatedQuoteProvider` produces structurally real v4 quotes;
`simulated_collateral` produces the matching TCB info, QE identity and CRLs. The evidence
verifies only against the simulated root passed explicitly to a verifier, never against Intel's.
"""

from attest.simulated.authority import SimulatedAuthority
from attest.simulated.collateral import SimulatedCollateral, simulated_collateral
from attest.simulated.platform import SimulatedPlatform, SimulatedTd
from attest.simulated.provider import SimulatedQuoteProvider

__all__ = [
    "SimulatedAuthority",
    "SimulatedCollateral",
    "SimulatedPlatform",
    "SimulatedQuoteProvider",
    "SimulatedTd",
    "simulated_collateral",
]
