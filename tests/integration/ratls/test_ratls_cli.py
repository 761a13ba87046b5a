"""`appliance attest` and `appliance chat` as real subprocesses against the RA-TLS test server."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.pinned import simulated_td_pins
from support.ratls_fixtures import *  # noqa: F403 - fixtures
from support.ratls_server import COMPLETION_TEXT, MODEL
from support.ratls_world import NOW

pytestmark = pytest.mark.slow  # each case starts a Python process

AT = NOW.isoformat()


def appliance(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=120,
        check=False,
    )


@pytest.fixture
def root_pem(authority, tmp_path) -> Path:
    path = tmp_path / "sim-root.pem"
    path.write_bytes(authority.root_pem)
    return path


@pytest.fixture
def pinned(tmp_path) -> Path:
    """A tenant's policy file pinning the simulated TD's MRTD and RTMR0-2."""
    path = tmp_path / "pinned.json"
    path.write_text(json.dumps(simulated_td_pins()))
    return path


def test_attest_verifies_with_the_simulated_root(server, root_pem, pinned) -> None:
    run = appliance(
        "attest", server.url, "--sim-root", str(root_pem), "--at", AT, "--policy", str(pinned)
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("VERIFIED (SIMULATED evidence")
    assert run.stderr == ""  # quiet by default: no library INFO lines
    assert "binding      certificate mode, held" in run.stdout
    # Nothing but the handshake on the probed connection; collateral came over its own.
    assert server.received_until_closed(0) == b""
    assert server.connections[1].requests == ["GET /v1/attestation/collateral"]


def test_attest_json_with_nonce(server, root_pem, issuer, pinned) -> None:
    run = appliance(
        "attest", server.url, "--sim-root", str(root_pem), "--at", AT, "--nonce", "--json",
        "--policy", str(pinned),
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert (result["verified"], result["tee"]) == (True, "simulated")
    assert result["binding"]["mode"] == "nonce" and result["binding"]["held"] is True
    assert result["certificate"]["sha256_fingerprint"] == issuer.current().fingerprint.hex()
    assert {c["name"] for c in result["checks"]} >= {
        "dcap",
        "key_binding",
        "td_attributes.debug",
        "tcb_status",
        "mr_td",
        "model_digest",
    }
    assert server.connections[0].requests == ["GET /v1/attestation"]


def test_attest_refuses_simulated_evidence_under_intels_root(
    server, collateral_json, tmp_path
) -> None:
    bundle = tmp_path / "bundle.json"
    bundle.write_text(collateral_json)
    run = appliance("attest", server.url, "--collateral", str(bundle), "--at", AT, "--json")
    assert run.returncode == 1
    result = json.loads(run.stdout)
    assert result["verified"] is False
    assert result["errors"][0]["stage"] == "verify"
    assert server.received_until_closed(0) == b""


def test_attest_refuses_by_policy_file(serve, issuer, root_pem, tmp_path) -> None:
    issuer.reissue(model_digest=hashlib.sha256(b"served").digest())
    server = serve(issuer)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'allowed_model_digests = ["{hashlib.sha256(b"wanted").hexdigest()}"]\n'
        'allowed_tcb_statuses = ["UpToDate"]\n'
        + "".join(f'{name} = ["{values[0]}"]\n' for name, values in simulated_td_pins().items())
    )
    run = appliance(
        "attest",
        server.url,
        "--sim-root",
        str(root_pem),
        "--at",
        AT,
        "--policy",
        str(policy),
        "--json",
    )
    assert run.returncode == 1
    assert json.loads(run.stdout)["errors"][0]["type"] == "ModelDigestError"


@pytest.mark.parametrize(
    "args",
    [
        ["--at", "yesterday"],
        ["--policy", "/nonexistent/policy.toml"],
        ["--sim-root", "/nonexistent/root.pem"],
        ["--collateral", "/nonexistent/bundle.json"],
    ],
)
def test_attest_usage_errors_exit_2(server, root_pem, args) -> None:
    base = ["attest", server.url] + ([] if "--sim-root" in args else ["--sim-root", str(root_pem)])
    run = appliance(*base, *args)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "error" in run.stderr
    assert len(server.connections) == 0


def test_attest_plain_http_url_is_a_usage_error(root_pem) -> None:
    run = appliance("attest", "http://127.0.0.1:9", "--sim-root", str(root_pem))
    assert run.returncode == 2


@pytest.mark.parametrize("stream", [False, True])
def test_chat_verifies_then_asks(server, root_pem, pinned, stream) -> None:
    run = appliance(
        "chat",
        server.url,
        "--model",
        MODEL,
        "hi",
        "--sim-root",
        str(root_pem),
        "--at",
        AT,
        "--policy",
        str(pinned),
        *(["--stream"] if stream else []),
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == COMPLETION_TEXT
    assert "[attested: simulated, TCB UpToDate" in run.stderr
    assert server.connections[0].requests == ["POST /v1/chat/completions"]


def test_chat_refused_sends_no_prompt(serve, issuer, root_pem, tmp_path) -> None:
    issuer.reissue(model_digest=hashlib.sha256(b"served").digest())
    server = serve(issuer)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(
        {"allowed_model_digests": [hashlib.sha256(b"x").hexdigest()], **simulated_td_pins()}))
    run = appliance(
        "chat",
        server.url,
        "--model",
        MODEL,
        "secret prompt",
        "--sim-root",
        str(root_pem),
        "--at",
        AT,
        "--policy",
        str(policy),
    )
    assert run.returncode == 1
    assert "REFUSED" in run.stderr and "model_digest" in run.stderr
    assert server.received_until_closed(0) == b""


def test_without_pins_attest_refuses_and_chat_sends_no_prompt(server, root_pem) -> None:
    attest = appliance("attest", server.url, "--sim-root", str(root_pem), "--at", AT)
    assert attest.returncode == 1
    assert attest.stdout.startswith("REFUSED") and "measurements_pinned" in attest.stdout
    chat = appliance(
        "chat", server.url, "--model", MODEL, "secret prompt", "--sim-root", str(root_pem),
        "--at", AT,
    )
    assert chat.returncode == 1 and "measurements_pinned" in chat.stderr
    assert all(b"secret" not in c.received for c in server.connections)
    assert all(c.requests in ([], ["GET /v1/attestation/collateral"]) for c in server.connections)


def test_unsafe_unpinned_is_explicit_and_reported(server, root_pem) -> None:
    run = appliance(
        "attest", server.url, "--sim-root", str(root_pem), "--at", AT, "--unsafe-unpinned"
    )
    assert run.returncode == 0, run.stderr
    assert "UNSAFE_ALLOWED measurements_pinned" in run.stdout


def test_policy_init_pins_what_it_verified(serve, issuer, root_pem, tmp_path) -> None:
    digest = hashlib.sha256(b"served").digest()
    issuer.reissue(model_digest=digest)
    server = serve(issuer)
    out = tmp_path / "tofu.toml"
    init = appliance(
        "policy", "init", server.url, "--sim-root", str(root_pem), "--at", AT,
        "--pin-model-digest", "--out", str(out),
    )
    assert init.returncode == 0, init.stderr
    text = out.read_text()
    assert "TRUST ON FIRST USE" in text and f'source = "{server.url}"' in text
    assert f'observed_at = "{AT}"' in text
    for name, values in simulated_td_pins().items():
        assert f'{name} = ["{values[0]}"]' in text
    assert f'allowed_model_digests = ["{digest.hex()}"]' in text
    attest = appliance(
        "attest", server.url, "--sim-root", str(root_pem), "--at", AT, "--policy", str(out)
    )
    assert attest.returncode == 0, attest.stdout + attest.stderr
    assert "measurements_pinned" not in attest.stdout  # passed checks are not listed

    again = appliance("policy", "init", server.url, "--sim-root", str(root_pem), "--at", AT,
                      "--out", str(out))
    assert again.returncode == 2 and "exists" in again.stderr


def test_policy_init_from_a_quote_file(provider, collateral_json, root_pem, tmp_path) -> None:
    quote = tmp_path / "quote.bin"
    quote.write_bytes(provider.get_quote(bytes(64)))
    bundle = tmp_path / "bundle.json"
    bundle.write_text(collateral_json)
    init = appliance(
        "policy", "init", "--quote", str(quote), "--sim-root", str(root_pem),
        "--collateral", str(bundle), "--at", AT,
    )
    assert init.returncode == 0, init.stderr
    assert f'mr_td = ["{simulated_td_pins()["mr_td"][0]}"]' in init.stdout
    assert 'method = "trust-on-first-use"' in init.stdout


def test_policy_init_writes_nothing_for_what_does_not_verify(server, collateral_json,
                                                             tmp_path) -> None:
    bundle = tmp_path / "bundle.json"
    bundle.write_text(collateral_json)
    out = tmp_path / "tofu.toml"
    init = appliance(
        "policy", "init", server.url, "--collateral", str(bundle), "--at", AT, "--out", str(out)
    )
    assert init.returncode == 1
    assert "nothing written" in init.stderr and not out.exists()
