"""Quotes and RTMR extension through Intel's libtdx_attest (for kernels without configfs-tsm).

The library (package libtdx-attest, header `tdx_attest.h` in Intel's
SGXDataCenterAttestationPrimitives) talks to /dev/tdx_guest or to the host's quote generation
service itself; we call it through ctypes. There is no TDX here, so tests load a stub library
that they compile from tests/support/libtdx_attest_stub.c.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from typing import cast

from attest.errors import (
    ProviderUnavailableError,
    QuoteGenerationError,
    RtmrExtendError,
)
from attest.providers.base import TeeName, require_report_data
from attest.quote import REPORT_DATA_SIZE
from attest.rtmr import RTMR_SIZE, require_extend_request

logger = logging.getLogger(__name__)

DEFAULT_LIBRARY = "libtdx_attest.so.1"

# tdx_attest_error_t, with the meaning tdx_attest.h gives each code.
TDX_ATTEST_SUCCESS = 0x0000
TDX_ATTEST_ERRORS: dict[int, tuple[str, str]] = {
    0x0001: ("TDX_ATTEST_ERROR_UNEXPECTED", "unexpected internal error"),
    0x0002: ("TDX_ATTEST_ERROR_INVALID_PARAMETER", "a parameter is incorrect"),
    0x0003: ("TDX_ATTEST_ERROR_OUT_OF_MEMORY", "not enough memory"),
    0x0004: ("TDX_ATTEST_ERROR_VSOCK_FAILURE", "vsock communication with the host failed"),
    0x0005: ("TDX_ATTEST_ERROR_REPORT_FAILURE", "failed to get the TD report"),
    0x0006: ("TDX_ATTEST_ERROR_EXTEND_FAILURE", "failed to extend the RTMR"),
    0x0007: ("TDX_ATTEST_ERROR_NOT_SUPPORTED", "the requested feature is not supported"),
    0x0008: ("TDX_ATTEST_ERROR_QUOTE_FAILURE", "the quote generation service failed"),
    0x0009: ("TDX_ATTEST_ERROR_BUSY", "the device driver is busy"),
    0x000A: ("TDX_ATTEST_ERROR_DEVICE_FAILURE", "cannot access the TDX attestation device"),
    0x000B: ("TDX_ATTEST_ERROR_INVALID_RTMR_INDEX", "only RTMR 2 and 3 can be extended"),
    0x000C: (
        "TDX_ATTEST_ERROR_UNSUPPORTED_ATT_KEY_ID",
        "the platform supports none of the requested attestation key IDs",
    ),
}
# These mean "no usable TDX quoting here" rather than "this attempt failed".
_UNAVAILABLE_CODES = frozenset({0x0007, 0x000A})

TDX_RTMR_EVENT_VERSION = 1


class _Uuid(ctypes.Structure):
    _fields_ = [("d", ctypes.c_uint8 * 16)]


class _ReportData(ctypes.Structure):
    _fields_ = [("d", ctypes.c_uint8 * REPORT_DATA_SIZE)]


class _RtmrEvent(ctypes.Structure):
    # tdx_rtmr_event_t, #pragma pack(1), without the flexible event_data[] (always empty:
    # the library refuses event data).
    _pack_ = 1
    _fields_ = [
        ("version", ctypes.c_uint32),
        ("rtmr_index", ctypes.c_uint64),
        ("extend_data", ctypes.c_uint8 * RTMR_SIZE),
        ("event_type", ctypes.c_uint32),
        ("event_data_size", ctypes.c_uint32),
    ]


def describe_error(code: int) -> str:
    name, meaning = TDX_ATTEST_ERRORS.get(code, (f"0x{code:04x}", "unknown error code"))
    return f"{name}: {meaning}"


class LibTdxAttest:
    """`QuoteProvider` and RTMR extender backed by libtdx_attest."""

    def __init__(self, library: str | os.PathLike[str] = DEFAULT_LIBRARY) -> None:
        try:
            self._lib = ctypes.CDLL(os.fspath(library))
        except OSError as exc:
            raise ProviderUnavailableError(
                f"cannot load libtdx_attest from {os.fspath(library)!r}: {exc}",
                check="libtdx_attest",
            ) from exc
        self._get_quote = self._function(
            "tdx_att_get_quote",
            [
                ctypes.POINTER(_ReportData),
                ctypes.POINTER(_Uuid),
                ctypes.c_uint32,
                ctypes.POINTER(_Uuid),
                ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)),
                ctypes.POINTER(ctypes.c_uint32),
                ctypes.c_uint32,
            ],
        )
        self._free_quote = self._function("tdx_att_free_quote", [ctypes.POINTER(ctypes.c_uint8)])
        self._extend = self._function("tdx_att_extend", [ctypes.POINTER(_RtmrEvent)])

    @property
    def tee(self) -> TeeName:
        return "tdx"

    def get_quote(self, report_data: bytes) -> bytes:
        report_data = require_report_data(report_data)
        request = _ReportData()
        ctypes.memmove(request.d, report_data, REPORT_DATA_SIZE)
        selected_key = _Uuid()
        quote_ptr = ctypes.POINTER(ctypes.c_uint8)()
        quote_size = ctypes.c_uint32(0)
        # No key-ID list: the platform's default (ECDSA P-256) key, reported in selected_key.
        code = self._get_quote(
            ctypes.byref(request),
            None,
            0,
            ctypes.byref(selected_key),
            ctypes.byref(quote_ptr),
            ctypes.byref(quote_size),
            0,
        )
        try:
            if code != TDX_ATTEST_SUCCESS:
                error = (
                    ProviderUnavailableError if code in _UNAVAILABLE_CODES else QuoteGenerationError
                )
                raise error(
                    f"tdx_att_get_quote failed: {describe_error(code)}",
                    check="tdx_att_get_quote",
                    expected="TDX_ATTEST_SUCCESS",
                    actual=f"0x{code:04x}",
                )
            if not quote_ptr or quote_size.value == 0:
                raise QuoteGenerationError(
                    "tdx_att_get_quote reported success but returned no quote",
                    check="tdx_att_get_quote",
                )
            quote = ctypes.string_at(quote_ptr, quote_size.value)
        finally:
            if quote_ptr:
                self._free_quote(quote_ptr)
        logger.debug(
            "libtdx_attest quote of %d bytes, key id %s", len(quote), bytes(selected_key.d).hex()
        )
        return quote

    def extend(self, index: int, digest: bytes) -> None:
        """Extend RTMR `index` with a 48-byte digest (tdx_att_extend, RTMR 2 or 3 only)."""
        index, digest = require_extend_request(index, digest)
        event = _RtmrEvent(version=TDX_RTMR_EVENT_VERSION, rtmr_index=index)
        ctypes.memmove(event.extend_data, digest, RTMR_SIZE)
        code = self._extend(ctypes.byref(event))
        if code != TDX_ATTEST_SUCCESS:
            raise RtmrExtendError(
                f"tdx_att_extend of RTMR{index} failed: {describe_error(code)}",
                check="tdx_att_extend",
                expected="TDX_ATTEST_SUCCESS",
                actual=f"0x{code:04x}",
            )

    def _function(self, name: str, argtypes: list[type]) -> Callable[..., int]:
        try:
            function = getattr(self._lib, name)
        except AttributeError:
            raise ProviderUnavailableError(
                f"the loaded libtdx_attest has no {name}", check="libtdx_attest"
            ) from None
        function.argtypes = argtypes
        function.restype = ctypes.c_uint32
        # restype c_uint32: ctypes converts every result to an int.
        return cast("Callable[..., int]", function)
