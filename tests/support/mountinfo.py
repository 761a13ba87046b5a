"""/proc/self/mountinfo lines for tests, escaped as the kernel escapes them (proc(5))."""

from __future__ import annotations

_ESCAPED = {" ": "\\040", "\t": "\\011", "\n": "\\012", "\\": "\\134"}


def escape(path: str) -> str:
    return "".join(_ESCAPED.get(char, char) for char in path)


def mountinfo_line(
    mount_id: int,
    mount_point: str,
    source: str,
    *,
    fstype: str = "squashfs",
    options: str = "ro,nosuid,nodev,noexec,relatime",
    optional: str = "master:1",
) -> str:
    fields = [str(mount_id), "1", f"253:{mount_id}", "/", escape(mount_point), options]
    fields += [*optional.split(), "-", fstype, escape(source), "ro"]
    return " ".join(fields) + "\n"


def mountinfo(*lines: str) -> bytes:
    """A table with the usual unrelated mounts first, then `lines`."""
    unrelated = [
        mountinfo_line(21, "/", "/dev/vda1", fstype="ext4", options="rw,relatime", optional=""),
        mountinfo_line(22, "/proc", "proc", fstype="proc", options="rw,nosuid", optional=""),
        mountinfo_line(23, "/run", "tmpfs", fstype="tmpfs", options="rw", optional="shared:5"),
    ]
    return "".join(unrelated + list(lines)).encode()
