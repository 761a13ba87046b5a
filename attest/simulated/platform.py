"""What the simulated authority pretends to be: the platform (PCK certificate and TCB), its
quoting enclave, and the trust domain whose quotes it produces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from attest.pck import SGX_EXTENSION_OID
from attest.quote import TD_ATTRIBUTE_SEPT_VE_DISABLE
from attest.simulated.der_writer import boolean, enumerated, integer, octet_string, oid, sequence


def _tag(label: str, size: int) -> bytes:
    """A recognisable, obviously synthetic value of `size` bytes."""
    return hashlib.sha512(b"SIMULATED " + label.encode()).digest()[:size]


@dataclass(frozen=True)
class SimulatedPlatform:
    """The platform the PCK certificate describes, and the TCB it runs.

    Defaults mirror a current Sapphire-Rapids-class platform (real quotes in the vectors) with
    synthetic identifiers. The generated collateral grades exactly this TCB.
    """

    fmspc: bytes = bytes.fromhex("00a06f000000")
    pce_id: bytes = bytes(2)
    ppid: bytes = field(default_factory=lambda: _tag("PPID", 16))
    platform_instance_id: bytes = field(default_factory=lambda: _tag("platform instance", 16))
    sgx_tcb_components: tuple[int, ...] = (3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0)
    pce_svn: int = 13
    cpu_svn: bytes = bytes.fromhex("03030202040100050000000000000000")
    sgx_type: int = 1  # Scalable
    dynamic_platform: bool = True
    cached_keys: bool = True
    smt_enabled: bool = True
    # TEE_TCB_SVN: [0] TDX module SVN, [1] module major version, [2] late microcode SVN.
    tee_tcb_svn: bytes = bytes([5, 1, 3]) + bytes(13)
    mr_seam: bytes = field(default_factory=lambda: _tag("TDX module", 48))
    # The simulated TD quoting enclave (its report is what the PCK key signs).
    qe_mr_enclave: bytes = field(default_factory=lambda: _tag("TD_QE enclave", 32))
    qe_mr_signer: bytes = field(default_factory=lambda: _tag("TD_QE signer", 32))
    qe_isv_prod_id: int = 2
    qe_isv_svn: int = 4
    qe_cpu_svn: bytes = bytes.fromhex("0303191b04ff00060000000000000000")
    qe_attributes: bytes = bytes.fromhex("1500000000000000e700000000000000")
    tcb_evaluation_data_number: int = 18
    tcb_date: str = "2025-01-01T00:00:00Z"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sgx_tcb_components", tuple(self.sgx_tcb_components))
        sizes = {
            "fmspc": 6,
            "pce_id": 2,
            "ppid": 16,
            "platform_instance_id": 16,
            "cpu_svn": 16,
            "tee_tcb_svn": 16,
            "mr_seam": 48,
            "qe_mr_enclave": 32,
            "qe_mr_signer": 32,
            "qe_cpu_svn": 16,
            "qe_attributes": 16,
        }
        for name, size in sizes.items():
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                raise ValueError(f"SimulatedPlatform.{name} must be {size} bytes")
        if len(self.sgx_tcb_components) != 16 or not all(
            0 <= c <= 255 for c in self.sgx_tcb_components
        ):
            raise ValueError("SimulatedPlatform.sgx_tcb_components must be 16 values in 0..255")
        if not 0 <= self.pce_svn <= 0xFFFF or self.sgx_type not in (0, 1, 2):
            raise ValueError("SimulatedPlatform.pce_svn or sgx_type out of range")

    @property
    def tdx_module_major(self) -> int:
        return self.tee_tcb_svn[1]

    def sgx_extension(self) -> bytes:
        """DER of the PCK certificate's SGX extension, laid out as in Intel's PCK profile."""

        def entry(arc: str, value: bytes) -> bytes:
            return sequence(oid(f"{SGX_EXTENSION_OID}.{arc}"), value)

        tcb = [entry(f"2.{n}", integer(svn)) for n, svn in enumerate(self.sgx_tcb_components, 1)]
        tcb.append(entry("2.17", integer(self.pce_svn)))
        tcb.append(entry("2.18", octet_string(self.cpu_svn)))
        configuration = sequence(
            entry("7.1", boolean(self.dynamic_platform)),
            entry("7.2", boolean(self.cached_keys)),
            entry("7.3", boolean(self.smt_enabled)),
        )
        return sequence(
            entry("1", octet_string(self.ppid)),
            entry("2", sequence(*tcb)),
            entry("3", octet_string(self.pce_id)),
            entry("4", octet_string(self.fmspc)),
            entry("5", enumerated(self.sgx_type)),
            entry("6", octet_string(self.platform_instance_id)),
            entry("7", configuration),
        )


@dataclass(frozen=True)
class SimulatedTd:
    """The measured identity of the simulated trust domain (RTMRs live in the provider)."""

    mr_td: bytes = field(default_factory=lambda: _tag("MRTD", 48))
    mr_config_id: bytes = bytes(48)
    mr_owner: bytes = bytes(48)
    mr_owner_config: bytes = bytes(48)
    # SEPT_VE_DISABLE set, DEBUG clear: what a production TD must show.
    td_attributes: int = TD_ATTRIBUTE_SEPT_VE_DISABLE
    xfam: int = 0x0000_0000_0006_02E7
    initial_rtmrs: tuple[bytes, bytes, bytes, bytes] = field(
        default_factory=lambda: (
            _tag("RTMR0 firmware", 48),
            _tag("RTMR1 boot loader", 48),
            _tag("RTMR2 kernel", 48),
            bytes(48),
        )
    )

    def __post_init__(self) -> None:
        for name in ("mr_td", "mr_config_id", "mr_owner", "mr_owner_config"):
            if len(getattr(self, name)) != 48:
                raise ValueError(f"SimulatedTd.{name} must be 48 bytes")
        if len(self.initial_rtmrs) != 4 or any(len(r) != 48 for r in self.initial_rtmrs):
            raise ValueError("SimulatedTd.initial_rtmrs must be four 48-byte values")
        if not (0 <= self.td_attributes < 1 << 64 and 0 <= self.xfam < 1 << 64):
            raise ValueError("SimulatedTd.td_attributes and xfam are 64-bit values")
