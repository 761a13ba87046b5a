"""Secrets out of the process environment, including the copy the kernel shows in /proc.

`/proc/<pid>/environ` shows the environment block a process was started with, whatever it later
unsets; any process of the same user may read it. The supervisor reads its secrets from there
once (settings), then overwrites them in that block and unsets them, so that neither it nor
anything it starts later carries them.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic_settings import BaseSettings

SettingsT = TypeVar("SettingsT", bound=BaseSettings)

SECRET_VARIABLES = ("APPLIANCE_LOAD_TOKEN", "LOAD_TOKEN", "APPLIANCE_MANAGEMENT_TOKEN")


def scrub_environment(names: Iterable[str] = SECRET_VARIABLES) -> None:
    """Zero the values of `names` in this process's environment block, then unset them."""
    prefixes = tuple(f"{name}=".encode() for name in names)
    libc = ctypes.CDLL(None)
    environ = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
    index = 0
    while (address := environ[index]) is not None:
        entry = ctypes.string_at(address)
        for prefix in prefixes:
            if entry.startswith(prefix):
                ctypes.memset(address + len(prefix), 0, len(entry) - len(prefix))
        index += 1
    for name in names:
        os.environ.pop(name, None)


def settings_with_credentials(model: type[SettingsT], given: dict[str, Any]) -> SettingsT:
    """`model` from flags (`given`), the environment, and systemd credentials.

    systemd's LoadCredential= puts secrets in files under $CREDENTIALS_DIRECTORY, named after the
    setting (load_token, management_token): neither argv nor the environment then holds them.
    """
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        # pydantic-settings documents `_secrets_dir` as an init argument of BaseSettings.
        return model(_secrets_dir=credentials, **given)
    return model(**given)
