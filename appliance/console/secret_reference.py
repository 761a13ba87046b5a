"""Where a secret lives, written in the registry instead of the secret itself.

    env:NAME          the environment variable NAME
    file:/ABS/PATH    the content of a file (one trailing newline dropped)
    credential:NAME   systemd's `LoadCredential=`: $CREDENTIALS_DIRECTORY/NAME

The reference is safe to log and to show; the value is resolved only when it is used, from the
environment it is given, and is returned as a SecretStr.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from appliance.console.errors import RegistryError, SecretUnavailableError

SecretKind = Literal["env", "file", "credential"]
_KINDS: dict[str, SecretKind] = {"env": "env", "file": "file", "credential": "credential"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_SECRET_BYTES = 4096


@dataclass(frozen=True)
class SecretReference:
    kind: SecretKind
    name: str  # the variable, the absolute path, or the credential's name

    @classmethod
    def parse(cls, value: object, *, field: str) -> SecretReference:
        """`env:NAME`, `file:/PATH` or `credential:NAME`. Raises RegistryError naming `field`;
        the message never repeats the value, which may be a token written by mistake."""
        kind, sep, name = value.partition(":") if isinstance(value, str) else ("", "", "")
        valid = sep and (
            (kind == "env" and _ENV_NAME.fullmatch(name))
            or (kind == "file" and name.startswith("/") and "\0" not in name)
            or (kind == "credential" and _CREDENTIAL_NAME.fullmatch(name) and ".." not in name)
        )
        if not valid:
            raise RegistryError(
                "must be a secret reference, not a secret: the token itself never goes in the "
                "registry",
                field=field,
                expected="env:NAME, file:/ABSOLUTE/PATH or credential:NAME",
                actual=f"a {type(value).__name__} that is none of these",
            )
        return cls(_KINDS[kind], name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def resolve(self, environ: Mapping[str, str]) -> SecretStr:
        """The secret, read now. Raises SecretUnavailableError naming this reference."""
        if self.kind == "env":
            value = environ.get(self.name, "")
        else:
            if self.kind == "credential":
                directory = environ.get("CREDENTIALS_DIRECTORY")
                if not directory:
                    raise SecretUnavailableError(f"{self}: CREDENTIALS_DIRECTORY is not set")
                path = Path(directory) / self.name
            else:
                path = Path(self.name)
            try:
                with path.open("rb") as file:
                    data = file.read(MAX_SECRET_BYTES + 1)
            except OSError as exc:
                raise SecretUnavailableError(f"{self}: cannot read: {exc.strerror}") from None
            if len(data) > MAX_SECRET_BYTES:
                raise SecretUnavailableError(f"{self}: longer than {MAX_SECRET_BYTES} bytes")
            try:
                value = data.decode("utf-8").removesuffix("\n")
            except UnicodeDecodeError:
                raise SecretUnavailableError(f"{self}: not UTF-8") from None
        if not value:
            raise SecretUnavailableError(f"{self}: empty or unset")
        return SecretStr(value)

