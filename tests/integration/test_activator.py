"""The privileged activator on a real Unix socket, with its client, real packed model images and
the real lifecycle.

Device-mapper does not exist on dev/CI kernels (no CONFIG_MD), so `veritysetup open`, `mount`,
`umount` and `veritysetup close` go to a fake command runner that records them; everything
else is real: the server thread, the socket and its permissions, SO_PEERCRED (a forked child
that drops to `nobody`), the protocol, name resolution, trusted records, size and superblock
checks, and the lifecycle with the fake vLLM process. The last test runs `appliance activator`
as a process with the real veritysetup, which fails closed here for want of device-mapper.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.commands import FakeRunner
from support.engines import fake_engine
from support.mountinfo import mountinfo, mountinfo_line

from loader.activator.client import ActivatorClient
from loader.activator.dm_verity import DmVerityActivator
from loader.activator.recovery import MountTableReader, read_mountinfo
from loader.activator.service import ActivatorServer, ActivatorService, ActivatorSettings
from loader.errors import (
    ActivationError,
    ActivatorPeerError,
    ActivatorUnavailableError,
    ExpectedDigestMismatchError,
    ModelNameError,
    ModelNotActiveError,
    MountTableError,
    ParameterMismatchError,
    RecordError,
    StaleMappingError,
)
from loader.images.model_image import ModelImage, Progress, VerifiedModel, load_record
from loader.images.pack import pack_model
from loader.images.record import TrustedRecord
from loader.lifecycle.operations import Lifecycle
from loader.lifecycle.status import ModelState
from loader.settings import HealthSettings, LoaderSettings

NOBODY = 65534
WAIT = 20.0


@dataclass
class World:
    root: Path
    settings: ActivatorSettings
    runner: FakeRunner
    service: ActivatorService

    def pack(self, name: str) -> TrustedRecord:
        return pack(self.root, self.settings, name)

    def client(self) -> ActivatorClient:
        return ActivatorClient(self.settings.socket_path, timeout=WAIT)

    def activate(self, record: TrustedRecord, progress: Progress | None = None) -> VerifiedModel:
        return activate(self.client(), record, progress)

    @property
    def spawn_log(self) -> Path:
        return self.root / "spawns.jsonl"

    def lifecycle(self, vllm_bin: Path) -> Lifecycle:
        """A lifecycle over the same directories whose verified models come from the activator."""
        settings = LoaderSettings(
            models_dir=self.settings.models_dir,
            roothash_dir=self.settings.roothash_dir,
            work_dir=self.root / "work",
            state_dir=self.root / "state",
            health=HealthSettings(startup_timeout=10.0, poll_interval=0.05, check_interval=0.1),
            stop_grace=2.0,
        )
        engine = fake_engine(vllm_bin, spawn_log=self.spawn_log)
        return Lifecycle.create(settings, engine, materialize=self.client())

    def raw(self, payload: bytes) -> dict:
        """One raw exchange on the socket: what any local process could send."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(WAIT)
            sock.connect(str(self.settings.socket_path))
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            return json.loads(sock.makefile("rb").readline())


def activator_settings(tmp_path: Path) -> ActivatorSettings:
    # The socket's directory must be reachable by `nobody` for the peer test; tmp_path is not.
    socket_dir = Path(tempfile.mkdtemp(prefix="activator-"))
    os.chmod(socket_dir, 0o755)  # noqa: S103 - nobody must traverse it (above)
    settings = ActivatorSettings(
        socket_path=socket_dir / "activator.sock",
        models_dir=tmp_path / "models",
        roothash_dir=tmp_path / "roothash",
        mount_dir=tmp_path / "mounts",
        allowed_uid=os.getuid(),
        group="nogroup" if os.getuid() == 0 else None,
    )
    settings.models_dir.mkdir()
    settings.roothash_dir.mkdir()
    return settings


def pack(root: Path, settings: ActivatorSettings, name: str) -> TrustedRecord:
    source = Path(tempfile.mkdtemp(dir=root, prefix=f"source-{name}-"))
    (source / "config.json").write_text(json.dumps({"model_type": "fake", "name": name}))
    (source / "model.safetensors").write_bytes(os.urandom(64 * 1024))
    return pack_model(source, name, settings.models_dir, settings.roothash_dir).record


@contextmanager
def serving(
    root: Path,
    settings: ActivatorSettings,
    runner: FakeRunner,
    read_mount_table: MountTableReader = read_mountinfo,
) -> Iterator[World]:
    """The activator on its socket in a thread, started (and reconciled) as the command does."""
    service = ActivatorService(
        settings, DmVerityActivator(run=runner), read_mount_table=read_mount_table
    )
    try:
        server = ActivatorServer(settings, service)
    except BaseException:
        shutil.rmtree(settings.socket_path.parent, ignore_errors=True)
        raise
    thread = threading.Thread(target=server.serve_forever, name="activator", daemon=True)
    thread.start()
    try:
        yield World(root, settings, runner, service)
    finally:
        server.stop()
        thread.join(WAIT)
        shutil.rmtree(settings.socket_path.parent, ignore_errors=True)
    assert not thread.is_alive()
    assert not settings.socket_path.exists()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    runner = FakeRunner()
    with serving(tmp_path, activator_settings(tmp_path), runner) as started:
        # Start-up reconciliation: nothing of ours is mounted here, the fake dmsetup lists nothing.
        assert runner.calls == [["dmsetup", "ls", "--target", "verity"]]
        runner.calls.clear()
        yield started


def activate(
    client: ActivatorClient, record: TrustedRecord, progress: Progress | None = None
) -> VerifiedModel:
    # Paths that do not exist: the client sends only the name and the digest.
    unused = ModelImage(record.name, Path("/nonexistent/x.img"), Path("/nonexistent/x.verity"))
    return client(unused, record, Path("/nonexistent/work"), progress=progress)


def device(record: TrustedRecord) -> str:
    return f"appliance-model-{record.name}-{record.digest[:16]}"


# -- activate, release, idempotence -------------------------------------------------------------


def test_activate_opens_pinned_mounts_read_only_and_release_tears_down(world: World) -> None:
    record = world.pack("tiny")
    models = world.settings.models_dir.resolve()
    progress: list[float] = []

    verified = world.activate(record, progress=progress.append)

    name = device(record)
    p = record.params
    assert world.runner.calls == [
        ["veritysetup", "open", str(models / "tiny.img"), name, str(models / "tiny.verity"),
         record.digest, "--no-superblock", "--hash", "sha256", "--format", "1",
         "--data-block-size", "4096", "--hash-block-size", "4096",
         "--data-blocks", str(p.data_blocks), "--hash-offset", "4096", "--salt", p.salt.hex()],
        ["mount", "-t", "squashfs", "-o", "ro,nodev,nosuid,noexec", f"/dev/mapper/{name}",
         str(verified.path)],
    ]  # fmt: skip
    assert verified.path.parent == world.settings.mount_dir and verified.path.is_dir()
    assert stat.S_IMODE(world.settings.mount_dir.stat().st_mode) == 0o755
    assert verified.digest == record.digest and progress == [1.0]
    assert [(m.model, m.digest, m.path) for m in world.client().status()] == [
        ("tiny", record.digest, str(verified.path))
    ]

    verified.close()
    assert world.runner.calls[2:] == [
        ["umount", str(verified.path)],
        ["veritysetup", "close", name],
    ]
    assert not verified.path.exists()
    assert world.client().status() == []


def test_socket_is_0660_in_the_configured_group(world: World) -> None:
    st = world.settings.socket_path.stat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    if world.settings.group is not None:
        assert st.st_gid == NOBODY  # nogroup


def test_activating_an_active_model_again_returns_the_same_path(world: World) -> None:
    record = world.pack("tiny")
    first = world.activate(record)
    second = world.activate(record)
    assert second.path == first.path
    assert [call[:2] for call in world.runner.calls] == [["veritysetup", "open"], ["mount", "-t"]]
    first.close()
    assert len(world.client().status()) == 0
    with pytest.raises(ModelNotActiveError):
        second.close()  # one activation, one deactivation


def test_deactivating_what_is_not_active_is_an_error(world: World) -> None:
    record = world.pack("tiny")
    with pytest.raises(ModelNotActiveError, match="not active") as caught:
        world.client().deactivate("tiny", record.digest)
    assert caught.value.check == "active"
    assert world.runner.calls == []


def test_a_failed_mount_is_reported_with_its_cause_and_leaves_nothing_active(world: World) -> None:
    record = world.pack("tiny")
    world.runner.fail = "mount"
    with pytest.raises(ActivationError, match="simulated failure") as caught:
        world.activate(record)
    assert caught.value.check == "mount"
    assert world.runner.calls[-1] == ["veritysetup", "close", device(record)]
    assert world.client().status() == []


def test_stop_deactivates_what_is_still_active(world: World) -> None:
    record = world.pack("tiny")
    verified = world.activate(record)
    world.service.deactivate_all()
    assert world.runner.calls[2:] == [
        ["umount", str(verified.path)],
        ["veritysetup", "close", device(record)],
    ]
    assert world.client().status() == []


# -- recovery: leftovers of a crashed run, failed teardowns ---------------------------------------


@dataclass
class Leftovers:
    """What a crashed activator left: `tiny` mounted under the mount dir, `other` only mapped."""

    settings: ActivatorSettings
    tiny: TrustedRecord
    other: TrustedRecord
    tiny_mount: Path
    table: bytes
    listing: str


@pytest.fixture
def leftovers(tmp_path: Path) -> Leftovers:
    settings = activator_settings(tmp_path)
    tiny, other = pack(tmp_path, settings, "tiny"), pack(tmp_path, settings, "other")
    mount_dir = settings.mount_dir.resolve()
    tiny_mount = mount_dir / "tiny.k3x9"
    tiny_mount.mkdir(parents=True)
    table = mountinfo(
        mountinfo_line(40, str(tiny_mount), f"/dev/mapper/{device(tiny)}"),
        # Never touched: ours but outside the mount dir or nested in it; not ours under it.
        mountinfo_line(41, "/mnt/copy of tiny", f"/dev/mapper/{device(tiny)}"),
        mountinfo_line(42, str(mount_dir / "x" / "y"), f"/dev/mapper/{device(other)}"),
        mountinfo_line(43, str(mount_dir / "scratch"), "/dev/vdb", fstype="ext4"),
        mountinfo_line(44, str(mount_dir / "odd.1"), "/dev/mapper/appliance-model-odd"),
    )
    listing = "".join(
        f"{name}\t(253:{minor})\n"
        for minor, name in enumerate(
            [device(other), "vg-root", device(tiny), "appliance-model-odd", "appliance-model-x-Y"]
        )
    )
    return Leftovers(settings, tiny, other, tiny_mount, table, listing)


def serve_leftovers(
    tmp_path: Path, left: Leftovers, runner: FakeRunner
) -> AbstractContextManager[World]:
    runner.stdout["dmsetup ls"] = left.listing
    return serving(tmp_path, left.settings, runner, read_mount_table=lambda: left.table)


def test_leftovers_of_a_crashed_run_are_torn_down_at_start_and_nothing_else(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    runner = FakeRunner()
    with serve_leftovers(tmp_path, leftovers, runner) as world:
        assert runner.calls == [
            ["dmsetup", "ls", "--target", "verity"],
            ["veritysetup", "close", device(leftovers.other)],
            ["umount", str(leftovers.tiny_mount)],
            ["veritysetup", "close", device(leftovers.tiny)],
        ]
        assert not leftovers.tiny_mount.exists()
        client = world.client()
        assert (client.status(), client.stale()) == ([], [])
        # The device name is free again: the model is mapped afresh, with pinned parameters.
        verified = world.activate(leftovers.tiny)
        assert [call[:2] for call in runner.calls[4:]] == [["veritysetup", "open"], ["mount", "-t"]]
        verified.close()


def test_a_busy_leftover_is_listed_and_refuses_activation_of_its_model_until_torn_down(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    runner = FakeRunner(fail="umount")  # EBUSY: an engine still reads the model
    with serve_leftovers(tmp_path, leftovers, runner) as world:
        client = world.client()
        [stale] = client.stale()
        assert (stale.device, stale.mount_points) == (
            device(leftovers.tiny),
            [str(leftovers.tiny_mount)],
        )
        assert "umount failed with exit status 1: umount: simulated failure" in stale.error
        assert client.status() == []
        start = len(runner.calls)

        with pytest.raises(StaleMappingError, match="could not be torn down") as caught:
            world.activate(leftovers.tiny)
        assert caught.value.check == "stale mapping"
        assert caught.value.actual == f"{device(leftovers.tiny)} {leftovers.tiny_mount}"
        assert runner.calls[start:] == [["umount", str(leftovers.tiny_mount)]]  # retried, no open

        world.activate(leftovers.other)  # another model is not held up

        runner.fail = None  # the engine stopped: the next activation tears down, then maps
        world.activate(leftovers.tiny)
        assert [call[:2] for call in runner.calls[start + 3 :]] == [
            ["umount", str(leftovers.tiny_mount)],
            ["veritysetup", "close"],
            ["veritysetup", "open"],
            ["mount", "-t"],
        ]
        assert client.stale() == [] and len(client.status()) == 2


def test_a_busy_leftover_is_torn_down_by_a_later_deactivate(
    tmp_path: Path, leftovers: Leftovers
) -> None:
    runner = FakeRunner(fail="umount")
    with serve_leftovers(tmp_path, leftovers, runner) as world:
        client = world.client()
        with pytest.raises(ActivationError, match="umount failed"):
            client.deactivate("tiny", leftovers.tiny.digest)
        assert len(client.stale()) == 1
        runner.fail = None
        client.deactivate("tiny", leftovers.tiny.digest)
        assert runner.calls[-2:] == [
            ["umount", str(leftovers.tiny_mount)],
            ["veritysetup", "close", device(leftovers.tiny)],
        ]
        assert client.stale() == []
        with pytest.raises(ModelNotActiveError):
            client.deactivate("tiny", leftovers.tiny.digest)


def test_a_mount_table_that_does_not_parse_stops_the_start_before_any_command(
    tmp_path: Path,
) -> None:
    settings = activator_settings(tmp_path)
    runner = FakeRunner()
    broken = mountinfo("40 1 253:40 / /x ro master:1 squashfs /dev/mapper/x ro\n")  # no "-"
    serve = serving(tmp_path, settings, runner, read_mount_table=lambda: broken)
    with pytest.raises(MountTableError, match="line 4") as caught, serve:
        pass
    assert caught.value.check == "mountinfo"
    assert runner.calls == []
    assert not settings.socket_path.exists()


def test_a_failed_deactivation_stays_listed_and_a_later_deactivate_retries_only_what_is_left(
    world: World,
) -> None:
    record = world.pack("tiny")
    verified = world.activate(record)
    world.runner.fail = "veritysetup close"
    with pytest.raises(ActivationError, match="veritysetup close failed") as caught:
        verified.close()
    assert caught.value.check == "veritysetup close"
    client = world.client()
    assert client.status() == []
    [stale] = client.stale()
    assert (stale.device, stale.mount_points) == (device(record), [])  # unmounted already
    assert "simulated failure" in stale.error

    world.runner.fail = None
    client.deactivate("tiny", record.digest)
    assert world.runner.calls[-2:] == [
        ["veritysetup", "close", device(record)],
        ["veritysetup", "close", device(record)],
    ]
    assert ["umount", str(verified.path)] not in world.runner.calls[3:]
    assert client.stale() == []


def test_stop_retries_a_failed_deactivation(world: World) -> None:
    record = world.pack("tiny")
    verified = world.activate(record)
    world.runner.fail = "umount"
    with pytest.raises(ActivationError, match="umount failed"):
        verified.close()
    world.runner.fail = None
    world.service.deactivate_all()
    assert world.runner.calls[-2:] == [
        ["umount", str(verified.path)],
        ["veritysetup", "close", device(record)],
    ]
    assert world.client().stale() == []


# -- refusals: nothing runs ---------------------------------------------------------------------


def test_a_digest_other_than_the_activators_record_is_refused(world: World) -> None:
    record = world.pack("tiny")
    # The appliance's record and the activator's disagree: the activator's wins, nothing runs.
    theirs = dataclasses.replace(record, root_hash=bytes(32))
    with pytest.raises(ExpectedDigestMismatchError) as caught:
        world.activate(theirs)
    error = caught.value
    assert (error.check, error.expected, error.actual) == (
        "expected digest",
        "00" * 32,
        record.digest,
    )
    assert world.runner.calls == []


def test_an_unpinned_model_is_refused(world: World) -> None:
    record = world.pack("tiny")
    (world.settings.roothash_dir / "tiny.roothash").unlink()
    with pytest.raises(RecordError, match="no trusted record"):
        world.activate(record)
    assert world.runner.calls == []


@pytest.mark.parametrize("name", ["../tiny", "tiny/../../etc", "/etc/passwd", ".hidden", "a" * 65])
def test_unsafe_names_are_refused(world: World, name: str) -> None:
    world.pack("tiny")
    answer = world.raw(
        json.dumps({"op": "activate", "model": name, "digest": "ab" * 32}).encode() + b"\n"
    )
    assert answer["ok"] is False
    assert answer["error"]["type"] in ("ModelNameError", "ActivatorProtocolError")  # > 64: schema
    assert world.runner.calls == []


def test_a_symlink_escaping_the_models_dir_is_refused(world: World) -> None:
    record = world.pack("tiny")
    outside = world.root / "outside"
    outside.mkdir()
    models = world.settings.models_dir
    for suffix in (".img", ".verity"):
        shutil.move(models / f"tiny{suffix}", outside / f"tiny{suffix}")
        (models / f"tiny{suffix}").symlink_to(outside / f"tiny{suffix}")
    with pytest.raises(ModelNameError, match="escapes the models directory") as caught:
        world.activate(record)
    assert caught.value.check == "path"
    assert world.runner.calls == []


def test_an_image_of_another_size_is_refused(world: World) -> None:
    record = world.pack("tiny")
    with open(world.settings.models_dir / "tiny.img", "ab") as image:
        image.write(b"\0" * 4096)
    with pytest.raises(ParameterMismatchError) as caught:
        world.activate(record)
    assert (caught.value.check, caught.value.expected) == ("image_size", str(record.image_size))
    assert world.runner.calls == []


def test_a_superblock_that_disagrees_with_the_record_is_refused(world: World) -> None:
    record = world.pack("tiny")
    hash_path = world.settings.models_dir / "tiny.verity"
    raw = bytearray(hash_path.read_bytes())
    raw[72] ^= 1  # data_blocks in the (untrusted, unused) superblock
    hash_path.write_bytes(bytes(raw))
    with pytest.raises(ParameterMismatchError) as caught:
        world.activate(record)
    assert caught.value.check == "data_blocks"
    assert world.runner.calls == []


@pytest.mark.parametrize(
    "payload",
    [
        b"{" + b" " * 2048 + b"}\n",  # longer than a request may be
        b"not json\n",
        b'["activate"]\n',
        b'{"op": "activate", "model": "tiny"}\n',  # no digest
        b'{"op": "activate", "model": "tiny", "digest": "' + b"AB" * 32 + b'"}\n',  # upper case
        b'{"op": "activate", "model": "tiny", "digest": "abcd"}\n',  # not a digest's length
        b'{"op": "activate", "model": 7, "digest": "' + b"ab" * 32 + b'"}\n',  # no coercion
        b'{"op": "status", "model": "tiny"}\n',
        b'{"op": "status", "extra": 1}\n',
        b'{"op": "mount", "model": "tiny", "digest": "' + b"ab" * 32 + b'"}\n',
        b'{"op": "status"}',  # no newline before EOF
        b'{"op": "status"}\n{"op": "status"}\n',  # one request per connection
    ],
)
def test_malformed_and_oversize_requests_are_refused(world: World, payload: bytes) -> None:
    world.pack("tiny")
    answer = world.raw(payload)
    assert answer["ok"] is False and answer["error"]["type"] == "ActivatorProtocolError"
    assert world.runner.calls == []
    assert world.client().status() == []  # and the service goes on


def test_a_silent_peer_times_out_and_the_service_goes_on(world: World, tmp_path: Path) -> None:
    quick = dataclasses.replace(
        world.settings,
        socket_path=world.settings.socket_path.with_name("quick.sock"),
        request_timeout=0.2,
    )
    server = ActivatorServer(quick, world.service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(WAIT)
            sock.connect(str(quick.socket_path))
            answer = json.loads(sock.makefile("rb").readline())  # sends nothing
        assert answer["error"]["type"] == "ActivatorProtocolError"
        assert "no request line within 0.2 s" in answer["error"]["message"]
        assert ActivatorClient(quick.socket_path).status() == []
    finally:
        server.stop()
        thread.join(WAIT)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to drop to nobody")
def test_a_peer_with_another_uid_is_refused_and_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    record = world.pack("tiny")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody/nogroup (allowed through the 0660 socket), then ask
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                world.activate(record)
                outcome = "activated"
            except ActivatorPeerError as error:
                outcome = f"refused {error.check} {error.actual}"
            except BaseException as error:
                outcome = f"{type(error).__name__}: {error}"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with caplog.at_level(logging.WARNING, logger="loader.activator.service"):
        with os.fdopen(read_end, "rb") as pipe:
            outcome = pipe.read().decode()
        os.waitpid(pid, 0)
    assert outcome == f"refused peer uid {NOBODY}"
    assert world.runner.calls == []
    assert f"refused a peer: uid {NOBODY} (pid " in caplog.text


def test_no_activator_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ActivatorUnavailableError) as caught:
        ActivatorClient(tmp_path / "absent.sock").status()
    assert caught.value.actual == str(tmp_path / "absent.sock")


# -- through the lifecycle ----------------------------------------------------------------------


def test_lifecycle_loads_and_unloads_through_the_activator(
    world: World, fake_vllm_bin: Path
) -> None:
    record = world.pack("tiny")
    lifecycle = world.lifecycle(fake_vllm_bin)
    try:
        lifecycle.load("tiny", expected_digest=record.digest)
        status = lifecycle.wait_for(lambda s: s.state in (ModelState.READY, ModelState.ERROR), WAIT)
        assert status.state is ModelState.READY, status.error
        assert status.loaded_model_digest == record.digest
        [active] = world.client().status()
        # The engine serves the activator's mount point, nothing under the appliance's work dir.
        [spawn] = [json.loads(line) for line in world.spawn_log.read_text().splitlines()]
        assert spawn["model"] == active.path
        work = world.root / "work"
        assert not work.exists() or list(work.iterdir()) == []

        lifecycle.unload("tiny")
        status = lifecycle.wait_for(lambda s: s.state is ModelState.IDLE, WAIT)
        assert world.client().status() == []
        assert [call[0:2] for call in world.runner.calls[2:]] == [
            ["umount", active.path],
            ["veritysetup", "close"],
        ]
    finally:
        lifecycle.close()


def test_lifecycle_fails_closed_when_the_activator_refuses(
    world: World, fake_vllm_bin: Path
) -> None:
    world.pack("tiny")
    world.runner.fail = "veritysetup open"
    lifecycle = world.lifecycle(fake_vllm_bin)
    try:
        lifecycle.load("tiny")
        status = lifecycle.wait_for(lambda s: s.state in (ModelState.READY, ModelState.ERROR), WAIT)
        assert (status.state, status.error_type) == (ModelState.ERROR, "ActivationError")
        assert "veritysetup open failed" in str(status.error)
        assert not world.spawn_log.exists()  # no engine
    finally:
        lifecycle.close()


# -- the command -------------------------------------------------------------------------------


def test_appliance_activator_command_serves_and_fails_closed_without_device_mapper(
    tmp_path: Path,
) -> None:
    """The real process with the real veritysetup: `open` fails here (no device-mapper)."""
    if shutil.which("veritysetup") is None:
        pytest.fail("veritysetup not installed (scripts/bootstrap.sh installs cryptsetup-bin)")
    models, roothashes = tmp_path / "models", tmp_path / "roothash"
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text("{}")
    record = pack_model(source, "tiny", models, roothashes).record
    sock = tmp_path / "run" / "activator.sock"
    sock.parent.mkdir()
    # Type=notify: READY=1 once the socket exists (the appliance unit is ordered after it).
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(WAIT)
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance", "activator", "--socket", str(sock),
         "--models-dir", str(models), "--roothash-dir", str(roothashes),
         "--mount-dir", str(tmp_path / "mounts"), "--allow-uid", str(os.getuid())],
        stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
    )  # fmt: skip
    try:
        with notify:
            assert notify.recv(64) == b"READY=1"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        client = ActivatorClient(sock, timeout=WAIT)
        assert client.status() == []
        with pytest.raises(ActivationError, match="veritysetup open failed") as caught:
            activate(client, load_record(roothashes, "tiny"))
        assert caught.value.check == "veritysetup open"
        assert client.status() == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not sock.exists()
    assert record.digest in process.stderr.read()  # refusals are logged with the digest


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--allow-uid", "no-such-user", "no such user"),
        ("--group", "no-such-group", "no such group"),
    ],
)
def test_appliance_activator_refuses_unknown_users_and_groups(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    argv = {"--socket": str(tmp_path / "a.sock"), "--models-dir": str(tmp_path),
            "--roothash-dir": str(tmp_path), "--mount-dir": str(tmp_path / "mounts"),
            "--allow-uid": "0"} | {flag: value}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "appliance", "activator", *[x for kv in argv.items() for x in kv]],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "a.sock").exists()
