"""Errors of the `loader` package, one class per cause.

A model is trusted only through its dm-verity root hash, so every refusal says which check failed
and, where there is one, the expected and the actual value:

    LoaderError
    ├── ModelNameError            a name outside the safe alphabet, or a path that escapes
    │                             models-dir
    │   └── ModelNotFoundError    a well-formed name with no image under models-dir
    ├── RecordError               the trusted record is missing, malformed or not acceptable
    ├── VerityError
    │   ├── VerityParamsError     parameters no dm-verity device can have (block sizes, salt, ...)
    │   ├── VerityIOError         a file could not be read or written, or changed while read
    │   └── VerificationError     the bytes are not what the trusted record pins
    │       ├── SuperblockError         an on-disk superblock that is not well-formed
    │       ├── ParameterMismatchError  superblock, sizes or names disagree with the record
    │       ├── RootHashMismatchError   the tree's top does not hash to the trusted root
    │       ├── HashTreeCorruptionError a hash block fails its parent, or has non-zero padding
    │       └── DataCorruptionError     a data block fails its leaf digest
    ├── ImageError                building, inspecting or extracting a filesystem image failed
    ├── ActivationError           veritysetup open / mount / close failed (production path)
    ├── ActivatorError            the privileged activator service (loader.activator.service) failed
    │   ├── ActivatorUnavailableError  no answer on its socket: not running, timed out, cut off
    │   ├── ActivatorProtocolError     a request or answer that is malformed or too large
    │   ├── ActivatorPeerError         a peer whose uid the activator does not serve
    │   ├── ModelNotActiveError        a deactivate naming no active (model, digest)
    │   ├── StaleMappingError          a mapping of that model could not be torn down (busy)
    │   └── MountTableError            /proc/self/mountinfo that does not parse
    ├── ExpectedDigestMismatchError  the digest a load request names is not the record's
    ├── LifecycleError
    │   ├── LifecycleConflictError   another load or unload is running (HTTP 409)
    │   ├── ModelNotLoadedError      an unload names a model that is not the loaded one
    │   ├── OperationCancelledError  the lifecycle closed while the operation ran
    │   └── LifecycleClosedError     a request after close()
    ├── EngineError
    │   ├── EngineStartError         the engine could not be started (executable, port)
    │   ├── EngineExitedError        the engine exited, before health or after ready
    │   ├── EngineHealthTimeoutError the engine did not answer its health check in time
    │   ├── EngineUnhealthyError     a ready engine failed its health checks
    │   └── EngineStopError          the engine's process group survived SIGKILL
    └── StateStoreError              the last-load record is unreadable or malformed
"""

from __future__ import annotations

from typing import Any

from checks.errors import CheckedError


class LoaderError(CheckedError):
    """Base class of every error raised by `loader`."""

    stage = "loader"


class ModelNameError(LoaderError):
    """A model name outside [A-Za-z0-9][A-Za-z0-9._-]{0,63}, or a path escaping the models dir."""


class ModelNotFoundError(ModelNameError):
    """A valid model name for which models-dir holds no image (or no hash file)."""


class RecordError(LoaderError):
    """The trusted record is missing, not a regular file, malformed, or pins what we refuse."""


class VerityError(LoaderError):
    """Base class of dm-verity errors."""


class VerityParamsError(VerityError):
    """Parameters that no dm-verity device can have, or that conflict with each other."""


class VerityIOError(VerityError):
    """A data or hash file could not be read or written, is too short, or was replaced."""


class VerificationError(VerityError):
    """The data or hash file is not what the trusted parameters and root hash pin."""


class SuperblockError(VerificationError):
    """An on-disk verity superblock that is not well-formed (signature, version, padding)."""


class ParameterMismatchError(VerificationError):
    """An on-disk superblock, a file size or a name that disagrees with the trusted record."""


class RootHashMismatchError(VerificationError):
    """The top of the hash tree (or the only data block) does not hash to the trusted root.

    A wrong root hash and a corrupted top-level tree block cannot be told apart: both give this.
    """


class HashTreeCorruptionError(VerificationError):
    """A hash-tree block does not match its digest in the level above, or has non-zero padding."""

    def __init__(self, message: str, *, level: int | None, offset: int, **kwargs: Any) -> None:
        self.level = level  # None: the area between the superblock and the tree
        self.offset = offset
        super().__init__(message, **kwargs)


class DataCorruptionError(VerificationError):
    """A data block does not match its digest in the (authenticated) hash tree."""

    def __init__(self, message: str, *, block: int, offset: int, **kwargs: Any) -> None:
        self.block = block
        self.offset = offset
        super().__init__(message, **kwargs)


class ImageError(LoaderError):
    """A filesystem image could not be built, recognised or extracted."""


class ActivationError(LoaderError):
    """Production activation failed: `veritysetup open`, the read-only mount, or the teardown."""


class ActivatorError(LoaderError):
    """The privileged activator service refused a request or failed to answer it."""


class ActivatorUnavailableError(ActivatorError):
    """The activator's socket could not be reached, or it did not answer in time."""


class ActivatorProtocolError(ActivatorError):
    """A request or an answer that is not one well-formed, bounded JSON line of the protocol."""


class ActivatorPeerError(ActivatorError):
    """The connecting process runs as a uid that the activator does not serve (SO_PEERCRED)."""


class ModelNotActiveError(ActivatorError):
    """A deactivate names a (model, digest) that the activator has not activated."""


class StaleMappingError(ActivatorError):
    """An activation whose device name is still held by a mapping that could not be torn down.

    Left by an earlier activator run or a failed deactivation, and usually busy (a reader still
    has files open); `actual` names the device and its mount points.
    """


class MountTableError(ActivatorError):
    """A /proc/self/mountinfo line without the fields of proc(5): no basis for a teardown."""


class ExpectedDigestMismatchError(LoaderError):
    """The load request names an expected digest that differs from the trusted record's."""


class LifecycleError(LoaderError):
    """A lifecycle request that cannot be carried out in the current state."""


class LifecycleConflictError(LifecycleError):
    """A load or unload is already running: one operation at a time, no queue."""


class ModelNotLoadedError(LifecycleError):
    """An unload names a model other than the one loaded."""


class OperationCancelledError(LifecycleError):
    """The lifecycle was closed while the operation ran; what it had started was undone."""


class LifecycleClosedError(LifecycleError):
    """A request after the lifecycle was closed."""


class EngineError(LoaderError):
    """The inference engine process failed."""

    def __init__(self, message: str, *, log_tail: tuple[str, ...] = (), **kwargs: Any) -> None:
        self.log_tail = log_tail
        super().__init__(message, **kwargs)


class EngineStartError(EngineError):
    """The engine could not be started: a missing executable, or its port already in use."""


class EngineArgumentConflictError(EngineStartError):
    """A model's record and the deployment set the same engine flag: nothing is started."""


class EngineExitedError(EngineError):
    """The engine process exited, before it was healthy or after it was ready."""

    def __init__(self, message: str, *, returncode: int, **kwargs: Any) -> None:
        self.returncode = returncode
        super().__init__(message, **kwargs)


class EngineHealthTimeoutError(EngineError):
    """The engine did not answer its health endpoint before the start-up timeout."""


class EngineUnhealthyError(EngineError):
    """A ready engine failed several health checks in a row while its process still ran."""


class EngineStopError(EngineError):
    """Processes of the engine's group were still alive after SIGKILL."""


class StateStoreError(LoaderError):
    """The record of the last successful load is unreadable or malformed."""
