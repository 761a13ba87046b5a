"""Settings: flags over environment over defaults; secrets stay secret; bad values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.settings import Settings, split_listen


def test_environment_and_the_bare_load_token_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_VLLM_PORT", "8123")
    monkeypatch.setenv("LOAD_TOKEN", "s3cret")
    monkeypatch.setenv("APPLIANCE_HOSTNAME", '["a.example", "10.0.0.1"]')
    settings = Settings()
    assert settings.vllm_port == 8123
    assert settings.load_token.get_secret_value() == "s3cret"
    assert settings.hostname == ("a.example", "10.0.0.1")
    assert "s3cret" not in repr(settings)


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_VLLM_PORT", "8123")
    assert Settings(vllm_port=9000).vllm_port == 9000


@pytest.mark.parametrize("field, value", [
    ("listen", "nohost"), ("listen", "1.2.3.4:99999"), ("listen", "example.com:443"),
    ("vllm_port", 0), ("workers", 0), ("tee", "sev"), ("management_url", "ftp://x"),
    ("load_token", ""), ("hostname", ()),
])
def test_bad_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_management_url_needs_a_token() -> None:
    with pytest.raises(ValidationError, match="management-token"):
        Settings(management_url="https://mgmt.example")


def test_open_lifecycle_is_only_for_simulated_evidence() -> None:
    with pytest.raises(ValidationError, match="only with --tee simulated"):
        Settings(insecure_open_lifecycle=True, tee="tdx")
    assert Settings(insecure_open_lifecycle=True, tee="simulated").insecure_open_lifecycle


@pytest.mark.parametrize("url", ["http://mgmt.example", "http://127.0.0.1:9000"])
def test_plain_http_management_is_refused_by_default(url: str) -> None:
    with pytest.raises(ValidationError, match="in clear"):
        Settings(management_url=url, management_token="t")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9000", "http://[::1]:9", "http://localhost"])
def test_insecure_management_http_allows_loopback_only(url: str) -> None:
    settings = Settings(management_url=url, management_token="t", insecure_management_http=True)
    assert settings.management_url == url
    with pytest.raises(ValidationError, match="not a loopback"):
        Settings(management_url="http://10.0.0.2", management_token="t",
                 insecure_management_http=True)


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(load_tokn="typo")


def test_listen_forms() -> None:
    assert split_listen("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert split_listen("[::1]:443") == ("::1", 443)
    assert split_listen(":443") == ("0.0.0.0", 443)


def test_systemd_credentials_directory_supplies_secrets(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from appliance.cli.serve import settings_from_args

    (tmp_path / "load_token").write_text("from-a-credential")
    (tmp_path / "management_token").write_text("mgmt-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = settings_from_args(argparse.Namespace(management_url="https://mgmt.example",
                                                     hostname=["a.example"]))
    assert settings.load_token.get_secret_value() == "from-a-credential"
    assert settings.management_token.get_secret_value() == "mgmt-credential"
    assert settings.hostname == ("a.example",)


def test_engine_env_assignments() -> None:
    assert Settings(engine_env=("A=1", "B_C=x=y")).engine_environment == {"A": "1", "B_C": "x=y"}
    with pytest.raises(ValidationError):
        Settings(engine_env=("novalue",))


def test_model_access_follows_the_tee_unless_set() -> None:
    assert Settings(tee="tdx").effective_model_access == "dm-verity"
    assert Settings(tee="simulated").effective_model_access == "userspace"
    assert Settings(tee="tdx", model_access="userspace").effective_model_access == "userspace"
    with pytest.raises(ValidationError):
        Settings(model_access="fuse")


def test_serve_wires_kernel_dm_verity_for_tdx() -> None:
    from appliance.supervisor.service import model_access
    from loader.activator.dm_verity import DmVerityActivator
    from loader.images.model_image import materialize_verified

    kernel = model_access(Settings(tee="tdx"))
    assert isinstance(getattr(kernel, "__self__", None), DmVerityActivator)
    assert model_access(Settings(tee="simulated")) is materialize_verified


def test_serve_wires_the_activator_client_to_its_socket() -> None:
    from appliance.supervisor.service import model_access
    from loader.activator.client import ActivatorClient

    default = model_access(Settings(model_access="activator"))
    assert default == ActivatorClient(Path("/run/appliance-activator/activator.sock"))
    chosen = Settings(tee="simulated", model_access="activator", activator_socket="/run/x.sock")
    assert chosen.effective_model_access == "activator"
    assert model_access(chosen) == ActivatorClient(Path("/run/x.sock"))


def test_tdx_refuses_to_start_an_engine_as_the_services_user(tmp_path: Path) -> None:
    from appliance.errors import StartupError
    from appliance.supervisor.service import prepare_state_dir

    (tmp_path / "models").mkdir()
    common = {"state_dir": tmp_path / "state", "models_dir": tmp_path / "models",
              "roothash_dir": tmp_path / "models", "vllm_bin": "/bin/true"}
    with pytest.raises(StartupError, match="--engine-user"):
        prepare_state_dir(Settings(tee="tdx", **common))
    assert not (tmp_path / "state").exists()  # refused before anything was made
    prepare_state_dir(Settings(tee="tdx", insecure_shared_engine_user=True, **common))
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    prepare_state_dir(Settings(tee="tdx", engine_user="nobody", **common))
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o711  # the engine passes through
    assert (tmp_path / "state" / "run").stat().st_mode & 0o777 == 0o700


def test_an_engine_user_must_exist_and_be_neither_root_nor_us() -> None:
    from loader.errors import EngineStartError
    from loader.settings import EngineUser

    for name in ("no-such-user-here", "root"):
        with pytest.raises(EngineStartError):
            EngineUser.resolve(name)
    nobody = EngineUser.resolve("nobody")
    assert nobody.uid != 0 and nobody.setpriv.endswith("/setpriv")
