"""`appliance console`'s settings: the management token from the environment or systemd's
credentials, never a flag; a bad registry stops it before it serves, naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.cli import build_parser, main
from appliance.cli.console import settings_from_args
from appliance.console.settings import ConsoleSettings

SECRET = "console-secret-token-9c1e"


def args_for(*argv: str):
    return build_parser().parse_args(["console", *argv])


def test_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("APPLIANCE_CONSOLE_MANAGEMENT_TOKEN", SECRET)
    settings = settings_from_args(args_for("--registry", "r.toml", "--state-db", "s.db",
                                           "--listen", "127.0.0.1:9999"))
    assert settings.management_token.get_secret_value() == SECRET
    assert settings.listen == "127.0.0.1:9999" and settings.max_push_age == 300
    assert SECRET not in repr(settings)


def test_or_from_systemd_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("APPLIANCE_CONSOLE_MANAGEMENT_TOKEN", raising=False)
    (tmp_path / "management_token").write_text(SECRET + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = settings_from_args(args_for("--registry", "r.toml", "--state-db", "s.db"))
    assert settings.management_token.get_secret_value() == SECRET


def test_never_from_a_flag() -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["console", "--management-token", SECRET])
    assert exited.value.code == 2


@pytest.mark.parametrize("token", [None, "", "   "])
def test_a_missing_or_empty_token_is_refused(monkeypatch: pytest.MonkeyPatch,
                                             token: str | None) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    if token is None:
        monkeypatch.delenv("APPLIANCE_CONSOLE_MANAGEMENT_TOKEN", raising=False)
    else:
        monkeypatch.setenv("APPLIANCE_CONSOLE_MANAGEMENT_TOKEN", token)
    with pytest.raises(ValidationError, match="management_token"):
        ConsoleSettings(registry=Path("r.toml"), state_db=Path("s.db"))


def test_a_bad_registry_stops_the_console_before_it_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry.toml"
    registry.write_text('[[appliances]]\nid = "a"\nurl = "http://a.example"\npolicy = "p.toml"\n')
    monkeypatch.setenv("APPLIANCE_CONSOLE_MANAGEMENT_TOKEN", SECRET)
    # The entry point's JSON logging would outlive this test in the test process.
    monkeypatch.setattr("appliance.cli.console.configure_json_logging", lambda level: None)
    status = main(["console", "--registry", str(registry), "--state-db",
                   str(tmp_path / "s.db")])
    assert status == 2
    err = capsys.readouterr().err
    assert "appliances[0].url" in err and SECRET not in err
