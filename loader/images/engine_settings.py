"""Engine settings pinned by a model's trusted record (record version 2), and their allow-list.

Engine arguments depend on the model (all-MiniLM stops at 256 tokens, SmolLM2 goes to 8192), so
they are pinned in the model's record, reviewed and digested with it, rather than passed to every
model. The record's `engine` object:

    "engine": {
      "max_model_len": 2048,
      "runner": "generate" | "pooling" | null,
      "dtype": "auto" | "bfloat16" | "float16" | "float32" | null,
      "args": ["--max-num-seqs=8", "--enable-prefix-caching"]
    }

A null or missing key leaves vLLM's default. Each entry of `args` is one token: `--flag=value`, or
`--flag` / `--no-flag` for a switch, spelled as `vllm serve` 0.32 spells it (dashes, no
underscores, no abbreviations, no aliases), each flag at most once. Only flags that tune sizes,
batching, caching, numeric formats and the seed are allowed (ALLOWED_ENGINE_FLAGS). Everything
else is refused by omission, in particular what binds or names the server (--host, --port,
--api-key, --served-model-name, --model), reads files or code from outside the image
(--tokenizer, --chat-template, --generation-config, --config, --trust-remote-code, --middleware,
--lora-modules), reaches the network (--load-format), logs prompts (--enable-log-requests) or
weakens the prefix cache's hashing (--prefix-caching-hash-algo=xxhash).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from loader.errors import RecordError

RUNNERS = ("generate", "pooling")
DTYPES = ("auto", "bfloat16", "float16", "float32")
# Above any model's context today (10M tokens); a bound, so that a typo cannot ask for 2**63.
MAX_MODEL_LEN_LIMIT = 1 << 24
MAX_ENGINE_ARGS = 32
MAX_ENGINE_ARG_LENGTH = 128

# The settings with a field of their own: one way to pin each.
_FIELD_FLAGS = MappingProxyType({
    "--max-model-len": "max_model_len",
    "--runner": "runner",
    "--dtype": "dtype",
})
_FLAG_NAME = re.compile(r"--[a-z0-9]+(?:-[a-z0-9]+)*")
_DECIMAL_INT = re.compile(r"0|[1-9][0-9]{0,18}")
_DECIMAL_FRACTION = re.compile(r"(?:0|[1-9][0-9]{0,5})(?:\.[0-9]{1,6})?")


class FlagValue(Protocol):
    """What one allowed flag takes; `check` raises RecordError naming the flag."""

    def check(self, flag: str, value: str | None) -> None: ...


@dataclass(frozen=True)
class IntValue:
    low: int
    high: int

    def check(self, flag: str, value: str | None) -> None:
        expected = f"{flag}=N, N a decimal integer in {self.low}..{self.high}"
        if value is None or not _DECIMAL_INT.fullmatch(value):
            raise RecordError(
                f"engine argument {flag} takes an integer", check="engine.args",
                expected=expected, actual=value,
            )
        if not self.low <= int(value) <= self.high:
            raise RecordError(
                f"engine argument {flag} is out of range", check="engine.args",
                expected=expected, actual=value,
            )


@dataclass(frozen=True)
class FractionValue:
    """A decimal number in (low, high]."""

    low: float
    high: float

    def check(self, flag: str, value: str | None) -> None:
        expected = f"{flag}=X, X a decimal number in ({self.low:g}, {self.high:g}]"
        if value is None or not _DECIMAL_FRACTION.fullmatch(value):
            raise RecordError(
                f"engine argument {flag} takes a decimal number", check="engine.args",
                expected=expected, actual=value,
            )
        if not self.low < float(value) <= self.high:
            raise RecordError(
                f"engine argument {flag} is out of range", check="engine.args",
                expected=expected, actual=value,
            )


@dataclass(frozen=True)
class ChoiceValue:
    choices: tuple[str, ...]

    def check(self, flag: str, value: str | None) -> None:
        if value not in self.choices:
            raise RecordError(
                f"engine argument {flag} takes one of its choices", check="engine.args",
                expected=[f"{flag}={choice}" for choice in self.choices], actual=value,
            )


@dataclass(frozen=True)
class Switch:
    """A boolean flag: `--flag` or `--no-flag`, without a value."""

    def check(self, flag: str, value: str | None) -> None:
        if value is not None:
            raise RecordError(
                f"engine argument {flag} is a switch and takes no value", check="engine.args",
                expected=f"{flag} or --no-{flag.removeprefix('--')}", actual=f"{flag}={value}",
            )


# vLLM 0.32 `vllm serve` flags a record may pin. Each tunes capacity, scheduling or numerics of
# the one model served; none changes what listens, what is read, what runs or what is logged.
ALLOWED_ENGINE_FLAGS: Mapping[str, FlagValue] = MappingProxyType({
    "--max-num-seqs": IntValue(1, 1 << 16),
    "--max-num-batched-tokens": IntValue(1, MAX_MODEL_LEN_LIMIT),
    "--gpu-memory-utilization": FractionValue(0.0, 1.0),
    "--kv-cache-dtype": ChoiceValue(("auto", "bfloat16", "float16", "fp8", "fp8_e4m3",
                                     "fp8_e5m2")),
    "--enable-prefix-caching": Switch(),
    "--enable-chunked-prefill": Switch(),
    "--disable-sliding-window": Switch(),
    "--seed": IntValue(0, (1 << 32) - 1),
    # Tokenizers built into vLLM, reading the image's own files; "custom" modes are not.
    "--tokenizer-mode": ChoiceValue(("auto", "hf", "mistral")),
    # How a pooling runner adapts a generative model (with `runner`).
    "--convert": ChoiceValue(("auto", "none", "embed", "classify")),
})


@dataclass(frozen=True)
class ModelEngineSettings:
    """What the record pins for the engine; all empty (vLLM's defaults) unless the record says.

    Constructing it checks everything (RecordError), so an instance is always acceptable.
    """

    max_model_len: int | None = None
    runner: str | None = None
    dtype: str | None = None
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.args, str):  # one string would become one argument per character
            raise RecordError(
                "engine args must be a list of arguments", check="engine.args", actual=self.args
            )
        object.__setattr__(self, "args", tuple(self.args))
        _check_settings(self)

    @property
    def pinned(self) -> bool:
        """Whether the record pins anything (then it is a version-2 record)."""
        return self != NO_ENGINE_SETTINGS

    def vllm_args(self) -> tuple[str, ...]:
        """The settings as `vllm serve` arguments, one token each, fields first."""
        fields = (
            ("--max-model-len", self.max_model_len),
            ("--runner", self.runner),
            ("--dtype", self.dtype),
        )
        return tuple(f"{flag}={value}" for flag, value in fields if value is not None) + self.args

    def to_document(self) -> dict[str, object]:
        return {
            "max_model_len": self.max_model_len,
            "runner": self.runner,
            "dtype": self.dtype,
            "args": list(self.args),
        }


class EngineDocument(BaseModel):
    """The JSON boundary of the record's `engine` object: types only; ModelEngineSettings
    checks the values."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    max_model_len: int | None = None
    runner: str | None = None
    dtype: str | None = None
    args: list[str] = Field(default_factory=list)

    def settings(self) -> ModelEngineSettings:
        return ModelEngineSettings(self.max_model_len, self.runner, self.dtype, tuple(self.args))


def _check_settings(settings: ModelEngineSettings) -> None:
    length = settings.max_model_len
    if length is not None and (type(length) is not int or not 1 <= length <= MAX_MODEL_LEN_LIMIT):
        raise RecordError(
            "engine max_model_len out of range", check="engine.max_model_len",
            expected=f"an integer in 1..{MAX_MODEL_LEN_LIMIT}", actual=length,
        )
    if settings.runner is not None and settings.runner not in RUNNERS:
        raise RecordError(
            "unknown engine runner", check="engine.runner", expected=RUNNERS,
            actual=settings.runner,
        )
    if settings.dtype is not None and settings.dtype not in DTYPES:
        raise RecordError(
            "unknown engine dtype", check="engine.dtype", expected=DTYPES, actual=settings.dtype,
        )
    if len(settings.args) > MAX_ENGINE_ARGS:
        raise RecordError(
            "too many engine arguments", check="engine.args", expected=f"<= {MAX_ENGINE_ARGS}",
            actual=len(settings.args),
        )
    seen: dict[str, str] = {}
    for arg in settings.args:
        flag = _check_arg(arg)
        if flag in seen:
            raise RecordError(
                f"engine argument {flag} is given twice", check="engine.args",
                expected="each flag at most once", actual=[seen[flag], arg],
            )
        seen[flag] = arg


def _check_arg(arg: object) -> str:
    """Check one `args` entry; return the flag it sets (`--no-X` sets `--X`)."""
    if not isinstance(arg, str):
        raise RecordError(
            "engine argument must be a string", check="engine.args", actual=type(arg).__name__
        )
    if len(arg) > MAX_ENGINE_ARG_LENGTH:
        raise RecordError(
            "engine argument too long", check="engine.args",
            expected=f"<= {MAX_ENGINE_ARG_LENGTH} characters", actual=arg[:80],
        )
    if not arg.startswith("--"):
        raise RecordError(
            "engine argument must be one token --flag or --flag=value", check="engine.args",
            expected="--flag[=value]", actual=arg,
        )
    flag, has_value, value = arg.partition("=")
    if flag in _FIELD_FLAGS:
        raise RecordError(
            f"engine argument {flag} has a field of its own", check="engine.args",
            expected=f"engine.{_FIELD_FLAGS[flag]}", actual=arg,
        )
    if flag.startswith("--no-"):  # the off spelling of a switch sets the same flag
        positive = "--" + flag.removeprefix("--no-")
        if isinstance(ALLOWED_ENGINE_FLAGS.get(positive), Switch):
            flag = positive
    rule = ALLOWED_ENGINE_FLAGS.get(flag) if _FLAG_NAME.fullmatch(flag) else None
    if rule is None:
        raise RecordError(
            f"engine argument {flag} is not allowed", check="engine.args",
            expected=sorted(ALLOWED_ENGINE_FLAGS), actual=flag,
        )
    rule.check(flag, value if has_value else None)
    return flag


# Defined last: constructing it runs the checks above.
NO_ENGINE_SETTINGS = ModelEngineSettings()
