"""The VM image's systemd units: systemd parses them, their command lines parse with our CLI, and
the two units agree (socket, mount dir, user, ordering). They cannot run here (no device-mapper,
systemd is not this machine's init), so what they do at run time is checked in a TDX guest.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from support.vectors import PROJECT_ROOT

from appliance.cli import build_parser
from appliance.cli.serve import settings_from_args

UNITS = PROJECT_ROOT / "image" / "systemd"
APPLIANCE = UNITS / "appliance.service"
ACTIVATOR = UNITS / "appliance-activator.service"

# Each of these gives a unit its own mount namespace, which would hide the activator's mounts
# from the appliance (systemd.exec(5)).
NAMESPACE_OPTIONS = (
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc",
    "ProcSubset", "ProtectHostname", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths",
    "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "RootDirectory", "RootImage",
)  # fmt: skip


def directives(path: Path) -> dict[str, list[str]]:
    """Key -> values in order, continuation lines joined, comments dropped."""
    found: dict[str, list[str]] = {}
    text = path.read_text().replace("\\\n", " ")
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


def test_systemd_accepts_every_directive(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(APPLIANCE), str(ACTIVATOR)],
        check=False, capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    # The executables exist only in the image; anything else (an unknown or misspelt key, a
    # bad value) is a finding.
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if "/opt/appliance/venv/bin/appliance is not executable" not in line
    ]
    assert problems == []


def test_the_activator_keeps_the_host_mount_namespace_and_nothing_else() -> None:
    unit = directives(ACTIVATOR)
    assert [key for key in NAMESPACE_OPTIONS if key in unit] == []
    assert unit["PrivateMounts"] == ["no"] and unit["MountFlags"] == ["shared"]
    assert "User" not in unit  # root, bounded by its capabilities
    assert unit["CapabilityBoundingSet"] == ["CAP_SYS_ADMIN"]
    assert unit["PrivateNetwork"] == ["yes"] and unit["IPAddressDeny"] == ["any"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_NETLINK"]
    assert unit["DevicePolicy"] == ["closed"]
    assert unit["NoNewPrivileges"] == ["yes"]


def test_the_units_agree_on_socket_mount_dir_and_user(monkeypatch: pytest.MonkeyPatch) -> None:
    activator, appliance = directives(ACTIVATOR), directives(APPLIANCE)
    parser = build_parser()
    [activator_start] = activator["ExecStart"]
    served = parser.parse_args(shlex.split(activator_start)[1:])
    assert served.command == "activator"

    [appliance_start] = appliance["ExecStart"]
    for name in [n for n in os.environ if n.startswith("APPLIANCE_")]:
        monkeypatch.delenv(name)
    settings = settings_from_args(parser.parse_args(shlex.split(appliance_start)[1:]))
    assert settings.effective_model_access == "activator"
    assert settings.engine_user == "appliance-engine" and not settings.insecure_shared_engine_user
    assert "ProtectProc" not in appliance  # hidepid would hide the engine from its supervisor
    assert appliance["CapabilityBoundingSet"] == [
        "CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_KILL"
    ]
    assert settings.activator_socket == served.socket
    assert served.socket.parent == Path("/run") / activator["RuntimeDirectory"][0]
    assert str(served.mount_dir) in appliance["ReadOnlyPaths"]
    assert served.allow_uid == appliance["User"][0] and served.group == appliance["Group"][0]
    assert activator["SupplementaryGroups"] == [served.group]  # chown without CAP_CHOWN
    assert "appliance-activator.service" in appliance["Requires"]
    assert "appliance-activator.service" in appliance["After"]
