"""Who is on the other end of the control socket: the kernel's word (SO_PEERCRED), not the peer's.

The socket's file mode keeps other users out; the peer check keeps out the service's own user
when it is not one of the API workers (a stray or compromised process running as the same uid,
such as an engine started without its own user).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


def peer_credentials(connection: socket.socket) -> PeerCredentials:
    """The credentials the kernel recorded for the peer of a connected Unix socket."""
    raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def parent_pid(pid: int) -> int | None:
    """The parent of `pid` from /proc, or None if it has gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    # Fields after the command name, which may itself contain spaces and parentheses.
    return int(stat[stat.rindex(b")") + 2 :].split()[1])
