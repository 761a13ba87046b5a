"""Quotes through the kernel's configfs-tsm report interface (Linux >= 6.7, TDX guest driver).

Layout (Documentation/ABI/testing/configfs-tsm): under `/sys/kernel/config/tsm/report`, a
`mkdir` creates a report entry whose attribute files the kernel fills in: `inblob` (write the
64-byte REPORTDATA), `outblob` (read the quote), `provider` (the TSM driver's name) and
`generation` (a counter that the kernel bumps on every write to the entry).

There is no TDX here, so tests point `base` at a directory and use a `TsmFilesystem` that
emulates the kernel's side of these files (tests/support/fake_configfs_tsm.py).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from attest.errors import (
    ProviderRaceError,
    ProviderUnavailableError,
    QuoteGenerationError,
)
from attest.providers.base import TeeName, require_report_data

logger = logging.getLogger(__name__)

DEFAULT_TSM_REPORT_PATH = Path("/sys/kernel/config/tsm/report")
TDX_PROVIDER_NAME = "tdx_guest"
DEFAULT_MAX_ATTEMPTS = 3


class TsmFilesystem:
    """The filesystem calls the provider makes: the seam where tests emulate the kernel."""

    def make_entry(self, path: Path) -> None:
        path.mkdir(mode=0o700)

    def remove_entry(self, path: Path) -> None:
        # configfs removes an entry with its attribute files in one rmdir.
        path.rmdir()

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def write(self, path: Path, data: bytes) -> None:
        # One write() call: the kernel takes a binary attribute's whole value at once.
        with open(path, "wb", buffering=0) as f:
            f.write(data)


class ConfigfsTsmProvider:
    """A `QuoteProvider` over configfs-tsm: one fresh report entry per quote.

    The generation check follows the kernel's contract: `generation` counts writes to the
    entry, so reading it before our `inblob` write and after reading `outblob` must show exactly
    our one write. Anything else means another writer raced us and the quote may carry its
    REPORTDATA; we retry (at most `max_attempts` times in all), then fail.
    """

    def __init__(
        self,
        base: Path = DEFAULT_TSM_REPORT_PATH,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        fs: TsmFilesystem | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._base = Path(base)
        self._max_attempts = max_attempts
        self._fs = fs or TsmFilesystem()

    @property
    def tee(self) -> TeeName:
        return "tdx"

    def get_quote(self, report_data: bytes) -> bytes:
        report_data = require_report_data(report_data)
        # 1. The interface must exist: configfs mounted and a TSM driver registered.
        if not self._base.is_dir():
            raise ProviderUnavailableError(
                f"configfs-tsm report interface not found at {self._base} (configfs not "
                "mounted, kernel without CONFIG_TSM_REPORTS, or not running in a TD)",
                check="configfs-tsm path",
            )
        # 2. A fresh entry per request, named so that no other process picks the same one.
        entry = self._base / f"appliance-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            self._fs.make_entry(entry)
        except OSError as exc:
            raise ProviderUnavailableError(
                f"cannot create configfs-tsm report entry {entry}: {exc.strerror or exc}",
                check="configfs-tsm entry",
            ) from exc
        try:
            # 3. The entry must belong to the TDX guest driver, not to another TSM.
            self._check_provider(entry)
            # 4. Write REPORTDATA, read the quote, and check that nobody else wrote meanwhile.
            return self._quote_with_generation_check(entry, report_data)
        finally:
            # 5. Remove the entry whatever happened.
            try:
                self._fs.remove_entry(entry)
            except OSError as exc:
                logger.warning("could not remove configfs-tsm entry %s: %s", entry, exc)

    def _check_provider(self, entry: Path) -> None:
        provider = self._read_text(entry / "provider", "provider")
        if provider != TDX_PROVIDER_NAME:
            raise ProviderUnavailableError(
                "configfs-tsm provider is not the TDX guest driver",
                check="configfs-tsm provider",
                expected=TDX_PROVIDER_NAME,
                actual=provider or "(empty)",
            )

    def _quote_with_generation_check(self, entry: Path, report_data: bytes) -> bytes:
        before = after = 0
        for attempt in range(1, self._max_attempts + 1):
            before = self._read_generation(entry)
            self._write(entry / "inblob", report_data)
            quote = self._read_outblob(entry)
            after = self._read_generation(entry)
            if after == before + 1:
                return quote
            logger.warning(
                "configfs-tsm generation moved from %d to %d during attempt %d of %d; retrying",
                before,
                after,
                attempt,
                self._max_attempts,
            )
        raise ProviderRaceError(
            f"configfs-tsm entry {entry.name} was written concurrently in all "
            f"{self._max_attempts} attempts",
            check="configfs-tsm generation",
            expected=before + 1,
            actual=after,
        )

    def _read_generation(self, entry: Path) -> int:
        text = self._read_text(entry / "generation", "generation")
        try:
            return int(text)
        except ValueError:
            raise QuoteGenerationError(
                "configfs-tsm generation is not a number",
                check="configfs-tsm generation",
                actual=text,
            ) from None

    def _read_outblob(self, entry: Path) -> bytes:
        try:
            quote = self._fs.read(entry / "outblob")
        except OSError as exc:
            # The kernel reports a failed GetQuote (host quoting service down, ...) as EIO etc.
            raise QuoteGenerationError(
                f"the kernel could not produce a quote: {exc.strerror or exc}",
                check="configfs-tsm outblob",
            ) from exc
        if not quote:
            raise QuoteGenerationError(
                "configfs-tsm returned an empty quote", check="configfs-tsm outblob"
            )
        return quote

    def _write(self, path: Path, data: bytes) -> None:
        try:
            self._fs.write(path, data)
        except OSError as exc:
            raise QuoteGenerationError(
                f"cannot write configfs-tsm {path.name}: {exc.strerror or exc}",
                check=f"configfs-tsm {path.name}",
            ) from exc

    def _read_text(self, path: Path, name: str) -> str:
        try:
            return self._fs.read(path).decode("ascii", "replace").strip()
        except FileNotFoundError as exc:
            raise ProviderUnavailableError(
                f"configfs-tsm entry has no {name} attribute (not a TSM report entry?)",
                check=f"configfs-tsm {name}",
            ) from exc
        except OSError as exc:
            raise QuoteGenerationError(
                f"cannot read configfs-tsm {name}: {exc.strerror or exc}",
                check=f"configfs-tsm {name}",
            ) from exc
