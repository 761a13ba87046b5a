"""The fleet console against real appliances: `appliance serve --tee simulated` (supervisor,
gunicorn over RA-TLS, the fake vLLM) pushing signed status to a real `appliance console`
(gunicorn on a port).

e-a pushes to the console directly; e-b and an impostor through a relay that keeps the real
signed documents (support/push_receiver.py). The impostor is a genuine simulated appliance that
shares e-a's simulated authority (so its quotes chain to e-a's root) and its host names, holds
its own key, and is started with `--enclave-id e-a`: only the key the registered URL presents
tells it from e-a.

Then mutations of those real documents go to a console made in-process (Flask test client),
registered the same way, with an injected clock: each is refused with its reason, counted, and
the stored state is unchanged.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.clock import ManualClock
from support.console import Console, start_console, write_pinned_policy, write_registry
from support.engines import free_port
from support.push_receiver import PushReceiver
from support.service import Service, pack_model, start_service, wait_for_status
from support.verifying import verifying_client

from appliance.console.settings import ConsoleSettings
from appliance.console.wiring import build_console_app
from appliance.status_push import PUSH_PATH
from attest.simulated import SimulatedAuthority

pytestmark = pytest.mark.slow

MODEL, OTHER = "tiny", "other"
TOKEN = "console-management-token"


@dataclass
class Fleet:
    work: Path
    urls: dict[str, str]  # by enclave id
    roots: dict[str, Path]  # the simulated roots, by enclave id
    policy: Path
    digests: dict[str, str]
    console: Console
    relay: PushReceiver
    services: dict[str, Service]  # "e-a", "e-b", "impostor"

    def registry_entries(self, *, b_policy: Path | None = None) -> list[dict[str, str]]:
        return registry_entries(self.urls, self.roots, self.policy, b_policy=b_policy)

    def relayed(self, enclave_id: str, *, accepted: bool | None = None) -> list[dict[str, Any]]:
        """The real documents the relay passed on for `enclave_id`, optionally only those the
        console accepted (200) or only those it refused."""
        return [copy.deepcopy(document)
                for (_, _, document), status in zip(self.relay.received, self.relay.answers,
                                                    strict=True)
                if document["payload"]["enclave_id"] == enclave_id
                and (accepted is None or (status == 200) == accepted)]


def registry_entries(urls: dict[str, str], roots: dict[str, Path], policy: Path, *,
                     b_policy: Path | None = None) -> list[dict[str, str]]:
    """e-a and e-b as the console registers them (e-b under `b_policy` when given)."""
    return [{"id": enclave_id, "url": urls[enclave_id],
             "policy": str(b_policy if b_policy and enclave_id == "e-b" else policy),
             "simulated_root": str(roots[enclave_id]),
             "load_token": f"env:{enclave_id.upper().replace('-', '_')}_LOAD_TOKEN"}
            for enclave_id in ("e-a", "e-b")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    work = tmp_path_factory.mktemp("console")
    models, roothash, digest = pack_model(work, MODEL, {"config.json": '{"kind": "tiny"}'})
    _, _, other_digest = pack_model(work, OTHER, {"config.json": '{"kind": "other"}'})
    ports = {name: free_port() for name in ("e-a", "e-b", "impostor", "console")}
    states = {name: work / f"state-{name}" for name in ("e-a", "e-b", "impostor")}
    # The simulated authorities exist before the appliances start, so that the registry names
    # their roots and the console is up before the first push.
    now = datetime.now(UTC)
    for name in ("e-a", "e-b"):
        SimulatedAuthority.create(states[name] / "simulated", now=now)
    shutil.copytree(states["e-a"] / "simulated", states["impostor"] / "simulated")
    urls = {name: f"https://127.0.0.1:{ports[name]}" for name in ("e-a", "e-b")}
    roots = {name: states[name] / "simulated" / "root-ca.pem" for name in ("e-a", "e-b")}
    policy = write_pinned_policy(work / "simulated-td.toml")
    console = start_console(work, write_registry(work / "registry.toml",
                                                 registry_entries(urls, roots, policy)),
                            port=ports["console"], token=TOKEN)
    fleet = Fleet(work, urls, roots, policy, {MODEL: digest, OTHER: other_digest}, console,
                  relay=PushReceiver(forward_to=console.url), services={})
    try:
        for name, enclave_id, management_url in (
            ("e-a", "e-a", fleet.console.url),
            ("e-b", "e-b", fleet.relay.url),
            ("impostor", "e-a", fleet.relay.url),
        ):
            fleet.services[name] = start_service(
                work, models, roothash, port=ports[name], state_dir=states[name],
                env={"APPLIANCE_MANAGEMENT_TOKEN": TOKEN},
                args=["--management-url", management_url, "--insecure-management-http",
                      "--push-interval", "0.5", "--enclave-id", enclave_id],
            )
        yield fleet
    finally:
        for service in fleet.services.values():
            assert service.stop() == 0, service.log()[-3000:]
        assert fleet.console.stop() == 0, fleet.console.log()[-3000:]
        fleet.relay.close()
    assert TOKEN not in fleet.console.log()
    for service in fleet.services.values():
        assert TOKEN not in service.log()


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.2)


def test_pushes_from_real_appliances_are_verified_and_listed(fleet: Fleet) -> None:
    certificates = {}
    for enclave_id, model in (("e-a", MODEL), ("e-b", OTHER)):
        service = fleet.services[enclave_id]
        with verifying_client(service) as client:
            response = client.http.post("/v1/models/load", json={"model": model},
                                        headers=service.auth())
            assert response.status_code == 202, response.text
            wait_for_status(client.http, lambda s: s["proxy_status"] == "ready")
        with verifying_client(service) as client:  # a new connection: the re-issued certificate
            certificates[enclave_id] = client.last_result_after(
                lambda client=client: client.http.get("/v1/models")).certificate

    def shown() -> dict[str, dict[str, Any]] | None:
        enclaves = fleet.console.enclaves()
        ready = all(
            (enclaves[e]["status"] or {}).get("lifecycle") == "ready"
            and enclaves[e]["attestation"].get("model_digest") == fleet.digests[model]
            for e, model in (("e-a", MODEL), ("e-b", OTHER))
        )
        return enclaves if ready else None

    enclaves = wait_until(shown, "both appliances shown ready with their attested digests")
    for enclave_id, model in (("e-a", MODEL), ("e-b", OTHER)):
        entry = enclaves[enclave_id]
        assert entry["url"] == fleet.urls[enclave_id] and entry["simulated"] is True
        assert entry["status"]["model"] == model
        assert entry["status"]["model_digest"] == fleet.digests[model]
        assert entry["status"]["progress"] == 1.0
        attestation = entry["attestation"]
        assert attestation["verdict"] == "verified" and attestation["tee"] == "simulated"
        # The certificate that signed the push is the one the appliance serves its tenants.
        certificate = certificates[enclave_id]
        assert certificate is not None
        assert attestation["certificate_sha256"] == certificate.sha256_fingerprint
        assert {check["name"] for check in attestation["checks"]} >= {
            "dcap", "key_binding", "hostname", "measurements_pinned"}
        assert entry["pushes_accepted"] >= 1 and entry["last_push_age_seconds"] < 60

    # The impostor's genuine, attested pushes under e-a's id are refused for the key, counted
    # against e-a, and change nothing of e-a's.
    entry = wait_until(
        lambda: (e := fleet.console.enclaves()["e-a"])["refusals"].get("certificate_not_enclave")
        and e, "the impostor refused")
    assert entry["status"]["model"] == MODEL and entry["attestation"]["verdict"] == "verified"
    assert 403 in [status for (_, _, document), status
                   in zip(fleet.relay.received, fleet.relay.answers, strict=True)
                   if document["payload"]["enclave_id"] == "e-a"]  # only the impostor's

    metrics = httpx.get(f"{fleet.console.url}/metrics", timeout=10).text
    assert 'appliance_console_pushes_accepted_total{enclave="e-a"}' in metrics
    assert ('appliance_console_push_refusals_total{enclave="e-a",'
            'reason="certificate_not_enclave"}') in metrics


def test_the_real_console_refuses_a_replay_and_a_wrong_token(fleet: Fleet) -> None:
    accepted = wait_until(lambda: fleet.relayed("e-b", accepted=True), "an accepted e-b push")
    before = fleet.console.enclaves()
    url = fleet.console.url + PUSH_PATH
    replay = httpx.post(url, json=accepted[-1], headers={"Authorization": f"Bearer {TOKEN}"})
    assert replay.status_code == 409, replay.text
    assert replay.json()["error"]["code"] == "replayed_push"
    wrong = httpx.post(url, json=accepted[-1], headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_token"
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    after = fleet.console.enclaves()
    assert after["e-b"]["refusals"].get("replayed_push", 0) == (
        before["e-b"]["refusals"].get("replayed_push", 0) + 1)
    document = httpx.get(f"{fleet.console.url}/api/v1/enclaves", timeout=10).json()
    assert document["unattributed_refusals"]["invalid_token"] >= 1


# --- mutations of real pushes, against a console made in-process with an injected clock --------

@dataclass
class LocalConsole:
    http: Any  # Flask test client
    clock: ManualClock

    def push(self, document: Any, token: str = TOKEN) -> Any:
        return self.http.post(PUSH_PATH, json=document,
                              headers={"Authorization": f"Bearer {token}"})

    def enclaves(self) -> dict[str, dict[str, Any]]:
        response = self.http.get("/api/v1/enclaves")
        assert response.status_code == 200
        return {entry["id"]: entry for entry in response.get_json()["enclaves"]}

    def unattributed(self) -> dict[str, int]:
        return self.http.get("/api/v1/enclaves").get_json()["unattributed_refusals"]


def local_console(fleet: Fleet, tmp_path: Path, *, at: datetime,
                  entries: list[dict[str, str]] | None = None) -> LocalConsole:
    registry = write_registry(tmp_path / "registry.toml", entries or fleet.registry_entries())
    clock = ManualClock(at)
    settings = ConsoleSettings(registry=registry, state_db=tmp_path / "console.db",
                               management_token=TOKEN)
    return LocalConsole(build_console_app(settings, clock=clock).test_client(), clock)


def pushed_at(document: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(document["payload"]["time"])


def _drop_signature(document: dict[str, Any]) -> dict[str, Any]:
    del document["signature"]
    return document


def _bare_status(document: dict[str, Any]) -> dict[str, Any]:
    return document["payload"]


def _flip_signature(document: dict[str, Any]) -> dict[str, Any]:
    last = document["signature"][-1]
    document["signature"] = document["signature"][:-1] + ("0" if last != "0" else "1")
    return document


def _alter_payload(document: dict[str, Any]) -> dict[str, Any]:
    document["payload"]["loaded_model"] = "not-what-was-signed"
    return document


def _unknown_enclave(document: dict[str, Any]) -> dict[str, Any]:
    document["payload"]["enclave_id"] = "e-unregistered"
    return document


# (mutation, HTTP status, reason, counted against e-b or unattributed, clock offset from the push)
MUTATIONS = {
    "unsigned: signature removed": (_drop_signature, 422, "unsigned_push", "e-b", 1),
    "unsigned: the bare status": (_bare_status, 422, "unsigned_push", "e-b", 1),
    "bad signature": (_flip_signature, 403, "bad_signature", "e-b", 1),
    "payload altered after signing": (_alter_payload, 403, "bad_signature", "e-b", 1),
    "unknown enclave id": (_unknown_enclave, 403, "unknown_enclave", None, 1),
    "replayed": (lambda d: d, 409, "replayed_push", "e-b", 1),
    "stale": (lambda d: d, 422, "stale_push", "e-b", 6 * 60),
    "from the future": (lambda d: d, 422, "push_from_future", "e-b", -2 * 60),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_a_mutated_real_push_is_refused_counted_and_changes_nothing(
    fleet: Fleet, tmp_path: Path, name: str
) -> None:
    mutate, status, reason, counted_against, offset = MUTATIONS[name]
    genuine = wait_until(lambda: fleet.relayed("e-b", accepted=True), "an accepted e-b push")[-1]
    console = local_console(fleet, tmp_path, at=pushed_at(genuine) + timedelta(seconds=1))
    accepted = console.push(genuine)
    assert accepted.status_code == 200, accepted.get_json()
    before = console.enclaves()
    assert before["e-b"]["attestation"]["verdict"] == "verified"

    console.clock.now = pushed_at(genuine) + timedelta(seconds=offset)
    refused = console.push(mutate(copy.deepcopy(genuine)))
    assert refused.status_code == status, refused.get_json()
    assert refused.get_json()["error"]["code"] == reason

    after = console.enclaves()
    counts = after[counted_against]["refusals"] if counted_against else console.unattributed()
    assert counts == {reason: 1}
    for field in ("status", "attestation", "pushes_accepted", "last_push_at"):
        assert after["e-b"][field] == before["e-b"][field], field


def test_an_older_real_push_after_a_newer_one_is_a_replay(fleet: Fleet, tmp_path: Path) -> None:
    pushes = wait_until(lambda: len(p := fleet.relayed("e-b", accepted=True)) >= 2 and p,
                        "two accepted e-b pushes")
    older, newer = pushes[-2], pushes[-1]
    console = local_console(fleet, tmp_path, at=pushed_at(newer) + timedelta(seconds=1))
    assert console.push(newer).status_code == 200
    refused = console.push(older)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "replayed_push"
    assert console.enclaves()["e-b"]["status"]["pushed_at"] == pushed_at(newer).isoformat()


def test_a_wrong_token_is_refused_before_anything_is_read(fleet: Fleet, tmp_path: Path) -> None:
    genuine = wait_until(lambda: fleet.relayed("e-b", accepted=True), "an accepted e-b push")[-1]
    console = local_console(fleet, tmp_path, at=pushed_at(genuine) + timedelta(seconds=1))
    for token in ("wrong", TOKEN + "x", ""):
        refused = console.push(genuine, token=token)
        assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "invalid_token"
    assert console.unattributed() == {"invalid_token": 3}
    assert console.enclaves()["e-b"]["status"] is None


def test_another_enclaves_certificate_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    """The impostor's real push: signed by its own attested key, naming e-a, with host names
    e-a's registration accepts; the appliance at e-a's URL holds another key."""
    pushed = wait_until(lambda: fleet.relayed("e-a"), "an impostor push")[-1]
    console = local_console(fleet, tmp_path, at=pushed_at(pushed) + timedelta(seconds=1))
    refused = console.push(pushed)
    assert refused.status_code == 403, refused.get_json()
    error = refused.get_json()["error"]
    assert error["code"] == "certificate_not_enclave" and "presents another key" in error["message"]
    entry = console.enclaves()["e-a"]
    assert entry["refusals"] == {"certificate_not_enclave": 1} and entry["status"] is None
    assert entry["attestation"]["verdict"] == "refused"
    assert entry["attestation"]["failed_check"] == "registered_url_key"


def test_a_certificate_the_policy_refuses_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    genuine = wait_until(lambda: fleet.relayed("e-b", accepted=True), "an accepted e-b push")[-1]
    other_image = write_pinned_policy(tmp_path / "other-image.toml", mr_td="ab" * 48)
    console = local_console(fleet, tmp_path, at=pushed_at(genuine) + timedelta(seconds=1),
                            entries=fleet.registry_entries(b_policy=other_image))
    refused = console.push(genuine)
    assert refused.status_code == 403, refused.get_json()
    assert refused.get_json()["error"]["code"] == "attestation_refused"
    entry = console.enclaves()["e-b"]
    assert entry["status"] is None and entry["refusals"] == {"attestation_refused": 1}
    assert entry["attestation"]["verdict"] == "refused"
    assert entry["attestation"]["failed_check"] == "mr_td"
