"""Properties of the attest parsers: only their own error class, and byte-exact round trips."""

from __future__ import annotations

import contextlib
import json

from attest_vectors import BASE_BUNDLE, QUOTE_NAMES, TRAILING_DATA_QUOTE, bundle_path, quote_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.mutations import mutations_of

from attest import quote as q
from attest.collateral_load import collateral_from_bundle_json
from attest.errors import CollateralFormatError, FormatError, PolicyFormatError
from attest.pck import parse_sgx_extension
from attest.policy import Policy
from attest.quote import parse_quote

QUOTES = {name: quote_bytes(name) for name in QUOTE_NAMES}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_format_error(raw: bytes) -> q.Quote | None:
    try:
        quote = parse_quote(raw)
    except FormatError:
        return None
    assert quote.to_bytes() == raw  # whatever parses, round-trips
    return quote


@SETTINGS
@given(st.binary(max_size=6000))
def test_random_bytes_raise_only_format_error(raw: bytes) -> None:
    parse_or_format_error(raw)




@SETTINGS
@given(mutations_of(QUOTES))
def test_mutated_vectors_raise_only_format_error(raw: bytes) -> None:
    parse_or_format_error(raw)


def test_vectors_round_trip() -> None:
    for name, raw in QUOTES.items():
        assert (
            parse_quote(raw, unsafe_allow_trailing_data=name == TRAILING_DATA_QUOTE).to_bytes()
            == raw
        )


def blob(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


@st.composite
def der_certificates(draw) -> bytes:
    """Any DER SEQUENCE: the parser checks the outer TLV; certificates are verify's business."""
    content = draw(st.binary(max_size=300))
    n = len(content)
    length = (
        bytes([n])
        if n < 0x80
        else bytes([0x81, n])
        if n < 0x100
        else bytes([0x82]) + n.to_bytes(2, "big")
    )
    return b"\x30" + length + content


@st.composite
def quotes(draw) -> q.Quote:
    version = draw(st.sampled_from([4, 5]))
    td15 = version == 5 and draw(st.booleans())
    header = q.QuoteHeader(
        version,
        q.ATT_KEY_TYPE_ECDSA_P256,
        q.TEE_TYPE_TDX,
        draw(blob(4)),
        draw(blob(16)),
        draw(blob(20)),
    )
    body = q.TdReport(
        **{name: draw(blob(span.size)) for name, span, _ in q._TD_REPORT10.fields[:10]},
        rtmr=tuple(draw(blob(48)) for _ in range(4)),
        report_data=draw(blob(64)),
        tee_tcb_svn2=draw(blob(16)) if td15 else None,
        mr_service_td=draw(blob(48)) if td15 else None,
    )
    qe_report = q.EnclaveReport(
        **{
            name: draw(st.integers(0, (1 << 8 * span.size) - 1))
            if is_integer
            else draw(blob(span.size))
            for name, span, is_integer in q._ENCLAVE_REPORT.fields
        }
    )
    certification = q.QeReportCertificationData(
        qe_report=qe_report,
        qe_report_signature=draw(blob(64)),
        qe_auth_data=draw(st.binary(max_size=64)),
        pck_cert_chain=q.PckCertChain(
            tuple(draw(st.lists(der_certificates(), min_size=1, max_size=3))),
            nul_terminated=draw(st.booleans()),
        ),
    )
    padding = bytes(draw(st.integers(0, 100)))
    return q.Quote(header, body, draw(blob(64)), draw(blob(64)), certification, padding)


@SETTINGS
@given(quotes())
def test_generated_structures_round_trip(quote: q.Quote) -> None:
    raw = quote.to_bytes()
    assert parse_quote(raw) == quote
    assert raw.startswith(quote.signed_bytes)


@SETTINGS
@given(st.binary(max_size=600))
def test_pck_extension_random_bytes(raw: bytes) -> None:
    with contextlib.suppress(FormatError):
        parse_sgx_extension(raw)


BUNDLE_TEXT = bundle_path(BASE_BUNDLE).read_text()


@SETTINGS
@given(st.data())
def test_mutated_bundles_raise_only_collateral_format_error(data) -> None:
    document = json.loads(BUNDLE_TEXT)
    key = data.draw(st.sampled_from(sorted(document)))
    value = document[key]
    start = data.draw(st.integers(0, len(value) - 1))
    document[key] = value[:start] + data.draw(st.text(max_size=4)) + value[start + 1 :]
    with contextlib.suppress(CollateralFormatError):
        collateral_from_bundle_json(json.dumps(document))


POLICY_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=100),
    lambda children: st.lists(children, max_size=3),
    max_leaves=5,
)
POLICY_KEYS = st.sampled_from([*sorted(Policy.model_fields), "allow_debug", "mrtd", ""])


@SETTINGS
@given(st.dictionaries(POLICY_KEYS, POLICY_VALUES, max_size=4))
def test_policy_mappings_raise_only_policy_format_error(document: dict) -> None:
    with contextlib.suppress(PolicyFormatError):
        Policy.from_mapping(document)
