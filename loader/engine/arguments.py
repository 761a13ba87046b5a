"""A model's engine arguments next to the deployment's: each vLLM flag has one owner.

A model's trusted record may pin engine flags (loader.images.engine_settings); the loader's own
flags (--host, --port, --served-model-name) and the operator's `--engine-arg`s are fixed for the
deployment. vLLM keeps the last of two occurrences of a flag and only logs a warning, so the
value that runs would depend on argument order, and either the reviewed record or the operator
would be silently overruled. A flag set on both sides is refused instead, before the engine is
spawned: what the record pins is what runs, or nothing runs. The model's arguments also come
last on the command line, so that one slipping past this check (an abbreviated operator flag,
which argparse accepts) is still overruled by the record rather than the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from loader.errors import EngineArgumentConflictError, EngineStartError

# Second spellings of one vLLM 0.32 flag (vllm/engine/arg_utils.py), by the name they stand for.
VLLM_FLAG_ALIASES = MappingProxyType({"device-memory-utilization": "gpu-memory-utilization"})


def flag_key(token: str) -> str | None:
    """The flag a command-line token sets, as vLLM's parser sees it; None for a value token.

    `--max_model_len=5`, `--max-model-len` and `--no-enforce-eager` give `max-model-len`,
    `max-model-len` and `enforce-eager`: vLLM turns underscores into dashes, and `--no-X` sets X.
    """
    if not token.startswith("--"):
        return None
    name = token[2:].split("=", 1)[0].replace("_", "-").removeprefix("no-")
    return VLLM_FLAG_ALIASES.get(name, name)


def refuse_conflicts(model_args: Iterable[str], fixed_args: Iterable[str]) -> None:
    """Raise EngineStartError if a model argument is malformed, EngineArgumentConflictError if it
    sets a flag the deployment or the loader sets too."""
    fixed = {key: token for token in fixed_args if (key := flag_key(token)) is not None}
    for arg in model_args:
        key = flag_key(arg)
        if not key:
            raise EngineStartError(
                "a model's engine argument must be one --flag or --flag=value token",
                check="engine arguments", expected="--flag[=value]", actual=arg,
            )
        if key in fixed:
            raise EngineArgumentConflictError(
                f"engine flag --{key} is pinned by the model's record and also set for the "
                "deployment (--engine-arg, or the loader itself); set it in one place only",
                check="engine arguments", expected="each flag set in one place",
                actual=[arg, fixed[key]],
            )
