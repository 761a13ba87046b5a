"""The registry of appliances the console accepts pushes from, read once at start from a file.

TOML (or the same document as JSON, by the file's suffix)::

    [[appliances]]
    id = "gpu-node-1"                          # the enclave id its pushes carry (--enclave-id)
    url = "https://gpu-node-1.example:8443"    # where it serves RA-TLS
    policy = "policies/gpu-node-1.toml"        # appraisal policy; relative to this file
    load_token = "credential:gpu-node-1_load"  # optional: env:NAME, file:/PATH or credential:NAME
    simulated_root = "/srv/sim/root-ca.pem"    # optional: SIMULATED evidence (development only)

Strict: unknown or missing keys, a wrong type, a duplicate id or URL, a policy or root that does
not load all raise RegistryError naming the field. The load token is a reference to where the
secret lives (`appliance/console/secret_reference.py`), never the token. Editing the registry
through the API is not built: change the file and restart the console.
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from appliance.console.errors import RegistryError
from appliance.console.secret_reference import SecretReference
from attest.errors import AttestError
from attest.roots import TrustRoot
from ratls.errors import RatlsError
from ratls.policy import AppraisalPolicy

APPLIANCES_KEY = "appliances"
REQUIRED_KEYS = frozenset({"id", "url", "policy"})
OPTIONAL_KEYS = frozenset({"load_token", "simulated_root"})
# What an enclave id may be: a host name's characters (the pusher's default is the host name).
ENCLAVE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_REGISTRY_BYTES = 1 << 20


@dataclass(frozen=True)
class RegisteredEnclave:
    enclave_id: str
    url: str  # https://HOST[:PORT], no path
    host: str  # the URL's host: what the certificate's names must include
    policy_path: Path
    policy: AppraisalPolicy = field(repr=False)
    simulated_root: TrustRoot | None = field(default=None, repr=False)
    simulated_root_path: Path | None = None
    load_token: SecretReference | None = None

    @property
    def simulated(self) -> bool:
        return self.simulated_root is not None


@dataclass(frozen=True)
class Registry:
    enclaves: Mapping[str, RegisteredEnclave]  # by id, in file order

    def get(self, enclave_id: str) -> RegisteredEnclave | None:
        return self.enclaves.get(enclave_id)


def load_registry(path: Path) -> Registry:
    """Reads and checks the registry file, its policies and simulated roots."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise RegistryError("the registry file must be .toml or .json", field="registry",
                            expected=[".toml", ".json"], actual=path.suffix or "none")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_REGISTRY_BYTES + 1)
        if len(data) > MAX_REGISTRY_BYTES:
            raise RegistryError("the registry file is too large", field="registry",
                                expected=f"<= {MAX_REGISTRY_BYTES} bytes")
        text = data.decode("utf-8")
        document = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}", field="registry") from None
    return parse_registry(document, base=path.parent)


def parse_registry(document: Any, *, base: Path) -> Registry:
    """The registry from its parsed document; relative paths are resolved against `base`."""
    if not isinstance(document, Mapping) or set(document) != {APPLIANCES_KEY}:
        raise RegistryError("the registry is a table with one key", field="registry",
                            expected=[APPLIANCES_KEY],
                            actual=sorted(document) if isinstance(document, Mapping)
                            else type(document).__name__)
    entries = document[APPLIANCES_KEY]
    if not isinstance(entries, list) or not entries:
        raise RegistryError("must be a non-empty list of tables", field=APPLIANCES_KEY)
    enclaves: dict[str, RegisteredEnclave] = {}
    urls: dict[str, str] = {}
    for index, entry in enumerate(entries):
        enclave = _enclave(entry, f"{APPLIANCES_KEY}[{index}]", base)
        if enclave.enclave_id in enclaves:
            raise RegistryError("duplicate enclave id", field=f"{APPLIANCES_KEY}[{index}].id",
                                actual=enclave.enclave_id)
        if enclave.url in urls:
            raise RegistryError(f"URL already registered for {urls[enclave.url]!r}",
                                field=f"{APPLIANCES_KEY}[{index}].url", actual=enclave.url)
        enclaves[enclave.enclave_id] = enclave
        urls[enclave.url] = enclave.enclave_id
    return Registry(MappingProxyType(enclaves))


def _enclave(entry: Any, where: str, base: Path) -> RegisteredEnclave:
    if not isinstance(entry, Mapping):
        raise RegistryError("must be a table", field=where, actual=type(entry).__name__)
    keys = set(entry)
    if not keys >= REQUIRED_KEYS or not keys <= REQUIRED_KEYS | OPTIONAL_KEYS:
        raise RegistryError(
            "unknown or missing keys", field=where,
            expected=f"{sorted(REQUIRED_KEYS)} and optionally {sorted(OPTIONAL_KEYS)}",
            actual=sorted(str(k) for k in keys),
        )
    enclave_id = _string(entry, "id", where)
    if not ENCLAVE_ID.fullmatch(enclave_id):
        raise RegistryError("not an enclave id", field=f"{where}.id",
                            expected=ENCLAVE_ID.pattern, actual=repr(enclave_id[:80]))
    url, host = _https_url(_string(entry, "url", where), f"{where}.url")
    policy_path = base / _string(entry, "policy", where)
    try:
        policy = AppraisalPolicy.load(policy_path)
    except (AttestError, RatlsError) as exc:
        raise RegistryError(f"policy does not load: {exc}", field=f"{where}.policy") from None
    root_path: Path | None = None
    root: TrustRoot | None = None
    if "simulated_root" in entry:
        root_path = base / _string(entry, "simulated_root", where)
        try:
            root = TrustRoot.from_file(root_path)
        except (OSError, ValueError, AttestError) as exc:
            raise RegistryError(f"simulated root does not load: {exc}",
                                field=f"{where}.simulated_root") from None
    load_token = None
    if "load_token" in entry:
        load_token = SecretReference.parse(entry["load_token"], field=f"{where}.load_token")
    return RegisteredEnclave(
        enclave_id=enclave_id, url=url, host=host, policy_path=policy_path, policy=policy,
        simulated_root=root, simulated_root_path=root_path, load_token=load_token,
    )


def _string(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry[key]
    if not isinstance(value, str) or not value:
        raise RegistryError("must be a non-empty string", field=f"{where}.{key}",
                            actual=type(value).__name__)
    return value


def _https_url(value: str, field_name: str) -> tuple[str, str]:
    """`https://HOST[:PORT]` (a trailing slash allowed) -> (normalised URL, host)."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise RegistryError(f"not a URL: {exc}", field=field_name) from None
    if (
        parts.scheme != "https" or not parts.hostname or parts.username is not None
        or parts.password is not None or parts.path not in ("", "/") or parts.query
        or parts.fragment
    ):
        shown = "a URL with credentials (not shown)" if "@" in parts.netloc else value
        raise RegistryError("must be an https URL without path, query or credentials",
                            field=field_name, expected="https://HOST[:PORT]", actual=shown)
    host = parts.hostname
    try:
        shown_host = f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        shown_host = host
    return f"https://{shown_host}" + (f":{port}" if port is not None else ""), host
