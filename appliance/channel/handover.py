"""The API server's secrets, handed over through a pipe rather than its environment.

An environment is readable by every process of the same user for as long as the process lives
(/proc/<pid>/environ); a pipe is read once, at start, and is gone. Only what the workers need
crosses: the load token (they check it), never the management token.
"""

from __future__ import annotations

import json
import os
from typing import Any

HANDOVER_FD_VARIABLE = "APPLIANCE_API_HANDOVER_FD"
_MAX_HANDOVER_BYTES = 64 * 1024


def handover_pipe(secrets: dict[str, str]) -> int:
    """A pipe already holding `secrets`, closed for writing; returns its read end."""
    payload = json.dumps(secrets).encode()
    if len(payload) > _MAX_HANDOVER_BYTES:
        raise ValueError("handover too large")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, payload)  # far below the pipe's capacity: never blocks
    finally:
        os.close(write_end)
    return read_end


def take_handover(environ: dict[str, str] | os._Environ[str]) -> dict[str, Any]:
    """Read and close the pipe named in `environ` (and forget its name); {} when there is none."""
    fd_text = environ.pop(HANDOVER_FD_VARIABLE, None)
    if fd_text is None:
        return {}
    fd = int(fd_text)
    try:
        chunks = []
        while chunk := os.read(fd, _MAX_HANDOVER_BYTES):
            chunks.append(chunk)
    finally:
        os.close(fd)
    document = json.loads(b"".join(chunks))
    if not isinstance(document, dict):
        raise ValueError("the handover is not a JSON object")
    return document
