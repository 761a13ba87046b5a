"""The mount-table parser (loader.activator.recovery) under arbitrary paths and arbitrary bytes.

Any path the kernel can print comes back exactly, whatever it holds (escaped space, tab, newline
and backslash; raw carriage returns, non-ASCII); and any input parses or raises MountTableError.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from support.mountinfo import mountinfo_line

from loader.activator.recovery import parse_mountinfo
from loader.errors import MountTableError

_PATH_CHARS = st.characters(blacklist_characters="\x00/", blacklist_categories=("Cs",))
paths = st.lists(st.text(_PATH_CHARS, min_size=1, max_size=12), min_size=1, max_size=4).map(
    lambda parts: "/" + "/".join(parts)
)
sources = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1
)


@given(st.lists(st.tuples(paths, sources), min_size=1, max_size=5))
def test_escaped_paths_and_sources_come_back_exactly(mounts: list[tuple[str, str]]) -> None:
    raw = "".join(
        mountinfo_line(number, point, source) for number, (point, source) in enumerate(mounts)
    ).encode()
    parsed = parse_mountinfo(raw)
    assert [(mount.mount_point, mount.source) for mount in parsed] == mounts
    assert [mount.mount_id for mount in parsed] == list(range(len(mounts)))


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_mount_table_error(raw: bytes) -> None:
    try:
        parsed = parse_mountinfo(raw)
    except MountTableError as error:
        assert error.check == "mountinfo"
    else:
        assert len(parsed) == raw.removesuffix(b"\n").count(b"\n") + 1 or raw == b""
