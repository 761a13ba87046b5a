"""The console's one settings object: `appliance console` flags, or `APPLIANCE_CONSOLE_*`.

The management token (the Bearer token appliances push with) comes only from the environment,
`APPLIANCE_CONSOLE_MANAGEMENT_TOKEN`, or from systemd's credentials, a file named
`management_token` in `$CREDENTIALS_DIRECTORY`: never from a flag, which `ps` shows.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from appliance.settings import ListenAddress


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APPLIANCE_CONSOLE_",
        frozen=True,
        extra="forbid",
        populate_by_name=True,
    )

    registry: Path
    state_db: Path
    # Plain HTTP: on loopback, or behind the console's own TLS front end.
    listen: ListenAddress = "127.0.0.1:8091"
    # Collateral for appliances with real TDX evidence: a PCCS base URL; Intel's PCS when unset.
    pccs_url: str | None = None
    management_token: SecretStr = Field(
        validation_alias=AliasChoices("management_token", "APPLIANCE_CONSOLE_MANAGEMENT_TOKEN"),
    )
    # Seconds a push may be older than the console's clock, and ahead of it.
    max_push_age: float = Field(default=300.0, gt=0)
    max_clock_skew: float = Field(default=60.0, ge=0)
    # A push is a few KB (the certificate and its quote, the status).
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    threads: int = Field(default=8, ge=1, le=256)

    @field_validator("management_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the management token must not be empty")
        return value
