"""RTMR event log, replay, and the extender interface. Pure: no kernel I/O here.

TDX has four runtime measurement registers (SHA-384). Extending one replaces it with
SHA-384(old || digest); the quote carries the result, and a verifier recomputes it from an
event log. The appliance extends RTMR3 with the model digest at every load.

Extenders (`RtmrExtender`): the kernel's, beside the quote providers
(`attest.providers.tdx_guest.SysfsRtmrExtender` for Linux >= 6.16,
`attest.providers.tdx_guest.TdxGuestIoctlExtender` for Intel's TDX guest kernels,
`attest.providers.libtdx.LibTdxAttest.extend`), and `InMemoryRtmrs` here (the simulated TD's
registers). Only RTMR2 and RTMR3 are extended at runtime: RTMR0/1 hold firmware and boot
measurements that policy pins, and Intel's library refuses them too.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from attest.errors import FormatError, RtmrExtendError, VerificationError

RTMR_SIZE = 48
RTMR_COUNT = 4
EXTENDABLE_RTMRS = (2, 3)
ZERO_RTMR = bytes(RTMR_SIZE)


def extend_value(current: bytes, digest: bytes) -> bytes:
    """The register value after one extension: SHA-384(current || digest)."""
    return hashlib.sha384(current + digest).digest()


def require_extend_request(index: int, digest: bytes) -> tuple[int, bytes]:
    """Validate a runtime extension request; return it normalised or raise RtmrExtendError."""
    if isinstance(index, bool) or not isinstance(index, int) or index not in EXTENDABLE_RTMRS:
        raise RtmrExtendError(
            "only RTMR2 and RTMR3 may be extended at runtime",
            check="rtmr index",
            expected=list(EXTENDABLE_RTMRS),
            actual=index,
        )
    if not isinstance(digest, bytes | bytearray) or len(digest) != RTMR_SIZE:
        raise RtmrExtendError(
            "an RTMR extension takes a 48-byte SHA-384 digest",
            check="rtmr digest length",
            expected=RTMR_SIZE,
            actual=len(digest) if isinstance(digest, bytes | bytearray) else type(digest).__name__,
        )
    return index, bytes(digest)


class RtmrExtender(Protocol):
    def extend(self, index: int, digest: bytes) -> None:
        """Extend RTMR `index` (2 or 3) with a 48-byte digest; raise RtmrExtendError on failure."""
        ...


# -- events and replay ---------------------------------------------------------------------


@dataclass(frozen=True)
class RtmrEvent:
    """One extension: which register, the 48-byte digest, and what it measured.

    Events made with `from_data` carry the measured bytes and bind the type:
    digest = SHA-384(event_type || 0x00 || data), so a log cannot relabel an event.
    """

    index: int
    digest: bytes
    event_type: str
    description: str = ""
    data: bytes | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index < RTMR_COUNT:
            raise FormatError(
                "RTMR index out of range", check="event index", expected="0..3", actual=self.index
            )
        if len(self.digest) != RTMR_SIZE:
            raise FormatError(
                "event digest must be 48 bytes",
                check="event digest length",
                expected=RTMR_SIZE,
                actual=len(self.digest),
            )
        if self.data is not None and self.digest != event_digest(self.event_type, self.data):
            raise FormatError(
                "event digest does not match its data",
                check=f"event {self.event_type!r} digest",
                expected=event_digest(self.event_type, self.data),
                actual=self.digest,
            )

    @classmethod
    def from_data(
        cls, index: int, event_type: str, data: bytes, description: str = ""
    ) -> RtmrEvent:
        return cls(index, event_digest(event_type, data), event_type, description, bytes(data))


def event_digest(event_type: str, data: bytes) -> bytes:
    return hashlib.sha384(event_type.encode() + b"\x00" + data).digest()


def replay(
    events: Iterable[RtmrEvent], initial: Sequence[bytes] | None = None
) -> tuple[bytes, ...]:
    """The four RTMR values after applying `events` in order to `initial` (default all zero)."""
    registers = list(initial) if initial is not None else [ZERO_RTMR] * RTMR_COUNT
    if len(registers) != RTMR_COUNT or any(len(r) != RTMR_SIZE for r in registers):
        raise FormatError("initial RTMRs must be four 48-byte values", check="initial rtmrs")
    for event in events:
        registers[event.index] = extend_value(registers[event.index], event.digest)
    return tuple(registers)


def verify_replay(
    events: Iterable[RtmrEvent],
    quoted: Sequence[bytes],
    *,
    indices: Iterable[int] = (3,),
    initial: Sequence[bytes] | None = None,
) -> None:
    """Raise VerificationError unless replaying `events` gives the quoted RTMRs at `indices`.

    Only RTMR3 by default: RTMR0-2 also hold boot measurements that this log does not carry.
    """
    replayed = replay(events, initial)
    for index in indices:
        if replayed[index] != quoted[index]:
            raise VerificationError(
                f"RTMR{index} does not match the event log",
                check=f"rtmr{index} replay",
                expected=replayed[index],
                actual=quoted[index],
            )


class _EventJson(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    index: int
    digest: str
    type: str
    description: str = ""
    data: str | None = None


class _LogJson(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    events: list[_EventJson]


EVENT_LOG_VERSION = 1


class RtmrEventLog:
    """The ordered runtime events of this TD, and the one way to extend: `measure`.

    `measure` extends the register first and records the event only if that succeeded, so the
    log never shows an extension that did not happen. One writer (the supervisor) owns a log.
    """

    def __init__(self, events: Iterable[RtmrEvent] = ()) -> None:
        self._events = list(events)
        self._lock = threading.Lock()

    @property
    def events(self) -> tuple[RtmrEvent, ...]:
        with self._lock:
            return tuple(self._events)

    def measure(self, extender: RtmrExtender, event: RtmrEvent) -> None:
        with self._lock:
            extender.extend(event.index, event.digest)
            self._events.append(event)

    def replay(self, initial: Sequence[bytes] | None = None) -> tuple[bytes, ...]:
        return replay(self.events, initial)

    def to_json(self) -> str:
        return _LogJson(
            version=EVENT_LOG_VERSION,
            events=[
                _EventJson(
                    index=e.index,
                    digest=e.digest.hex(),
                    type=e.event_type,
                    description=e.description,
                    data=None if e.data is None else e.data.hex(),
                )
                for e in self.events
            ],
        ).model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> RtmrEventLog:
        try:
            parsed = _LogJson.model_validate_json(text)
        except ValidationError as exc:
            raise FormatError(f"malformed RTMR event log: {exc}", check="event log json") from exc
        if parsed.version != EVENT_LOG_VERSION:
            raise FormatError(
                "unsupported RTMR event log version",
                check="event log version",
                expected=EVENT_LOG_VERSION,
                actual=parsed.version,
            )
        events = []
        for number, item in enumerate(parsed.events):
            try:
                digest = bytes.fromhex(item.digest)
                data = None if item.data is None else bytes.fromhex(item.data)
            except ValueError:
                raise FormatError(
                    f"event {number} has a non-hex digest or data", check="event log json"
                ) from None
            events.append(RtmrEvent(item.index, digest, item.type, item.description, data))
        return cls(events)


# -- in-memory registers -------------------------------------------------------------------


class InMemoryRtmrs:
    """Four RTMRs held in memory with hardware extend semantics: the simulated TD's registers."""

    def __init__(self, initial: Sequence[bytes] | None = None) -> None:
        self._values = list(replay((), initial))
        self._lock = threading.Lock()

    def extend(self, index: int, digest: bytes) -> None:
        index, digest = require_extend_request(index, digest)
        with self._lock:
            self._values[index] = extend_value(self._values[index], digest)

    def values(self) -> tuple[bytes, ...]:
        with self._lock:
            return tuple(self._values)
