"""Re-sending a request the server answered 421 Misdirected Request, for both verifying clients.

The appliance answers 421 and closes the connection when the certificate that connection
verified has been superseded (a model load or unload re-issues it). Sending the request again
opens a new connection, which the `ConnectionGate` verifies (the new certificate) before the
request is written. Only replayable requests (whole bodies in memory) are sent again; a streamed
body may already be spent, so its 421 goes back to the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

MISDIRECTED = 421
# How often a request answered 421 is sent again: one stale idle connection after another may
# answer 421 before a fresh one is opened.
MISDIRECTED_RETRIES = 3

Response = TypeVar("Response")


def send_retrying_misdirected(
    send: Callable[[], Response],
    *,
    status: Callable[[Response], int],
    discard: Callable[[Response], None],
    replayable: bool,
) -> Response:
    """`send()`, then again (at most MISDIRECTED_RETRIES times, if `replayable`) while it is 421.

    `discard` reads a 421 response's body and closes its connection, before that connection can
    go back to a pool: nothing is sent on it again. The last 421 is returned read.
    """
    response = send()
    retries = MISDIRECTED_RETRIES if replayable else 0
    while status(response) == MISDIRECTED:
        discard(response)
        if retries == 0:
            return response
        retries -= 1
        response = send()
    return response
