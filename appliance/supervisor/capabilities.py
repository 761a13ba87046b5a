"""Which Linux capabilities this process holds in its effective set (/proc/self/status)."""

from __future__ import annotations

# Bit numbers from linux/capability.h.
CAP_KILL = 5
CAP_SETGID = 6
CAP_SETUID = 7
CAP_NET_BIND_SERVICE = 10


def holds_capability(capability: int, *, status_path: str = "/proc/self/status") -> bool:
    with open(status_path, encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> capability & 1)
    return False
