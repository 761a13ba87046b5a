"""Properties of the GPU evidence parsers: only their own error class, byte-exact round trips.

Whatever bytes go in, `parse_gpu_report` returns a report that serializes back to them or raises
`GpuEvidenceFormatError`; verification raises only `AttestError` subclasses of the GPU stages;
the chain checker raises only `GpuCertificateError`.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from nvidia_vectors import HOPPER, NOW, PAIRS, nvidia_root
from support.mutations import mutations_of

from attest.errors import (
    GpuCertificateError,
    GpuEvidenceFormatError,
    GpuVerificationError,
)
from attest.nvidia.chain import GpuChainChecker
from attest.nvidia.opaque import ITEM_HEADER, OpaqueFieldType, parse_opaque_data
from attest.nvidia.report import (
    MAX_BLOCK_INDEX,
    MIN_BLOCK_INDEX,
    SIGNATURE_SIZE,
    GpuReport,
    MeasurementBlock,
    MeasurementRequest,
    MeasurementsResponse,
    parse_gpu_report,
)
from attest.nvidia.verify import GpuVerifier

VECTORS = {pair.name: pair.raw for pair in PAIRS}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VERIFIER = GpuVerifier(nvidia_root())


def parse_or_format_error(raw: bytes) -> GpuReport | None:
    try:
        report = parse_gpu_report(raw)
    except GpuEvidenceFormatError:
        return None
    assert report.to_bytes() == raw  # whatever parses, round-trips
    return report


@SETTINGS
@given(st.binary(max_size=5000))
def test_random_bytes_raise_only_format_error(raw: bytes) -> None:
    parse_or_format_error(raw)




@SETTINGS
@given(mutations_of(VECTORS))
def test_mutated_vectors_raise_only_format_error(raw: bytes) -> None:
    parse_or_format_error(raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations_of(VECTORS))
def test_mutated_vectors_never_verify(raw: bytes) -> None:
    if raw == HOPPER.raw or raw.rstrip(b"\x00") == HOPPER.raw:
        return  # unchanged, or only zero padding added
    try:
        VERIFIER.verify(raw, HOPPER.chain, nonce=HOPPER.nonce, now=NOW)
    except (GpuEvidenceFormatError, GpuVerificationError):
        return
    raise AssertionError("a changed report verified")


def test_every_truncation_is_a_format_error() -> None:
    for pair in PAIRS:
        raw = pair.raw
        end = len(parse_gpu_report(raw).signed_bytes) + SIGNATURE_SIZE
        for length in range(end):
            assert parse_or_format_error(raw[:length]) is None, (pair.name, length)


# --- round trips of generated reports ------------------------------------------------------------

BASE = parse_gpu_report(HOPPER.raw)


@st.composite
def blocks(draw) -> tuple[MeasurementBlock, ...]:
    indices = draw(
        st.lists(
            st.integers(MIN_BLOCK_INDEX, MAX_BLOCK_INDEX), unique=True, min_size=0, max_size=20
        )
    )
    return tuple(
        MeasurementBlock(index, draw(st.integers(0, 255)), draw(st.binary(max_size=64)))
        for index in indices
    )


@SETTINGS
@given(
    blocks(),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=SIGNATURE_SIZE, max_size=SIGNATURE_SIZE),
    st.integers(0, 16),
)
def test_generated_reports_round_trip(
    measurement_blocks, nonce: bytes, responder_nonce: bytes, signature: bytes, padding: int
) -> None:
    request = MeasurementRequest(0x11, 0x01, 0xFF, nonce, 0)
    response = MeasurementsResponse(
        0x11, 0, 0, measurement_blocks, responder_nonce, BASE.opaque, signature
    )
    report = GpuReport(request, response, bytes(padding))
    assert parse_gpu_report(report.to_bytes()) == report


# The three fields every report must carry, valid; then items of any type, shuffled.
REQUIRED_ITEMS = [
    (OpaqueFieldType.DRIVER_VERSION, b"550.90.07\x00"),
    (OpaqueFieldType.VBIOS_VERSION, bytes.fromhex("009f009601000000")),
    (OpaqueFieldType.FWID, bytes(48)),
]


@st.composite
def opaque_items(draw) -> bytes:
    known = [int(t) for t in OpaqueFieldType]
    extra = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(known), st.integers(0, 0xFFFF)),
                st.binary(max_size=60),
            ),
            max_size=8,
        )
    )
    required = draw(st.lists(st.sampled_from(REQUIRED_ITEMS), unique=True, max_size=3))
    items = draw(st.permutations([*required, *extra]))
    raw = b"".join(ITEM_HEADER.pack(t, len(v)) + v for t, v in items)
    if draw(st.booleans()) and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    return raw


@SETTINGS
@given(opaque_items())
def test_opaque_data_parses_or_raises_format_error(raw: bytes) -> None:
    try:
        opaque = parse_opaque_data(raw)
    except GpuEvidenceFormatError:
        return
    assert opaque.to_bytes() == raw
    event("parsed")


# --- the chain checker ---------------------------------------------------------------------------

CHAIN_TEXT = HOPPER.chain


@st.composite
def mutated_chains(draw) -> bytes:
    text = bytearray(CHAIN_TEXT)
    for _ in range(draw(st.integers(1, 3))):
        offset = draw(st.integers(0, len(text) - 1))
        text[offset] = draw(
            st.sampled_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/=-\n")
        )
    return bytes(text)


# A changed serial number can turn negative: cryptography warns while reading it, and
# `attest.certs.load_certificate` refuses it (RFC 5280), which is what this test looks for.
@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000), mutated_chains()))
def test_chain_checker_raises_only_certificate_errors(chain: bytes) -> None:
    checker = GpuChainChecker(nvidia_root(), cache_size=0)
    with contextlib.suppress(GpuCertificateError):
        checker.verified_chain(chain)
