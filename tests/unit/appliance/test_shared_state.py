"""The shared state file: atomic replacement, cheap change detection, damage tolerance."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.channel.shared_state import NOT_STARTED, SharedState, SharedStateReader, publish


def ready_state(model: str = "tiny", generation: int = 1) -> SharedState:
    return SharedState(
        status={"proxy_status": "ready", "loaded_model": model, "loaded_model_digest": "ab" * 32,
                "proxy_message": "ready", "proxy_progress": 1.0},
        identity_generation=generation,
        certificate_sha256="cd" * 32,
    )


def test_reader_sees_each_published_state(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    reader = SharedStateReader(path)
    assert reader.current() is NOT_STARTED
    publish(path, ready_state("a", 1))
    assert reader.current().model == "a" and reader.current().ready
    publish(path, ready_state("b", 2))
    assert reader.current().model == "b"
    assert reader.current().identity_generation == 2


def test_unchanged_file_is_not_re_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    publish(path, ready_state())
    reader = SharedStateReader(path)
    first = reader.current()
    assert reader.current() is first


def test_damaged_file_keeps_the_last_good_view(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    publish(path, ready_state("good"))
    reader = SharedStateReader(path)
    assert reader.current().model == "good"
    path.write_text("{not json")
    assert reader.current().model == "good"


def test_not_ready_without_a_model() -> None:
    state = SharedState(
        status={"proxy_status": "ready", "loaded_model": None}, identity_generation=0
    )
    assert not state.ready
    assert not NOT_STARTED.ready


@settings(deadline=None)  # the machine is shared; timing is not what is tested
@given(st.dictionaries(st.sampled_from(["proxy_status", "loaded_model", "proxy_message"]),
                       st.one_of(st.none(), st.text(max_size=20))),
       st.integers(min_value=-1, max_value=2**40))
def test_json_round_trip(status: dict, generation: int) -> None:
    state = SharedState(status=status, identity_generation=generation)
    assert SharedState.from_json(state.to_json()) == state
