"""The last-load record (loader.lifecycle.last_load): atomic replacement, strict reading."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loader.errors import StateStoreError
from loader.lifecycle.last_load import LAST_LOAD_FILE, LastLoad, LastLoadStore

DIGEST = "0123456789abcdef" * 4


def test_round_trip_with_private_modes(tmp_path: Path) -> None:
    store = LastLoadStore(tmp_path / "state")
    assert store.load() is None
    store.save(LastLoad("tiny", DIGEST))
    assert store.load() == LastLoad("tiny", DIGEST)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def test_save_replaces_the_file_whole(tmp_path: Path) -> None:
    store = LastLoadStore(tmp_path)
    store.save(LastLoad("tiny", DIGEST))
    first_inode = store.path.stat().st_ino
    store.save(LastLoad("small", "ff" * 32))
    assert store.path.stat().st_ino != first_inode  # renamed over, never rewritten in place
    assert store.load() == LastLoad("small", "ff" * 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LAST_LOAD_FILE]  # no temporary left


def test_clear(tmp_path: Path) -> None:
    store = LastLoadStore(tmp_path / "never-created")
    store.clear()  # nothing to clear
    store.save(LastLoad("tiny", DIGEST))
    store.clear()
    assert store.load() is None


def test_save_refuses_a_digest_that_is_not_lower_hex(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hex"):
        LastLoadStore(tmp_path).save(LastLoad("tiny", DIGEST.upper()))
    assert not (tmp_path / LAST_LOAD_FILE).exists()


@pytest.mark.parametrize(
    ("content", "check"),
    [
        (b"", "last-load format"),
        (b"\xff\xfe", "last-load format"),
        (b"[]", "last-load format"),
        (json.dumps({"version": 1, "model": "tiny"}).encode(), "last-load format"),
        (json.dumps({"version": 1, "model": "tiny", "digest": DIGEST, "x": 1}).encode(),
         "last-load format"),
        (json.dumps({"version": "1", "model": "tiny", "digest": DIGEST}).encode(),
         "last-load format"),
        (json.dumps({"version": 2, "model": "tiny", "digest": DIGEST}).encode(),
         "last-load version"),
        (json.dumps({"version": 1, "model": "tiny", "digest": DIGEST.upper()}).encode(),
         "last-load digest"),
        (json.dumps({"version": 1, "model": "tiny", "digest": "xyz"}).encode(),
         "last-load digest"),
    ],
)
def test_untrustworthy_content_is_refused(tmp_path: Path, content: bytes, check: str) -> None:
    (tmp_path / LAST_LOAD_FILE).write_bytes(content)
    with pytest.raises(StateStoreError) as raised:
        LastLoadStore(tmp_path).load()
    assert raised.value.check == check


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / LAST_LOAD_FILE).mkdir()
    with pytest.raises(StateStoreError, match="cannot read"):
        LastLoadStore(tmp_path).load()


@given(
    model=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=64),
    digest=st.binary(min_size=1, max_size=64).map(bytes.hex),
)
def test_any_saved_record_reads_back(tmp_path_factory: pytest.TempPathFactory, model: str,
                                     digest: str) -> None:
    store = LastLoadStore(tmp_path_factory.mktemp("state"))
    store.save(LastLoad(model, digest))
    assert store.load() == LastLoad(model, digest)
