"""Choosing the hardware quote provider and RTMR extender; never the simulated one."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.libtdx_stub import build_stub_library

from attest.errors import ProviderUnavailableError
from attest.providers import (
    ConfigfsTsmProvider,
    LibTdxAttest,
    SysfsRtmrExtender,
    TdxGuestIoctlExtender,
    tdx_quote_provider,
    tdx_rtmr_extender,
)


@pytest.fixture(scope="module")
def stub_library(tmp_path_factory) -> Path:
    return build_stub_library(tmp_path_factory.mktemp("libtdx"))


def test_configfs_tsm_is_preferred(tmp_path, stub_library):
    provider = tdx_quote_provider(tsm_report_path=tmp_path, libtdx_library=str(stub_library))
    assert isinstance(provider, ConfigfsTsmProvider)


def test_libtdx_when_the_kernel_has_no_configfs_tsm(tmp_path, stub_library):
    provider = tdx_quote_provider(
        tsm_report_path=tmp_path / "absent", libtdx_library=str(stub_library)
    )
    assert isinstance(provider, LibTdxAttest)


def test_neither_interface_is_an_error_naming_both(tmp_path):
    with pytest.raises(ProviderUnavailableError) as caught:
        tdx_quote_provider(
            tsm_report_path=tmp_path / "absent", libtdx_library=str(tmp_path / "libtdx.so")
        )
    assert str(tmp_path / "absent") in str(caught.value)
    assert "cannot load libtdx_attest" in str(caught.value)


def test_rtmr_extender_prefers_sysfs_then_the_device(tmp_path):
    device = tmp_path / "tdx_guest"
    device.write_bytes(b"")
    assert isinstance(
        tdx_rtmr_extender(measurements_path=tmp_path, device=device), SysfsRtmrExtender
    )
    assert isinstance(
        tdx_rtmr_extender(measurements_path=tmp_path / "absent", device=device),
        TdxGuestIoctlExtender,
    )
    with pytest.raises(ProviderUnavailableError, match="no RTMR interface"):
        tdx_rtmr_extender(measurements_path=tmp_path / "absent", device=tmp_path / "absent")
