"""Model names: the only user input that becomes a path, so a small, safe alphabet."""

from __future__ import annotations

import re

from loader.errors import ModelNameError

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_model_name(name: object) -> str:
    """Return `name` if it is a safe model name, else raise ModelNameError.

    One path component from [A-Za-z0-9][A-Za-z0-9._-]{0,63} without "..": no separators, no
    absolute paths, no traversal, no hidden files, nothing a shell or a URL would re-interpret.
    """
    if not isinstance(name, str):
        raise ModelNameError(
            "model name must be a string", check="name", actual=type(name).__name__
        )
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise ModelNameError(
            "invalid model name",
            check="name",
            expected="[A-Za-z0-9][A-Za-z0-9._-]{0,63} without '..'",
            actual=repr(name[:80]),
        )
    return name
