"""The supervisor: the one process that owns the identity, the model lifecycle and the status push.

It builds everything from one `Settings`, serves the control socket for the API workers, starts
gunicorn as a child, and on SIGTERM/SIGINT stops gunicorn, then the engine (its whole process
group), then itself, exiting 0.

State flows one way: lifecycle hooks -> (RTMR3, certificate) -> shared state file -> workers. On
ready: extend RTMR3 with the model digest, re-issue the certificate carrying MODEL_DIGEST, and
only then publish "ready". On unloaded: re-issue without the digest, publish. Every state change
is also queued for the status pusher.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from appliance.channel.control import ControlRequest, ControlServer
from appliance.channel.handover import HANDOVER_FD_VARIABLE, handover_pipe
from appliance.channel.identity import identity_document
from appliance.channel.peer import PeerCredentials, parent_pid
from appliance.channel.shared_state import SharedState, publish
from appliance.errors import (
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    ServiceUnavailable,
    StartupError,
)
from appliance.metrics import Metrics
from appliance.settings import Settings
from appliance.status_push import CERTIFICATE_MEMBER, STATUS_PUSH_PURPOSE
from appliance.supervisor.capabilities import (
    CAP_NET_BIND_SERVICE,
    CAP_SETUID,
    holds_capability,
)
from appliance.supervisor.pusher import StatusPusher
from appliance.supervisor.tee import TeeServices, build_tee
from attest.errors import AttestError
from loader.activator.client import ActivatorClient
from loader.activator.dm_verity import DmVerityActivator
from loader.engine.kinds import VllmEngine
from loader.errors import (
    ExpectedDigestMismatchError,
    LifecycleClosedError,
    LifecycleConflictError,
    LoaderError,
    ModelNameError,
    ModelNotFoundError,
    ModelNotLoadedError,
    RecordError,
)
from loader.images.model_image import materialize_verified
from loader.lifecycle.model_source import Materialize
from loader.lifecycle.operations import Lifecycle, LifecycleHooks, ModelEvent
from loader.lifecycle.status import StatusSnapshot
from loader.settings import EngineUser, LoaderSettings
from ratls.errors import RatlsError
from ratls.evidence import make_nonce_evidence, parse_nonce_hex
from ratls.issuer import Identity, IdentityIssuer
from ratls.profile import SubjectNames
from ratls.signing import sign_json

log = logging.getLogger(__name__)

IDENTITY_CHECK_INTERVAL = 30.0
STOP_TIMEOUT = 15.0
# Settings the API server is not given: the status push is the supervisor's, and the load token
# crosses through the handover pipe.
API_SERVER_WITHHELD = frozenset({"management_url", "management_token", "load_token"})


def api_status(snapshot: StatusSnapshot, *, include_engine_log: bool) -> dict[str, Any]:
    """docs/design.md's status fields, plus what an operator needs. The engine's log tail only on
    request: an engine may print request data, so it goes to token holders only."""
    status: dict[str, Any] = {
        "loaded_model": snapshot.loaded_model,
        "loaded_model_digest": snapshot.loaded_model_digest,
        "proxy_status": str(snapshot.state),
        "proxy_message": snapshot.message,
        "proxy_progress": round(snapshot.progress, 4),
        "elapsed": round(snapshot.elapsed, 3),
        "error": snapshot.error,
        "error_type": snapshot.error_type,
        "operation": None if snapshot.operation is None else str(snapshot.operation),
        "target_model": snapshot.target_model,
        "restarts": snapshot.restarts,
        "generation": snapshot.generation,
    }
    if include_engine_log:
        status["engine_log_tail"] = list(snapshot.engine_log_tail)
    return status


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        tee: TeeServices,
        issuer: IdentityIssuer,
        make_lifecycle: Callable[[LifecycleHooks], Lifecycle],
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._tee = tee
        self._issuer = issuer
        self._metrics = metrics
        self._clock = clock
        self._publish_lock = threading.Lock()
        self._published_generation = -1
        self._stopping = threading.Event()
        self._pusher = self._make_pusher()
        self._lifecycle = make_lifecycle(LifecycleHooks(
            on_ready=self._on_ready, on_unloaded=self._on_unloaded, on_status=self._on_status,
        ))
        self._control = ControlServer(settings.control_socket, {
            ("GET", "/status"): self._route_status,
            ("POST", "/load"): self._route_load,
            ("POST", "/unload"): self._route_unload,
            ("GET", "/identity"): self._route_identity,
            ("POST", "/attestation"): self._route_attestation,
            ("GET", "/collateral"): self._route_collateral,
        }, admit=self._admit_peer)
        self._api: subprocess.Popen[bytes] | None = None

    def _admit_peer(self, peer: PeerCredentials) -> str | None:
        """Only the API server (gunicorn's master) and its workers, as this user, may connect."""
        if peer.uid != os.geteuid():
            return f"uid {peer.uid} is not the service's uid {os.geteuid()}"
        api = self._api
        if api is None:
            return "the API server is not running"
        if peer.pid != api.pid and parent_pid(peer.pid) != api.pid:
            return f"not the API server (pid {api.pid}) or one of its workers"
        return None

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Publishes the first state, opens the control socket, restores the last model."""
        self._issuer.current()
        self._publish(self._lifecycle.status())
        self._control.start()
        if self._pusher is not None:
            self._pusher.start()
            self._pusher.notify(api_status(self._lifecycle.status(), include_engine_log=False))
        threading.Thread(target=self._watch_identity, name="identity-renewal", daemon=True).start()
        self._lifecycle.restore()

    def run_api_server(self) -> int:
        """Starts gunicorn and waits until it exits or a stop is requested; returns an exit code."""
        secrets = {}
        if self._settings.load_token is not None:
            secrets["load_token"] = self._settings.load_token.get_secret_value()
        handover = handover_pipe(secrets)
        try:
            self._api = subprocess.Popen(
                api_server_command(),
                env={**api_server_environment(self._settings), HANDOVER_FD_VARIABLE: str(handover)},
                pass_fds=(handover,),
            )
        finally:
            os.close(handover)
        log.info("API server started (pid %d) on %s", self._api.pid, self._settings.listen)
        while not self._stopping.is_set():
            try:
                code = self._api.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            log.error("API server exited unexpectedly with status %s", code)
            return 1
        return 0

    def request_stop(self, signum: int = signal.SIGTERM, _frame: object = None) -> None:
        log.info("stop requested (signal %d)", signum)
        self._stopping.set()

    def stop(self) -> None:
        """gunicorn first (no new requests), then the engine, then the rest. Idempotent."""
        self._stopping.set()
        api, self._api = self._api, None
        if api is not None and api.poll() is None:
            api.terminate()
            try:
                api.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("API server did not stop in %.0f s; killing it", STOP_TIMEOUT)
                api.kill()
                api.wait()
        self._lifecycle.close()
        if self._pusher is not None:
            self._pusher.stop()
        self._control.stop()
        log.info("supervisor stopped")

    # -- lifecycle hooks -------------------------------------------------------------------------
    def _on_ready(self, event: ModelEvent) -> None:
        # 1. Measure the model into RTMR3; 2. re-issue the certificate with MODEL_DIGEST. If either
        # fails the lifecycle stops the engine: no "ready" without both.
        digest = bytes.fromhex(event.digest)
        self._tee.measure_model(event.model, digest)
        self._issuer.reissue(model_digest=digest)

    def _on_unloaded(self, event: ModelEvent) -> None:
        self._issuer.reissue(model_digest=None)

    def _on_status(self, snapshot: StatusSnapshot) -> None:
        self._publish(snapshot)
        self._metrics.set_lifecycle_state(str(snapshot.state))
        if self._pusher is not None:
            self._pusher.notify(api_status(snapshot, include_engine_log=False))
        log.info("lifecycle %s: %s", snapshot.state, snapshot.message)

    def _publish(self, snapshot: StatusSnapshot) -> None:
        with self._publish_lock:
            identity = self._issuer.current()
            publish(self._settings.shared_state_file, SharedState(
                status=api_status(snapshot, include_engine_log=False),
                identity_generation=identity.generation,
                certificate_sha256=identity.fingerprint.hex(),
            ))
            self._published_generation = identity.generation

    def _watch_identity(self) -> None:
        # The issuer renews the certificate before expiry when asked for it; ask regularly and
        # tell the workers when the generation moved.
        while not self._stopping.wait(IDENTITY_CHECK_INTERVAL):
            try:
                if self._issuer.current().generation != self._published_generation:
                    self._publish(self._lifecycle.status())
            except Exception:
                log.exception("identity renewal check failed")

    # -- control routes --------------------------------------------------------------------------
    def _route_status(self, request: ControlRequest) -> tuple[int, Any]:
        include_log = request.query.get("engine_log") == "1"
        return 200, api_status(self._lifecycle.status(), include_engine_log=include_log)

    def _route_load(self, request: ControlRequest) -> tuple[int, Any]:
        model = request.body.get("model")
        digest = request.body.get("digest")
        if not isinstance(model, str):
            raise BadRequest("`model` is required", param="model")
        with lifecycle_errors():
            snapshot = self._lifecycle.load(model, digest)
        log.info("load of %s requested (expected digest %s)", model, digest or "any")
        return 202, api_status(snapshot, include_engine_log=False)

    def _route_unload(self, request: ControlRequest) -> tuple[int, Any]:
        model = request.body.get("model")
        with lifecycle_errors():
            snapshot = self._lifecycle.unload(model if isinstance(model, str) else None)
        log.info("unload requested")
        return 202, api_status(snapshot, include_engine_log=False)

    def _route_identity(self, request: ControlRequest) -> tuple[int, Any]:
        return 200, identity_document(self._issuer.current())

    def _route_attestation(self, request: ControlRequest) -> tuple[int, Any]:
        try:
            nonce = parse_nonce_hex(request.body.get("nonce"))
        except RatlsError as exc:
            raise BadRequest(str(exc), param="nonce", code="invalid_nonce") from None
        current = self._issuer.current()
        identity = current
        presented = request.body.get("certificate_der")
        if isinstance(presented, str) and presented != current.certificate.der.hex():
            # A connection made before a rotation: bind its certificate (same key; from_parts
            # refuses a certificate that is not for our key).
            try:
                identity = Identity.from_parts(generation=0, private_key=current.private_key,
                                               certificate_der=bytes.fromhex(presented),
                                               tee=current.tee)
            except (ValueError, RatlsError) as exc:
                raise BadRequest(f"not a certificate of this appliance: {exc}") from None
        evidence = make_nonce_evidence(identity, self._tee.provider, nonce, now=self._clock(),
                                       event_log=self._tee.event_log())
        return 200, evidence.model_dump(mode="json")

    def _route_collateral(self, request: ControlRequest) -> tuple[int, Any]:
        try:
            return 200, self._tee.collateral_bundle(self._issuer.current().quote, now=self._clock())
        except (AttestError, OSError, ValueError) as exc:
            # PCS/PCCS down, offline with a cold cache, or an answer that does not assemble.
            log.warning("collateral unavailable: %s", exc)
            raise ServiceUnavailable("collateral for this appliance's quote is unavailable",
                                     code="collateral_unavailable") from None

    def _make_pusher(self) -> StatusPusher | None:
        settings = self._settings
        if not settings.management_url:
            return None
        token = settings.management_token
        if not isinstance(token, SecretStr):  # Settings requires it with a URL
            raise StartupError("--management-url needs --management-token")

        def sign(payload: dict[str, Any]) -> dict[str, Any]:
            identity = self._issuer.current()
            document = sign_json(payload, purpose=STATUS_PUSH_PURPOSE,
                                 private_key=identity.private_key,
                                 certificate=identity.certificate.certificate)
            # The receiver checks the signature against this certificate (and its quote).
            return document | {CERTIFICATE_MEMBER: identity.certificate.pem()}

        return StatusPusher(
            management_url=settings.management_url, token=token.get_secret_value(),
            enclave_id=settings.enclave_id, interval=settings.push_interval, sign=sign,
            clock=self._clock, metrics=self._metrics,
        )


@contextmanager
def lifecycle_errors() -> Iterator[None]:
    """Maps the loader's refusals to HTTP errors (the refused request changed nothing)."""
    try:
        yield
    except LifecycleConflictError as exc:
        raise Conflict(str(exc), code="lifecycle_busy") from None
    except ModelNotFoundError as exc:  # before ModelNameError, its base class
        raise NotFound(str(exc), param="model", code="model_not_found") from None
    except (ModelNameError, ValueError) as exc:
        raise BadRequest(str(exc), param="model", code="invalid_model_name") from None
    except ExpectedDigestMismatchError as exc:
        raise Conflict(str(exc), param="digest", code="digest_mismatch") from None
    except RecordError as exc:
        raise NotFound(str(exc), param="model", code="model_not_pinned") from None
    except ModelNotLoadedError as exc:
        raise Conflict(str(exc), param="model", code="model_not_loaded") from None
    except LifecycleClosedError as exc:
        raise ServiceUnavailable(str(exc), code="shutting_down") from None
    except LoaderError as exc:
        raise ApiError(str(exc), code="loader_error") from None


def api_server_environment(settings: Settings) -> dict[str, str]:
    """The gunicorn child's environment: the settings it needs as APPLIANCE_* variables, and no
    secret (the load token crosses through `handover_pipe`; the management token not at all)."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("APPLIANCE_") and k not in ("LOAD_TOKEN", "CREDENTIALS_DIRECTORY")
    }
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name in API_SERVER_WITHHELD or value is None:
            continue
        if isinstance(value, tuple):
            text = json.dumps(list(value))
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env["APPLIANCE_" + name.upper()] = text
    env["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir)
    return env


def api_server_command() -> list[str]:
    """gunicorn's command line, without the capabilities only the supervisor needs.

    With CAP_SETUID and friends (to start the engine as its own user), the supervisor's ambient
    capabilities would pass to the API server on exec: setpriv clears all but
    CAP_NET_BIND_SERVICE (binding :443) first.
    """
    command = [sys.executable, "-m", "appliance.worker.server"]
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv is None or not holds_capability(CAP_SETUID):
        return command
    keep = "+net_bind_service" if holds_capability(CAP_NET_BIND_SERVICE) else ""
    caps = "-all" + ("," + keep if keep else "")
    return [setpriv, f"--inh-caps={caps}", f"--ambient-caps={caps}", "--", *command]


def prepare_state_dir(settings: Settings) -> None:
    """The state and run directories, private to the service's user; a clean metrics directory.

    With an engine user, the state directory is 0711 and its `work` directory too: the engine
    may pass through to the verified model files it serves (0444 in 0555 directories) and can
    list, read or reach nothing else there.
    """
    if settings.tee == "tdx" and settings.engine_user is None and not (
        settings.insecure_shared_engine_user
    ):
        raise StartupError(
            "--tee tdx runs the engine as its own user: set --engine-user (or, INSECURE, "
            "--insecure-shared-engine-user)"
        )
    traversable = 0o711 if settings.engine_user is not None else 0o700
    for directory, mode in ((settings.state_dir, traversable), (settings.run_dir, 0o700)):
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, mode)
    work_dir = settings.state_dir / "work"
    work_dir.mkdir(exist_ok=True)
    os.chmod(work_dir, traversable)
    shutil.rmtree(settings.metrics_dir, ignore_errors=True)
    settings.metrics_dir.mkdir(mode=0o700)
    for path in (settings.models_dir, settings.roothash_dir):
        if not path.is_dir():
            raise StartupError(f"{path} is not a directory")
    vllm_bin = settings.vllm_bin
    if Path(vllm_bin).name == vllm_bin and shutil.which(vllm_bin) is None:
        raise StartupError(f"the engine executable {vllm_bin!r} is not on PATH (--vllm-bin)")


def model_access(settings: Settings) -> Materialize:
    """How verified model files reach the engine: kernel dm-verity in the VM (in this process,
    or through the privileged activator service), else userspace."""
    access = settings.effective_model_access
    if access == "dm-verity":
        return DmVerityActivator().activate
    if access == "activator":
        return ActivatorClient(settings.activator_socket)
    return materialize_verified


def build_supervisor(settings: Settings, *, clock: Callable[[], datetime]) -> Supervisor:
    """The production wiring of a supervisor from the settings."""
    tee = build_tee(settings, now=clock())
    issuer = IdentityIssuer(tee.provider, SubjectNames.parse(list(settings.hostname)), clock=clock)
    try:
        engine_user = (
            EngineUser.resolve(settings.engine_user) if settings.engine_user is not None else None
        )
    except LoaderError as exc:
        raise StartupError(str(exc)) from exc
    loader_settings = LoaderSettings(
        models_dir=settings.models_dir,
        roothash_dir=settings.roothash_dir,
        work_dir=settings.state_dir / "work",
        state_dir=settings.state_dir / "lifecycle",
        engine_user=engine_user,
    )
    vllm_bin = Path(shutil.which(settings.vllm_bin) or settings.vllm_bin).resolve()
    make_engine = (
        VllmEngine.cpu_development if settings.engine_profile == "cpu" else VllmEngine.production
    )
    engine = make_engine(vllm_bin, port=settings.vllm_port, extra_args=settings.engine_arg,
                         env=settings.engine_environment)
    materialize = model_access(settings)
    return Supervisor(
        settings, tee=tee, issuer=issuer,
        make_lifecycle=lambda hooks: Lifecycle.create(loader_settings, engine, hooks=hooks,
                                                      materialize=materialize),
        metrics=Metrics(CollectorRegistry()), clock=clock,
    )
