"""Engine settings in the trusted record (loader.images.engine_settings), as properties: any
allowed settings round-trip through the record and reach the engine's command line unchanged;
any flag off the allow-list is refused, named. With the vLLM CPU build installed, its own parser
reads every allowed flag and value as the allow-list means it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.engines import real_vllm_bin

from loader.engine.kinds import VllmEngine
from loader.errors import RecordError
from loader.images.engine_settings import (
    ALLOWED_ENGINE_FLAGS,
    DTYPES,
    MAX_MODEL_LEN_LIMIT,
    RUNNERS,
    ChoiceValue,
    FractionValue,
    IntValue,
    ModelEngineSettings,
    Switch,
)
from loader.images.record import TrustedRecord, parse_record
from loader.verity import VerityParams

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)
PARAMS = VerityParams(data_blocks=100, salt=bytes(32), uuid=UUID(int=7))


def allowed_arg(flag: str) -> st.SearchStrategy[str]:
    """Valid `args` entries for one allowed flag."""
    rule = ALLOWED_ENGINE_FLAGS[flag]
    if isinstance(rule, Switch):
        return st.sampled_from([flag, "--no-" + flag.removeprefix("--")])
    if isinstance(rule, IntValue):
        return st.integers(rule.low, rule.high).map(lambda n: f"{flag}={n}")
    if isinstance(rule, FractionValue):
        fractions = st.integers(1, 999_999).map(lambda n: f"0.{n:06d}".rstrip("0"))
        return st.one_of(st.just("1"), st.just("1.0"), fractions).map(lambda x: f"{flag}={x}")
    assert isinstance(rule, ChoiceValue), f"no strategy for {type(rule).__name__}"
    return st.sampled_from(rule.choices).map(lambda choice: f"{flag}={choice}")


@st.composite
def engine_settings(draw: st.DrawFn) -> ModelEngineSettings:
    flags = draw(st.lists(st.sampled_from(sorted(ALLOWED_ENGINE_FLAGS)), unique=True))
    return ModelEngineSettings(
        max_model_len=draw(st.none() | st.integers(1, MAX_MODEL_LEN_LIMIT)),
        runner=draw(st.none() | st.sampled_from(RUNNERS)),
        dtype=draw(st.none() | st.sampled_from(DTYPES)),
        args=tuple(draw(allowed_arg(flag)) for flag in flags),
    )


def record_with(engine: ModelEngineSettings) -> TrustedRecord:
    return TrustedRecord("m", bytes(32), PARAMS, "squashfs", image_size=PARAMS.data_size,
                         hash_size=PARAMS.geometry.tree_end, engine=engine)


@PROPERTY_SETTINGS
@given(engine_settings())
def test_allowed_settings_round_trip_through_the_record(engine: ModelEngineSettings) -> None:
    record = record_with(engine)
    for raw in (record.to_json().encode(), record.canonical_bytes()):
        parsed = parse_record(raw)
        assert parsed == record and parsed.engine == engine
        assert parsed.record_digest == record.record_digest
    assert json.loads(record.to_json())["version"] == (2 if engine.pinned else 1)


@PROPERTY_SETTINGS
@given(engine_settings(), engine_settings())
def test_record_digest_tells_settings_apart(
    first: ModelEngineSettings, second: ModelEngineSettings
) -> None:
    same_digest = record_with(first).record_digest == record_with(second).record_digest
    assert same_digest == (first == second)


@PROPERTY_SETTINGS
@given(engine_settings())
def test_allowed_settings_reach_the_command_line_last_and_unchanged(
    engine: ModelEngineSettings,
) -> None:
    vllm = VllmEngine.cpu_development(Path("/opt/engine/bin/vllm"), port=8000)
    command = vllm.command(Path("/m"), "m", engine.vllm_args())
    assert command[len(command) - len(engine.vllm_args()):] == engine.vllm_args()
    assert len(engine.vllm_args()) == len(engine.args) + sum(
        value is not None for value in (engine.max_model_len, engine.runner, engine.dtype)
    )


@PROPERTY_SETTINGS
@given(
    st.from_regex(r"--[a-z0-9]{1,12}(-[a-z0-9]{1,12}){0,4}", fullmatch=True).filter(
        lambda flag: flag not in ALLOWED_ENGINE_FLAGS
        and "--" + flag.removeprefix("--no-") not in ALLOWED_ENGINE_FLAGS
    ),
    st.none() | st.from_regex(r"[A-Za-z0-9._-]{1,16}", fullmatch=True),
)
def test_any_flag_off_the_allow_list_is_refused_by_name(flag: str, value: str | None) -> None:
    arg = flag if value is None else f"{flag}={value}"
    with pytest.raises(RecordError) as caught:
        ModelEngineSettings(args=(arg,))
    assert caught.value.check == "engine.args"
    assert flag in str(caught.value)


def flag_of(arg: str) -> str:
    """The allowed flag an entry sets: `--no-X` sets `--X`."""
    name = arg.partition("=")[0]
    return name if name in ALLOWED_ENGINE_FLAGS else "--" + name.removeprefix("--no-")


@PROPERTY_SETTINGS
@given(engine_settings().filter(lambda engine: engine.args), st.data())
def test_any_allowed_flag_given_twice_is_refused(
    engine: ModelEngineSettings, data: st.DataObject
) -> None:
    flag = flag_of(data.draw(st.sampled_from(engine.args)))
    again = data.draw(allowed_arg(flag))
    position = data.draw(st.integers(0, len(engine.args)))
    args = (*engine.args[:position], again, *engine.args[position:])
    with pytest.raises(RecordError, match=f"{flag} is given twice"):
        ModelEngineSettings(args=args)


def test_the_allow_list_holds_no_flag_that_weakens_isolation() -> None:
    # Spot checks of what must never be allowed, whatever else is added later.
    forbidden = {
        "--host", "--port", "--api-key", "--served-model-name", "--model", "--tokenizer",
        "--chat-template", "--generation-config", "--config", "--trust-remote-code",
        "--middleware", "--lora-modules", "--enable-lora", "--load-format", "--download-dir",
        "--enable-log-requests", "--prefix-caching-hash-algo", "--allowed-local-media-path",
        "--worker-cls", "--worker-extension-cls", "--hf-overrides", "--ssl-keyfile",
        "--distributed-executor-backend", "--root-path", "--uds",
    }
    assert not forbidden & set(ALLOWED_ENGINE_FLAGS)


# Run by the engine's own Python: vLLM's `serve` parser reads each command line; the parsed
# values come back as JSON.
PARSE_WITH_VLLM = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = make_arg_parser(FlexibleArgumentParser())
json.dump([vars(parser.parse_args(argv)) for argv in json.load(sys.stdin)], sys.stdout,
          default=repr)
"""


def samples(flag: str) -> list[tuple[str, object]]:
    """(argument, the value vLLM must parse it to) at the edges of what the allow-list takes."""
    rule = ALLOWED_ENGINE_FLAGS[flag]
    if isinstance(rule, Switch):
        return [(flag, True), ("--no-" + flag.removeprefix("--"), False)]
    if isinstance(rule, IntValue):
        return [(f"{flag}={n}", n) for n in (rule.low, rule.high)]
    if isinstance(rule, FractionValue):
        return [(f"{flag}={x}", float(x)) for x in ("0.000001", "0.5", "1")]
    assert isinstance(rule, ChoiceValue)
    return [(f"{flag}={choice}", choice) for choice in rule.choices]


def field_samples() -> list[tuple[str, object]]:
    """The record's own fields, as ModelEngineSettings passes them."""
    settings = [ModelEngineSettings(max_model_len=n) for n in (1, MAX_MODEL_LEN_LIMIT)]
    settings += [ModelEngineSettings(runner=runner) for runner in RUNNERS]
    settings += [ModelEngineSettings(dtype=dtype) for dtype in DTYPES]
    values = [s.max_model_len or s.runner or s.dtype for s in settings]
    return [(s.vllm_args()[0], value) for s, value in zip(settings, values, strict=True)]


@pytest.mark.engine
def test_vllm_parses_every_allowed_setting_as_meant() -> None:
    python = real_vllm_bin().with_name("python")
    cases = field_samples() + [sample for flag in ALLOWED_ENGINE_FLAGS for sample in samples(flag)]
    argvs = [["/m", arg] for arg, _ in cases]
    done = subprocess.run([python, "-c", PARSE_WITH_VLLM], input=json.dumps(argvs),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for (arg, value), namespace in zip(cases, json.loads(done.stdout), strict=True):
        destination = arg.partition("=")[0].removeprefix("--").replace("-", "_")
        destination = destination.removeprefix("no_") if value is False else destination
        assert namespace[destination] == value, arg
