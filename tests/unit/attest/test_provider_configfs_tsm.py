"""configfs-tsm provider against a directory that emulates the kernel (no TDX here)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fake_configfs_tsm import FakeKernelTsm, fake_quote

from attest.errors import (
    ProviderError,
    ProviderRaceError,
    ProviderUnavailableError,
    QuoteGenerationError,
)
from attest.providers import ConfigfsTsmProvider, QuoteProvider, TsmFilesystem

REPORT_DATA = bytes(range(64))


@pytest.fixture
def tsm_dir(tmp_path: Path) -> Path:
    base = tmp_path / "tsm" / "report"
    base.mkdir(parents=True)
    return base


def test_happy_path_returns_the_quote_for_our_report_data_and_removes_the_entry(tsm_dir):
    kernel = FakeKernelTsm()
    provider = ConfigfsTsmProvider(tsm_dir, fs=kernel)

    quote = provider.get_quote(REPORT_DATA)

    assert quote == fake_quote(REPORT_DATA)
    assert provider.tee == "tdx"
    assert isinstance(provider, QuoteProvider)
    assert kernel.inblob_writes == 1
    assert len(kernel.entries_created) == 1
    assert list(tsm_dir.iterdir()) == []


def test_generation_race_is_retried_and_the_retry_succeeds(tsm_dir):
    kernel = FakeKernelTsm(racing_writes=[1])
    quote = ConfigfsTsmProvider(tsm_dir, fs=kernel).get_quote(REPORT_DATA)

    # The first attempt saw a foreign write (its outblob carried the other REPORTDATA).
    assert quote == fake_quote(REPORT_DATA)
    assert kernel.inblob_writes == 2
    assert list(tsm_dir.iterdir()) == []


def test_persistent_race_fails_after_the_bounded_number_of_attempts(tsm_dir):
    kernel = FakeKernelTsm(racing_writes=[2, 1, 3, 1])
    provider = ConfigfsTsmProvider(tsm_dir, max_attempts=3, fs=kernel)

    with pytest.raises(ProviderRaceError) as caught:
        provider.get_quote(REPORT_DATA)

    assert kernel.inblob_writes == 3
    assert caught.value.check == "configfs-tsm generation"
    # The last attempt saw three foreign writes after ours.
    assert caught.value.actual == caught.value.expected + 3
    assert list(tsm_dir.iterdir()) == []


def test_single_attempt_means_no_retry(tsm_dir):
    kernel = FakeKernelTsm(racing_writes=[1])
    with pytest.raises(ProviderRaceError):
        ConfigfsTsmProvider(tsm_dir, max_attempts=1, fs=kernel).get_quote(REPORT_DATA)
    assert kernel.inblob_writes == 1


def test_wrong_provider_is_refused_before_anything_is_written(tsm_dir):
    kernel = FakeKernelTsm(provider="sev_guest")
    with pytest.raises(ProviderUnavailableError) as caught:
        ConfigfsTsmProvider(tsm_dir, fs=kernel).get_quote(REPORT_DATA)

    assert caught.value.check == "configfs-tsm provider"
    assert caught.value.expected == "tdx_guest"
    assert caught.value.actual == "sev_guest"
    assert kernel.inblob_writes == 0
    assert list(tsm_dir.iterdir()) == []


def test_missing_interface_names_the_path(tmp_path):
    missing = tmp_path / "no" / "tsm"
    with pytest.raises(ProviderUnavailableError, match=str(missing)) as caught:
        ConfigfsTsmProvider(missing).get_quote(REPORT_DATA)
    assert caught.value.check == "configfs-tsm path"


def test_plain_directory_is_not_taken_for_configfs(tsm_dir):
    # Real file operations without the kernel: mkdir gives an empty directory, no `provider`.
    with pytest.raises(ProviderUnavailableError, match="no provider attribute"):
        ConfigfsTsmProvider(tsm_dir, fs=TsmFilesystem()).get_quote(REPORT_DATA)
    assert list(tsm_dir.iterdir()) == []


def test_kernel_io_error_on_outblob_is_a_quote_generation_error(tsm_dir):
    kernel = FakeKernelTsm(outblob_error=OSError(errno.EIO, "Input/output error"))
    with pytest.raises(QuoteGenerationError, match="Input/output error"):
        ConfigfsTsmProvider(tsm_dir, fs=kernel).get_quote(REPORT_DATA)
    assert list(tsm_dir.iterdir()) == []


@pytest.mark.parametrize("bad", [b"", bytes(63), bytes(65), "x" * 64])
def test_report_data_must_be_exactly_64_bytes_and_nothing_is_created(tsm_dir, bad):
    kernel = FakeKernelTsm()
    with pytest.raises(ProviderError, match="REPORTDATA"):
        ConfigfsTsmProvider(tsm_dir, fs=kernel).get_quote(bad)
    assert kernel.entries_created == []


def test_max_attempts_must_be_positive(tsm_dir):
    with pytest.raises(ValueError):
        ConfigfsTsmProvider(tsm_dir, max_attempts=0)


@settings(max_examples=25, deadline=None)
@given(report_data=st.binary(min_size=64, max_size=64))
def test_any_report_data_reaches_the_kernel_unchanged(tmp_path_factory, report_data):
    base = tmp_path_factory.mktemp("tsm")
    assert ConfigfsTsmProvider(base, fs=FakeKernelTsm()).get_quote(report_data) == fake_quote(
        report_data
    )
