"""The appliance's side of the activator: a `Materialize` that asks the privileged service.

`ActivatorClient(socket_path)` takes the place of `DmVerityActivator().activate` in the lifecycle:
it sends activate(record.name, record.digest) and returns a VerifiedModel at the activator's
mount point, whose release sends deactivate. The image and work dir it is given are not sent:
the activator resolves the name and reads the record in its own directories and checks that its
record pins the same digest. Its refusals arrive as the same loader error classes, so a load fails
closed with the activator's reason in the status and no engine is spawned.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loader.activator.protocol import (
    MAX_ANSWER_BYTES,
    ActivatorRequest,
    ActivatorStatus,
    ActiveModel,
    StaleModel,
    encode,
    parse_answer,
    parse_result,
    read_line,
    rebuild_error,
)
from loader.errors import ActivatorProtocolError, ActivatorUnavailableError
from loader.images.model_image import ModelImage, Progress, VerifiedModel
from loader.images.record import TrustedRecord


@dataclass(frozen=True)
class ActivatorClient:
    socket_path: Path
    # An activation runs veritysetup and mount (each bounded at 120 s by the activator) and may
    # wait for another request first.
    timeout: float = 300.0

    def __call__(
        self,
        image: ModelImage,
        record: TrustedRecord,
        work_dir: Path,
        *,
        progress: Progress | None = None,
    ) -> VerifiedModel:
        active = self._active_model("activate", record.name, record.digest)
        if (active.model, active.digest) != (record.name, record.digest):
            raise ActivatorProtocolError(
                "the activator answered for another model",
                check="answer",
                expected=f"{record.name} {record.digest}",
                actual=f"{active.model} {active.digest}",
            )
        if progress is not None:
            progress(1.0)  # the kernel verifies lazily, on every read
        return VerifiedModel(
            path=Path(active.path),
            record=record,
            _release=lambda: self.deactivate(record.name, record.digest),
        )

    def deactivate(self, model: str, digest: str) -> None:
        self._active_model("deactivate", model, digest)

    def status(self) -> list[ActiveModel]:
        return self._status().active

    def stale(self) -> list[StaleModel]:
        """Mappings whose teardown failed (busy leftovers, failed deactivations), with the error."""
        return self._status().stale

    def _status(self) -> ActivatorStatus:
        return parse_result(ActivatorStatus, self._call(ActivatorRequest(op="status")))

    def _active_model(
        self, op: Literal["activate", "deactivate"], model: str, digest: str
    ) -> ActiveModel:
        result = self._call(ActivatorRequest(op=op, model=model, digest=digest))
        return parse_result(ActiveModel, result)

    def _call(self, request: ActivatorRequest) -> dict[str, Any]:
        """One request on a fresh connection: the result when ok, else the typed error."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.socket_path))
                # BrokenPipeError: it answered before reading (a refused peer): the answer
                # is waiting
                with contextlib.suppress(BrokenPipeError):
                    sock.sendall(encode(request))
                line = read_line(sock, MAX_ANSWER_BYTES, "answer")
        except OSError as error:
            raise ActivatorUnavailableError(
                f"no answer from the activator: {error.strerror or error}",
                check="activator socket",
                actual=str(self.socket_path),
            ) from None
        answer = parse_answer(line)
        if answer.error is not None:
            raise rebuild_error(answer.error)
        if answer.result is None:  # Answer validates: a result when ok
            raise AssertionError("an ok answer without a result")
        return answer.result
