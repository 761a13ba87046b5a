"""The privileged activator: kernel dm-verity activation for the unprivileged appliance.

`veritysetup open` and `mount` need CAP_SYS_ADMIN, device-mapper and loop devices, which the
network-facing appliance must not have. This small service has them and nothing else: no network,
one Unix socket, three requests (`loader.activator.protocol`), served one at a time.

It trusts nothing from its client but a model name and the digest the client expects:

    1. the peer's uid (SO_PEERCRED, taken by the kernel at connect) must be the allowed one;
    2. the name resolves under the activator's own models dir (safe names, no traversal, no
       symlink escape);
    3. the trusted record comes from the activator's own roothash dir;
    4. the client's digest must equal the record's, else ExpectedDigestMismatchError (expected
       = the client's, actual = the record's), before any command runs;
    5. `DmVerityActivator` checks the file sizes and superblock against the record, opens the
       device with every parameter pinned and mounts it ro,nodev,nosuid,noexec under mount_dir.

Activating an active (name, digest) again returns the same path: a restarted appliance restores
its last model without a second mapping. Deactivating one that is neither active nor stale is an
error. A teardown that fails keeps the mapping as stale, with its error in `status`, and is
retried by a later deactivate, an activation of the same model, or the stop. At start-up, before
serving, it tears down what a crashed run left (`loader.activator.recovery` says why it does not
adopt it).

On stop (SIGTERM) everything still active is deactivated. Under systemd the appliance unit
Requires= and is ordered After= this one, so it (and the engine it owns) has stopped before this
service stops or restarts; what is left was leaked by an appliance that died, and would otherwise
hold device-mapper names that the next activation of the same model needs. If a reader still had
files open, the kernel refuses the umount (EBUSY, also for copies propagated into the appliance's
mount namespace): it is logged and the device left alone, so stopping never pulls data from under
a running engine.

Device-mapper does not exist on dev/CI kernels: tests run this service for real on a real socket
with a fake command runner in its `DmVerityActivator`.
"""

from __future__ import annotations

import grp
import hmac
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loader.activator.dm_verity import DmVerityActivator, Mapping, device_name
from loader.activator.protocol import (
    MAX_REQUEST_BYTES,
    ActivatorRequest,
    encode,
    error_answer,
    parse_request,
    read_line,
)
from loader.activator.recovery import (
    MAPPER_DIR,
    MountTableReader,
    find_leftovers,
    list_verity_devices,
    parse_device_name,
    parse_mountinfo,
    read_mountinfo,
)
from loader.errors import (
    ActivationError,
    ActivatorError,
    ActivatorPeerError,
    ActivatorProtocolError,
    ExpectedDigestMismatchError,
    LoaderError,
    ModelNotActiveError,
    StaleMappingError,
    VerityIOError,
)
from loader.images.model_image import VerifiedModel, load_record, resolve_model_image
from loader.images.names import check_model_name

logger = logging.getLogger(__name__)

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_ACCEPT_POLL = 0.2  # seconds between checks of the stop flag while idle


@dataclass(frozen=True)
class ActivatorSettings:
    socket_path: Path
    models_dir: Path
    roothash_dir: Path
    mount_dir: Path  # mount points, one per active model; 0755 so that the engine can enter
    allowed_uid: int  # the appliance's uid: the only peer served
    group: str | None = None  # the socket's group (the appliance's), with mode 0660
    request_timeout: float = 5.0  # to receive a request line and to send the answer

    def __post_init__(self) -> None:
        if self.allowed_uid < 0:
            raise ValueError(f"allowed_uid must be >= 0, got {self.allowed_uid}")
        if not self.request_timeout > 0:
            raise ValueError(f"request_timeout must be > 0, got {self.request_timeout}")


@dataclass(frozen=True)
class StaleMapping:
    """A mapping whose teardown failed: what is left of it, and the last error."""

    mapping: Mapping
    error: str
    path: Path  # what a deactivate answers: the mount point, or the device node if none is known


class ActivatorService:
    """The activation table and its operations, one at a time; no socket (see ActivatorServer).

    Two tables: what is active, and what is STALE, keyed by (model, digest[:16]) as the device
    name is: leftovers of an earlier run and failed deactivations (loader.activator.recovery).
    """

    def __init__(
        self,
        settings: ActivatorSettings,
        activator: DmVerityActivator,
        *,
        read_mount_table: MountTableReader = read_mountinfo,
        dmsetup: str = "dmsetup",
    ) -> None:
        self._settings = settings
        self._activator = activator
        self._read_mount_table = read_mount_table
        self._dmsetup = dmsetup
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], VerifiedModel] = {}
        self._stale: dict[tuple[str, str], StaleMapping] = {}

    def reconcile(self) -> None:
        """At start-up, before serving: tear down every leftover of an earlier run."""
        with self._lock:
            mounts = parse_mountinfo(self._read_mount_table())
            try:
                devices = list_verity_devices(self._activator.run, self._dmsetup)
            except ActivationError as error:
                # No device-mapper (dev/CI kernels) fails here too. Serving anyway is safe: a
                # device left over would only make the activation of its model fail at open.
                logger.error("cannot list verity devices, only mounts are reconciled: %s", error)
                devices = []
            for mapping in find_leftovers(mounts, devices, self._settings.mount_dir.resolve()):
                key = parse_device_name(mapping.device)
                if key is None:  # find_leftovers keeps only names the activator makes
                    raise AssertionError(f"unexpected device name {mapping.device}")
                logger.warning("tearing down %s, left by an earlier run", mapping.device)
                path = mapping.mount_points[0] if mapping.mount_points else _node(mapping)
                self._tear_down(key, mapping, path)

    def activate(self, model: str, digest: str) -> VerifiedModel:
        with self._lock:
            settings = self._settings
            try:
                # Steps 2-3 (module docstring): the activator's own directories only.
                image = resolve_model_image(settings.models_dir, model)
                record = load_record(settings.roothash_dir, model)
                # 4. Constant time although the digest is no secret: one rule, no exceptions.
                if not hmac.compare_digest(digest, record.digest):
                    raise ExpectedDigestMismatchError(
                        f"model {model} is pinned to another digest",
                        check="expected digest",
                        expected=digest,
                        actual=record.digest,
                    )
                active = self._active.get((model, record.digest))
                if active is not None:
                    return active
                self._retry_stale(model, record.digest)
                # 5. Sizes and superblock, pinned open, read-only mount.
                verified = self._activator.activate(image, record, settings.mount_dir)
            except OSError as error:
                raise VerityIOError(
                    f"cannot read the model files: {error.strerror}", actual=error.filename
                ) from None
            self._active[(model, record.digest)] = verified
            return verified

    def deactivate(self, model: str, digest: str) -> Path:
        """Tear down an active or stale (model, digest); return its mount point (or device)."""
        check_model_name(model)
        with self._lock:
            key = (model, digest[:16])
            verified = self._active.pop((model, digest), None)
            if verified is not None:
                mapping = Mapping(device_name(verified.record), (verified.path,))
                path = verified.path
            elif key in self._stale:
                mapping, path = self._stale[key].mapping, self._stale[key].path
            else:
                raise ModelNotActiveError(
                    f"model {model} with digest {digest} is not active", check="active"
                )
            # Kept as stale if it fails, so that a later deactivate (or the stop) retries.
            error = self._tear_down(key, mapping, path)
            if error is not None:
                raise error
            return path

    def active(self) -> list[VerifiedModel]:
        with self._lock:
            return list(self._active.values())

    def stale(self) -> list[StaleMapping]:
        with self._lock:
            return list(self._stale.values())

    def deactivate_all(self) -> None:
        """Stop-time cleanup (module docstring); failures are logged, the rest still runs."""
        for verified in self.active():
            try:
                self.deactivate(verified.record.name, verified.digest)
            except LoaderError as error:
                logger.error("could not deactivate %s at stop: %s", verified.record.name, error)
        with self._lock:
            for key, stale in list(self._stale.items()):
                self._tear_down(key, stale.mapping, stale.path)

    def handle(self, request: ActivatorRequest) -> dict[str, Any]:
        if request.op == "status":
            return {
                "active": [_describe(verified) for verified in self.active()],
                "stale": [_describe_stale(stale) for stale in self.stale()],
            }
        if request.model is None or request.digest is None:  # the request validates
            raise AssertionError(f"{request.op} without a model and a digest")
        if request.op == "activate":
            return _describe(self.activate(request.model, request.digest))
        path = self.deactivate(request.model, request.digest)
        return {"model": request.model, "digest": request.digest, "path": str(path)}

    def _retry_stale(self, model: str, digest: str) -> None:
        """Before an activation: a stale mapping holds the device name until it is torn down."""
        key = (model, digest[:16])
        stale = self._stale.get(key)
        if stale is None or self._tear_down(key, stale.mapping, stale.path) is None:
            return
        stale = self._stale[key]
        raise StaleMappingError(
            f"model {model} with digest {digest} still has a mapping that could not be torn"
            f" down; stop its readers, then activate again. Last error: {stale.error}",
            check="stale mapping",
            actual=" ".join([stale.mapping.device, *map(str, stale.mapping.mount_points)]),
        )

    def _tear_down(self, key: tuple[str, str], mapping: Mapping, path: Path) -> LoaderError | None:
        """One attempt (caller holds the lock): gone from the stale table, or kept with its
        error."""
        remaining, error = self._activator.tear_down(mapping)
        if error is None:
            self._stale.pop(key, None)
            logger.info("tore down %s", mapping.device)
            return None
        self._stale[key] = StaleMapping(remaining, str(error), path)
        logger.error("could not tear down %s, kept as stale: %s", mapping.device, error)
        return error


class ActivatorServer:
    """The service on its Unix socket: peers checked by uid, one request per connection, in turn.

    Serving in turn is the "one operation at a time" rule at no extra cost: only the allowed
    uid gets past accept, and it cannot hold the loop longer than `request_timeout`.
    """

    def __init__(self, settings: ActivatorSettings, service: ActivatorService) -> None:
        self._settings = settings
        self._service = service
        self._stopping = threading.Event()
        gid = _group_id(settings.group)
        prepare_mount_dir(settings.mount_dir)
        service.reconcile()  # before anyone can ask for an activation
        path = settings.socket_path
        if path.is_socket():
            path.unlink()  # left by a previous run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # 0600 from birth, 0660 once the group is the appliance's: no moment at which
            # anyone else could connect. SO_PEERCRED still checks every peer.
            old_umask = os.umask(0o177)
            try:
                sock.bind(str(path))
            finally:
                os.umask(old_umask)
            if gid is not None:
                os.chown(path, -1, gid)
            os.chmod(path, 0o660)
            sock.listen(16)
            sock.settimeout(_ACCEPT_POLL)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def serve_forever(self) -> None:
        """Serve until stop(); then close the socket. Call deactivate_all() afterwards if wanted."""
        logger.info(
            "activator listening on %s for uid %d",
            self._settings.socket_path,
            self._settings.allowed_uid,
        )
        try:
            while not self._stopping.is_set():
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                with conn:
                    self._serve_one(conn)
        finally:
            self._sock.close()
            self._settings.socket_path.unlink(missing_ok=True)

    def stop(self) -> None:
        """Safe from a signal handler or another thread: the loop ends within _ACCEPT_POLL."""
        self._stopping.set()

    def _serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(self._settings.request_timeout)
        pid, uid, _ = _PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        if uid != self._settings.allowed_uid:
            logger.warning("refused a peer: uid %d (pid %d) is not the allowed uid", uid, pid)
            self._send(conn, error_answer(ActivatorPeerError(
                "this uid may not use the activator", check="peer uid", actual=uid,
            )))  # fmt: skip
            return
        try:
            line = read_line(conn, MAX_REQUEST_BYTES, "request")
        except TimeoutError:
            error = ActivatorProtocolError(
                f"no request line within {self._settings.request_timeout} s", check="request"
            )
        except ActivatorProtocolError as caught:
            error = caught
        except OSError as caught:
            logger.warning("peer pid %d went away: %s", pid, caught)
            return
        else:
            self._send(conn, self._answer(line, pid))
            return
        logger.warning("refused a request from pid %d: %s", pid, error)
        self._send(conn, error_answer(error))

    def _answer(self, line: bytes, pid: int) -> bytes:
        request = None
        try:
            request = parse_request(line)
            result = self._service.handle(request)
        except LoaderError as error:
            what = _what(request) if request else "request"
            logger.warning("refused %s from pid %d: %s", what, pid, error)
            return error_answer(error)
        except Exception:
            logger.exception("%s from pid %d failed", request.op if request else "request", pid)
            return error_answer(ActivatorError("the activator failed; see its log"))
        if request.op != "status":
            logger.info("%s: %s", _what(request), result["path"])
        return encode({"ok": True, "result": result})

    def _send(self, conn: socket.socket, answer: bytes) -> None:
        try:
            conn.sendall(answer)
        except OSError as error:
            logger.warning("could not send the answer: %s", error)


def prepare_mount_dir(mount_dir: Path) -> None:
    """The parent of the mount points: root's, 0755 so that the engine's user can enter it."""
    if mount_dir.is_symlink():
        raise ValueError(f"mount dir {mount_dir} is a symlink")
    mount_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(mount_dir, 0o755)  # noqa: S103 -- deliberate: the engine's user must enter it


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no such group: {group!r}") from None


def _what(request: ActivatorRequest) -> str:
    if request.op == "status":
        return "status"
    return f"{request.op} of {request.model} digest {request.digest}"


def _describe(verified: VerifiedModel) -> dict[str, Any]:
    return {"model": verified.record.name, "digest": verified.digest, "path": str(verified.path)}


def _describe_stale(stale: StaleMapping) -> dict[str, Any]:
    points = [str(point) for point in stale.mapping.mount_points]
    return {"device": stale.mapping.device, "mount_points": points, "error": stale.error}


def _node(mapping: Mapping) -> Path:
    return Path(MAPPER_DIR) / mapping.device
