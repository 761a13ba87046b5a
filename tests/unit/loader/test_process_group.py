"""loader.engine.process_group: the line that explains an engine's failure, and safe output."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loader.engine.process_group import failure_cause, printable

VLLM_MAX_MODEL_LEN = (
    "INFO 12-06 10:00:01 [config.py:1] Using max model len 2048",
    "Traceback (most recent call last):",
    '  File "/venv/lib/python3.11/site-packages/vllm/config.py", line 1, in __post_init__',
    "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
    "  Value error, User-specified max_model_len (2048) is greater than the derived "
    "max_model_len (max_position_embeddings=512) [type=value_error]",
    "INFO 12-06 10:00:02 [launcher.py:9] Shutting down",
)


def test_the_last_error_line_is_the_cause() -> None:
    assert failure_cause(VLLM_MAX_MODEL_LEN) == (
        "Value error, User-specified max_model_len (2048) is greater than the derived "
        "max_model_len (max_position_embeddings=512) [type=value_error]"
    )


def test_without_an_error_line_the_last_line_is_the_cause() -> None:
    assert failure_cause(("starting", "killed", "   ")) == "killed"
    assert failure_cause(()) is None


@given(st.lists(st.text(max_size=80), max_size=20))
def test_the_cause_is_always_one_of_the_lines(lines: list[str]) -> None:
    cause = failure_cause(tuple(lines))
    assert cause is None or cause in [line.strip() for line in lines]


def test_control_characters_never_reach_a_log() -> None:
    replaced = "\N{REPLACEMENT CHARACTER}"
    assert printable(b"\x1b[31mred\x1b[0m\r\n") == f"{replaced}[31mred{replaced}[0m"
