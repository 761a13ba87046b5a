"""The engine's own user: vLLM runs under a uid that can reach nothing of the service's.

The engine parses model files and serves requests through a large native stack; if it is
compromised it must not be able to read the control socket (and through it the RA-TLS key),
the state directory, the workers' memory or environment, the quote provider or the RTMR
interface. All of those belong to the service's user or to root, so a separate uid with no
supplementary groups and no capabilities keeps it out; DAC does the rest.

The switch is made by util-linux's `setpriv` between fork and exec of the engine (it is on every
Debian system): real, effective and saved uid and gid, supplementary groups cleared, inheritable
and ambient capabilities cleared (an ambient CAP_SETUID of the supervisor must not survive into
the engine), and no_new_privs.
"""

from __future__ import annotations

from collections.abc import Sequence

from loader.settings import EngineUser


def confined_command(user: EngineUser, command: Sequence[str]) -> list[str]:
    """`command`, run as `user` with nothing of the caller's privileges."""
    return [
        user.setpriv,
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--no-new-privs",
        "--",
        *command,
    ]
