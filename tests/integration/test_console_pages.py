"""The console's pages in a real browser: `appliance serve --tee simulated` (fake engine)
pushing to a real `appliance console` (gunicorn on a port), and headless Chromium printing the
DOM after the pages' scripts ran (support/browser.py).

The appliance is registered twice: `e-a` at https://127.0.0.1:PORT under a policy pinning the
simulated TD, and `e-a-elsewhere` at https://localhost:PORT (the same TD, its other name) under
a policy pinning another MRTD, which the portal must refuse at `mr_td`. Screenshots of each page
are left in the test's temporary directory (printed; not committed).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.browser import chromium, dump_dom, screenshot
from support.console import Console, start_console, write_pinned_policy, write_registry
from support.engines import free_port
from support.pinned import simulated_td_pins
from support.service import Service, pack_model, start_service, wait_for_status
from support.verifying import verifying_client

from appliance.status_push import PUSH_PATH
from attest.simulated import SimulatedAuthority

pytestmark = pytest.mark.slow

MODEL = "tiny"
TOKEN = "console-pages-management-token"
OTHER_MR_TD = "cd" * 48
# An enclave id no appliance is registered under: the console's refusal quotes it, and the fleet
# page shows that refusal. Untrusted text: it must reach the DOM as text, never as markup.
HOSTILE = "<img src=x id=pwned><script>document.title='pwned'</script>"


@dataclass
class Setup:
    work: Path
    console: Console
    service: Service
    digest: str

    def dom(self, path: str, name: str) -> str:
        profile = self.work / f"chromium-{name}"
        shutil.rmtree(profile, ignore_errors=True)
        return dump_dom(self.console.url + path, profile)

    def keep_screenshot(self, path: str, name: str) -> None:
        shot = screenshot(self.console.url + path, self.work / f"chromium-shot-{name}",
                          self.work / f"{name}.png")
        print(f"screenshot of {path}: {shot}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    chromium()  # skip (or fail in CI) before starting anything
    work = tmp_path_factory.mktemp("console-pages")
    models, roothash, digest = pack_model(work, MODEL, {"config.json": '{"kind": "tiny"}'})
    port, console_port = free_port(), free_port()
    state = work / "state"
    SimulatedAuthority.create(state / "simulated", now=datetime.now(UTC))
    root = str(state / "simulated" / "root-ca.pem")
    registry = write_registry(work / "registry.toml", [
        {"id": "e-a", "url": f"https://127.0.0.1:{port}", "simulated_root": root,
         "policy": str(write_pinned_policy(work / "pinned.toml"))},
        {"id": "e-a-elsewhere", "url": f"https://localhost:{port}", "simulated_root": root,
         "policy": str(write_pinned_policy(work / "other.toml", mr_td=OTHER_MR_TD))},
    ])
    console = start_console(work, registry, port=console_port, token=TOKEN)
    service: Service | None = None
    try:
        service = start_service(
            work, models, roothash, port=port, state_dir=state,
            env={"APPLIANCE_MANAGEMENT_TOKEN": TOKEN},
            args=["--management-url", console.url, "--insecure-management-http",
                  "--push-interval", "0.5", "--enclave-id", "e-a"])
        yield Setup(work, console, service, digest)
    finally:
        if service is not None:
            assert service.stop() == 0, service.log()[-3000:]
        assert console.stop() == 0, console.log()[-3000:]


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        time.sleep(0.2)
    return value


def row_of(dom: str, enclave_id: str) -> str:
    match = re.search(rf'<tr data-enclave="{re.escape(enclave_id)}">(.*?)</tr>', dom, re.S)
    assert match, f"no row for {enclave_id} in:\n{dom}"
    return match.group(1)


def test_the_fleet_page_shows_the_appliance_and_its_script_keeps_it_current(
        setup: Setup) -> None:
    wait_until(lambda: setup.console.enclaves()["e-a"]["attestation"]["verdict"] == "verified",
               "e-a's pushes accepted")
    dom = setup.dom("/", "fleet-idle")
    # The script replaced the server's rows with its own rendering of GET /api/v1/enclaves.
    assert 'data-rendered-by="script"' in dom and "(refreshed)" in dom, dom
    row = row_of(dom, "e-a")
    assert "VERIFIED" in row and "SIMULATED" in row and MODEL not in row
    assert "REFUSED" not in row_of(dom, "e-a-elsewhere")  # no push: unknown
    assert "UNKNOWN" in row_of(dom, "e-a-elsewhere")

    # Load a model after that page was served: the next page shows it (script-rendered).
    with verifying_client(setup.service) as client:
        response = client.http.post("/v1/models/load", json={"model": MODEL},
                                    headers=setup.service.auth())
        assert response.status_code == 202, response.text
        wait_for_status(client.http, lambda s: s["proxy_status"] == "ready")
    wait_until(lambda: setup.console.enclaves()["e-a"]["attestation"].get("model_digest")
               == setup.digest, "the loaded model's digest attested at the console")
    dom = setup.dom("/", "fleet-ready")
    assert 'data-rendered-by="script"' in dom, dom
    row = row_of(dom, "e-a")
    assert "VERIFIED" in row and f">{MODEL}<" in row and setup.digest in row
    assert "ready" in row and "100%" in row
    setup.keep_screenshot("/", "fleet")


def test_a_hostile_string_reaches_the_fleet_page_as_text(setup: Setup) -> None:
    refused = httpx.post(setup.console.url + PUSH_PATH, timeout=10,
                         json={"payload": {"enclave_id": HOSTILE}},
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "unknown_enclave"
    dom = setup.dom("/", "fleet-hostile")
    assert 'data-rendered-by="script"' in dom, dom
    last = re.search(r'<div id="unattributed-last">(.*?)</div>', dom, re.S)
    assert last and "&lt;img src=x id=pwned&gt;&lt;script&gt;" in last.group(1), dom
    assert 'id="pwned"' not in dom and "<title>pwned" not in dom
    assert "unknown_enclave: 1" in dom


def test_the_portal_page_shows_a_verified_simulated_app(setup: Setup) -> None:
    dom = setup.dom("/apps/e-a", "app-verified")
    verdict = re.search(r'<div id="verdict"[^>]*>(.*?)</div>', dom, re.S)
    assert verdict and verdict.group(1) == "VERIFIED", dom
    assert 'id="simulated"' in dom and "SIMULATED evidence" in dom
    assert simulated_td_pins()["mr_td"][0] in dom
    checks = re.findall(r'<td class="check-name">(.*?)</td>', dom)
    assert {"dcap", "key_binding", "hostname", "mr_td"} <= set(checks), checks
    assert 'id="failure"' not in dom
    setup.keep_screenshot("/apps/e-a", "app-verified")


def test_the_portal_page_shows_the_failed_check_of_a_refused_app_first(setup: Setup) -> None:
    dom = setup.dom("/apps/e-a-elsewhere", "app-refused")
    verdict = re.search(r'<div id="verdict"[^>]*>(.*?)</div>', dom, re.S)
    assert verdict and verdict.group(1) == "REFUSED", dom
    assert re.search(r'<code id="failed-check">mr_td</code>', dom)
    assert dom.index('id="failure"') < dom.index('id="measurements"')
    checks = re.findall(r'<td class="check-name">(.*?)</td>', dom)
    assert checks[0] == "mr_td", checks
    assert OTHER_MR_TD in dom and 'id="simulated"' in dom
    setup.keep_screenshot("/apps/e-a-elsewhere", "app-refused")


def test_an_unknown_app_is_a_404_page(setup: Setup) -> None:
    response = httpx.get(setup.console.url + "/apps/nobody", timeout=10)
    assert response.status_code == 404 and "app_not_found" in response.text
    dom = setup.dom("/apps/nobody", "app-unknown")
    assert "404: app_not_found" in dom
