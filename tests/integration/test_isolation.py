"""What a compromised neighbour can reach, tried for real: the secrets are in no process's
environment, the control socket admits only the API server's processes, and an engine started
as its own user can reach nothing of the service's (the users are created here: we are root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.engines import FAKE_VLLM
from support.push_receiver import PushReceiver
from support.service import pack_model, start_service, wait_for_status
from support.verifying import verifying_client

MODEL = "tiny"
LOAD_TOKEN = "isolation-load-token-7f3a"
MANAGEMENT_TOKEN = "isolation-management-token-91c2"
ENGINE_USER = "appliance-engine-test"

pytestmark = pytest.mark.slow


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_bytes()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def as_user(user: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--", *command],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def public_work() -> Iterator[Path]:
    """A work directory other users may traverse (pytest's tmp_path is 0700), and write in like
    /tmp: the fake engine records its spawns there."""
    path = Path(tempfile.mkdtemp(prefix="appliance-isolation-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def images(public_work: Path) -> tuple[Path, Path]:
    models, roothash, _ = pack_model(public_work, MODEL, {"config.json": '{"kind": "tiny"}'})
    return models, roothash


def test_no_secret_is_in_any_environment_and_the_token_still_works(
    public_work: Path, images
) -> None:
    receiver = PushReceiver()
    # The management token as systemd's LoadCredential= gives it: a file named after the setting.
    credentials = public_work / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "management_token").write_text(MANAGEMENT_TOKEN)
    service = start_service(
        public_work, *images, load_token=LOAD_TOKEN,
        env={"CREDENTIALS_DIRECTORY": str(credentials)},
        args=["--management-url", receiver.url, "--insecure-management-http"],
    )  # fmt: skip
    try:
        with verifying_client(service) as client:
            client.http.post("/v1/models/load", json={"model": MODEL}, headers=service.auth())
            wait_for_status(client.http, lambda s: s["proxy_status"] == "ready")
        processes = descendants(service.process.pid)
        assert len(processes) >= 4  # supervisor, API server, two workers (and the engine)
        for pid in processes:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert LOAD_TOKEN.encode() not in environ, pid
            assert MANAGEMENT_TOKEN.encode() not in environ, pid
            if pid != service.process.pid:  # the API server and its workers are not told where
                assert b"CREDENTIALS_DIRECTORY" not in environ, pid
        receiver.wait_for(1)  # the supervisor still has the token it no longer shows
        assert receiver.received[-1][1] == f"Bearer {MANAGEMENT_TOKEN}"
    finally:
        assert service.stop() == 0
    # A clean run and a clean stop log no error (no "Bad file descriptor" at shutdown either).
    assert '"level": "error"' not in service.log() and "Traceback" not in service.log()


def test_the_control_socket_refuses_a_same_user_stranger(public_work: Path, images) -> None:
    service = start_service(public_work, *images)
    try:
        control = service.state_dir / "run" / "control.sock"
        with socket.socket(socket.AF_UNIX) as stranger:
            stranger.settimeout(10)
            stranger.connect(str(control))  # same uid: the file mode lets it in ...
            try:
                stranger.sendall(b"GET /identity HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = stranger.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                answer = b""
        assert answer == b""  # ... SO_PEERCRED does not: no identity, no key
        assert "control socket: refused pid" in service.log()
        with verifying_client(service) as client:  # the workers still get through
            assert client.http.get("/v1/models/status").status_code == 200
    finally:
        assert service.stop() == 0


@pytest.fixture(scope="module")
def engine_user() -> str:
    if os.geteuid() != 0:
        pytest.skip("creating an engine user needs root")
    if subprocess.run(["id", ENGINE_USER], capture_output=True, check=False).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", ENGINE_USER],
            check=True, capture_output=True,
        )  # fmt: skip
    return ENGINE_USER


@pytest.fixture(scope="module")
def public_engine(public_work: Path) -> Path:
    """The fake engine where another user can run it: the system Python, a world-readable copy."""
    directory = public_work / "engine"
    directory.mkdir(mode=0o755)
    shutil.copy(FAKE_VLLM, directory / "fake_vllm.py")
    launcher = directory / "vllm"
    launcher.write_text(f'#!/bin/sh\nexec /usr/bin/python3 {directory / "fake_vllm.py"} "$@"\n')
    launcher.chmod(0o755)
    (directory / "fake_vllm.py").chmod(0o644)
    return launcher


def test_the_engine_runs_as_its_own_user_and_reaches_nothing(
    public_work: Path, images, engine_user: str, public_engine: Path
) -> None:
    service = start_service(
        public_work, *images, vllm_bin=public_engine, args=["--engine-user", engine_user]
    )
    try:
        with verifying_client(service) as client:
            client.http.post("/v1/models/load", json={"model": MODEL}, headers=service.auth())
            status = wait_for_status(client.http, lambda s: s["proxy_status"] in ("ready", "error"))
            assert status["proxy_status"] == "ready", status  # it could read its model
        [engine] = service.engine_pids()
        fields = status_fields(engine)
        uid = int(subprocess.run(["id", "-u", engine_user], capture_output=True, text=True,
                                 check=True).stdout)
        assert fields["Uid"].split() == [str(uid)] * 4 and fields["Groups"] == ""
        assert fields["CapEff"] == fields["CapPrm"] == fields["CapAmb"] == "0" * 16
        assert fields["NoNewPrivs"] == "1"

        api = [p for p in descendants(service.process.pid) if p not in (service.process.pid,
                                                                        engine)]
        control = service.state_dir / "run" / "control.sock"
        probes = {
            "control socket": [
                "/usr/bin/python3", "-c",
                f"import socket; socket.socket(socket.AF_UNIX).connect('{control}')",
            ],
            "state directory": ["ls", str(service.state_dir)],
            "receipts": ["cat", str(service.state_dir / "receipts.sqlite3")],
            "simulated authority": ["ls", str(service.state_dir / "simulated")],
            "worker environment": ["cat", f"/proc/{api[-1]}/environ"],
            "supervisor memory": ["cat", f"/proc/{service.process.pid}/maps"],
        }  # fmt: skip
        for what, command in probes.items():
            run = as_user(engine_user, *command)
            assert run.returncode != 0, what
            assert "Permission denied" in run.stderr or "PermissionError" in run.stderr, (
                what, run.stderr)
    finally:
        assert service.stop() == 0
