"""libtdx_attest through ctypes, against a stub library compiled from tests/support (no TDX
here)."""

from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path

import pytest
from support.libtdx_stub import build_stub_library

from attest.errors import ProviderUnavailableError, QuoteGenerationError, RtmrExtendError
from attest.providers import LibTdxAttest, QuoteProvider
from attest.providers.libtdx import TDX_ATTEST_ERRORS

REPORT_DATA = hashlib.sha512(b"report data").digest()
V4_REPORT_DATA = slice(568, 632)


@pytest.fixture(scope="session")
def stub_library(tmp_path_factory) -> Path:
    return build_stub_library(tmp_path_factory.mktemp("libtdx"))


@pytest.fixture
def stub(stub_library: Path):
    """The stub's control functions; the same loaded image the provider calls into."""
    lib = ctypes.CDLL(str(stub_library))
    lib.stub_set_result(0)
    yield lib
    lib.stub_set_result(0)


@pytest.fixture
def real_quote(vectors_dir: Path) -> bytes:
    return (vectors_dir / "tdx" / "quotes" / "dcapqvl_tdx_quote_v4.bin").read_bytes()


def set_quote(stub, quote: bytes) -> None:
    stub.stub_set_quote(quote, ctypes.c_uint32(len(quote)))


def test_quote_carries_our_report_data_and_the_buffer_is_freed(stub, stub_library, real_quote):
    set_quote(stub, real_quote)
    provider = LibTdxAttest(stub_library)

    quote = provider.get_quote(REPORT_DATA)

    assert isinstance(provider, QuoteProvider) and provider.tee == "tdx"
    assert quote[V4_REPORT_DATA] == REPORT_DATA
    assert quote[: V4_REPORT_DATA.start] == real_quote[: V4_REPORT_DATA.start]
    assert quote[V4_REPORT_DATA.stop :] == real_quote[V4_REPORT_DATA.stop :]
    assert stub.stub_outstanding_quotes() == 0


UNAVAILABLE = {0x0007, 0x000A}


@pytest.mark.parametrize("code", sorted(TDX_ATTEST_ERRORS))
def test_every_error_code_maps_to_a_named_error(stub, stub_library, real_quote, code):
    set_quote(stub, real_quote)
    stub.stub_set_result(code)
    name, meaning = TDX_ATTEST_ERRORS[code]
    expected = ProviderUnavailableError if code in UNAVAILABLE else QuoteGenerationError

    with pytest.raises(expected) as caught:
        LibTdxAttest(stub_library).get_quote(REPORT_DATA)

    assert type(caught.value) is expected
    assert name in str(caught.value) and meaning in str(caught.value)
    assert caught.value.actual == f"0x{code:04x}"
    assert stub.stub_outstanding_quotes() == 0


def test_unknown_error_code_is_still_an_error(stub, stub_library, real_quote):
    set_quote(stub, real_quote)
    stub.stub_set_result(0x1234)
    with pytest.raises(QuoteGenerationError, match="0x1234: unknown error code"):
        LibTdxAttest(stub_library).get_quote(REPORT_DATA)


def test_extend_passes_a_version_1_event_with_no_event_data(stub, stub_library):
    digest = hashlib.sha384(b"model").digest()
    LibTdxAttest(stub_library).extend(3, digest)

    version, index, size = ctypes.c_uint32(), ctypes.c_uint64(), ctypes.c_uint32()
    data = (ctypes.c_uint8 * 48)()
    stub.stub_last_extend(ctypes.byref(version), ctypes.byref(index), data, ctypes.byref(size))
    assert (version.value, index.value, bytes(data), size.value) == (1, 3, digest, 0)


def test_extend_error_code_is_an_rtmr_extend_error(stub, stub_library):
    stub.stub_set_result(0x0006)
    with pytest.raises(RtmrExtendError, match="TDX_ATTEST_ERROR_EXTEND_FAILURE"):
        LibTdxAttest(stub_library).extend(2, bytes(48))


@pytest.mark.parametrize(("index", "digest"), [(0, bytes(48)), (1, bytes(48)), (3, bytes(32))])
def test_bad_extend_request_never_reaches_the_library(stub, stub_library, index, digest):
    calls = stub.stub_extend_calls()
    with pytest.raises(RtmrExtendError):
        LibTdxAttest(stub_library).extend(index, digest)
    assert stub.stub_extend_calls() == calls


def test_missing_library_is_unavailable(tmp_path):
    with pytest.raises(ProviderUnavailableError, match="cannot load libtdx_attest"):
        LibTdxAttest(tmp_path / "libtdx_attest.so.1")


def test_library_without_the_functions_is_unavailable():
    with pytest.raises(ProviderUnavailableError, match="has no tdx_att_get_quote"):
        LibTdxAttest("libc.so.6")
