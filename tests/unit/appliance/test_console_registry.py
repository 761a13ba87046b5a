"""The console's registry file: strict parsing with errors naming the field; the load token as a
reference to where the secret lives, never the secret."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support.console import write_pinned_policy

from appliance.console.errors import RegistryError, SecretUnavailableError
from appliance.console.registry import load_registry
from appliance.console.secret_reference import SecretReference
from attest.simulated import SimulatedAuthority

TOKEN_WRITTEN_BY_MISTAKE = "tok-3f9a1c7e5b"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a pinned policy and a simulated root, named as a registry would."""
    base = tmp_path_factory.mktemp("registry")
    (base / "policies").mkdir()
    write_pinned_policy(base / "policies" / "pinned.toml")
    SimulatedAuthority.create(base / "sim", now=datetime.now(UTC))
    return base


def entry(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "node-1", "url": "https://node-1.example:8443",
                            "policy": "policies/pinned.toml", "load_token": "env:NODE1_TOKEN"}
    return {k: v for k, v in (base | changes).items() if v is not None}


def write(files: Path, document: Any, name: str = "registry.json") -> Path:
    path = files / name
    path.write_text(json.dumps(document))
    return path


def test_a_toml_registry_and_its_json_twin(files: Path) -> None:
    toml = files / "registry.toml"
    toml.write_text(
        '[[appliances]]\nid = "node-1"\nurl = "https://node-1.example:8443/"\n'
        'policy = "policies/pinned.toml"\nload_token = "credential:node-1_load"\n\n'
        '[[appliances]]\nid = "sim-2"\nurl = "https://127.0.0.1:9443"\n'
        'policy = "policies/pinned.toml"\nsimulated_root = "sim/root-ca.pem"\n'
    )
    registry = load_registry(toml)
    assert list(registry.enclaves) == ["node-1", "sim-2"]
    node = registry.enclaves["node-1"]
    assert (node.url, node.host, node.simulated) == ("https://node-1.example:8443",
                                                     "node-1.example", False)
    assert node.load_token == SecretReference("credential", "node-1_load")
    assert node.policy.tdx.mr_td is not None  # the pins were read
    simulated = registry.enclaves["sim-2"]
    assert simulated.simulated and simulated.host == "127.0.0.1" and simulated.load_token is None
    assert simulated.simulated_root_path == files / "sim" / "root-ca.pem"

    twin = load_registry(write(files, {"appliances": [
        entry(url="https://node-1.example:8443/", load_token="credential:node-1_load"),
        entry(id="sim-2", url="https://127.0.0.1:9443", simulated_root="sim/root-ca.pem",
              load_token=None)]}))
    assert [e.url for e in twin.enclaves.values()] == [e.url for e in registry.enclaves.values()]
    assert registry.get("nope") is None


@pytest.mark.parametrize(("document", "field"), [
    ({"appliances": [entry()], "extra": 1}, "registry"),
    ({"appliances": []}, "appliances"),
    ({"appliances": [entry(colour="blue")]}, "appliances[0]"),
    ({"appliances": [entry(url=None)]}, "appliances[0]"),
    ({"appliances": [entry(), entry(id="node-1", url="https://other:1")]}, "appliances[1].id"),
    ({"appliances": [entry(), entry(id="node-2")]}, "appliances[1].url"),
    ({"appliances": [entry(id="bad id!")]}, "appliances[0].id"),
    ({"appliances": [entry(id=7)]}, "appliances[0].id"),
    ({"appliances": [entry(url="http://node-1.example")]}, "appliances[0].url"),
    ({"appliances": [entry(url="https://node-1.example/v1")]}, "appliances[0].url"),
    ({"appliances": [entry(url="https://node-1.example?x=1")]}, "appliances[0].url"),
    ({"appliances": [entry(url="https://node-1.example:99999")]}, "appliances[0].url"),
    ({"appliances": [entry(policy="policies/missing.toml")]}, "appliances[0].policy"),
    ({"appliances": [entry(simulated_root="sim/missing.pem")]}, "appliances[0].simulated_root"),
    ({"appliances": [entry(simulated_root="policies/pinned.toml")]},
     "appliances[0].simulated_root"),
    ({"appliances": [entry(load_token="NODE1_TOKEN")]}, "appliances[0].load_token"),
    ({"appliances": [entry(load_token="file:relative/path")]}, "appliances[0].load_token"),
    ({"appliances": [entry(load_token="credential:../escape")]}, "appliances[0].load_token"),
    ({"appliances": [entry(load_token={"env": "X"})]}, "appliances[0].load_token"),
])
def test_a_wrong_field_is_named(files: Path, document: Any, field: str) -> None:
    with pytest.raises(RegistryError) as caught:
        load_registry(write(files, document))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_a_policy_that_does_not_load_is_named_with_its_own_error(files: Path) -> None:
    (files / "policies" / "typo.toml").write_text('mr_tdd = ["00"]\n')
    with pytest.raises(RegistryError, match="mr_tdd") as caught:
        load_registry(write(files, {"appliances": [entry(policy="policies/typo.toml")]}))
    assert caught.value.field == "appliances[0].policy"


@pytest.mark.parametrize("name", ["registry.yaml", "registry"])
def test_only_toml_or_json(files: Path, name: str) -> None:
    with pytest.raises(RegistryError, match=r"must be \.toml or \.json"):
        load_registry(write(files, {"appliances": [entry()]}, name))


def test_unparsable_files_are_refused(files: Path) -> None:
    bad = files / "bad.toml"
    bad.write_text("[[appliances]\n")
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(bad)
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(files / "absent.json")


def test_a_token_written_inline_is_refused_and_never_repeated(files: Path) -> None:
    for value in (TOKEN_WRITTEN_BY_MISTAKE, f"bearer:{TOKEN_WRITTEN_BY_MISTAKE}"):
        with pytest.raises(RegistryError) as caught:
            load_registry(write(files, {"appliances": [entry(load_token=value)]}))
        assert TOKEN_WRITTEN_BY_MISTAKE not in str(caught.value)
        assert "env:NAME" in str(caught.value)


def test_credentials_in_a_url_are_not_repeated(files: Path) -> None:
    with pytest.raises(RegistryError) as caught:
        load_registry(write(files, {"appliances": [
            entry(url=f"https://admin:{TOKEN_WRITTEN_BY_MISTAKE}@node-1.example")]}))
    assert TOKEN_WRITTEN_BY_MISTAKE not in str(caught.value)


def test_secret_references_resolve_from_what_they_name(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file\n")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "node-1_load").write_text("from-a-credential")
    environ = {"NODE1_TOKEN": "from-the-environment",
               "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    resolved = {
        text: SecretReference.parse(text, field="f").resolve(environ).get_secret_value()
        for text in ("env:NODE1_TOKEN", f"file:{tmp_path / 'token'}", "credential:node-1_load")
    }
    assert list(resolved.values()) == ["from-the-environment", "from-a-file", "from-a-credential"]
    assert str(SecretReference.parse("env:NODE1_TOKEN", field="f")) == "env:NODE1_TOKEN"


@pytest.mark.parametrize("text", ["env:UNSET_VARIABLE", "file:/nonexistent/token",
                                  "credential:absent"])
def test_an_unresolvable_reference_names_itself(tmp_path: Path, text: str) -> None:
    reference = SecretReference.parse(text, field="f")
    with pytest.raises(SecretUnavailableError, match=text.split(":")[0]):
        reference.resolve({"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_an_empty_secret_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretUnavailableError, match="empty"):
        SecretReference.parse(f"file:{tmp_path / 'empty'}", field="f").resolve({})
    with pytest.raises(SecretUnavailableError, match="CREDENTIALS_DIRECTORY"):
        SecretReference.parse("credential:x", field="f").resolve({})
