"""Structured logs: one JSON object per line on stderr, for the supervisor and the API workers.

Log lines carry outcomes, ids and digests only. Prompts, completions, keys and tokens never
reach a logger in this package (request bodies are hashed, never logged; secrets are SecretStr).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

from gunicorn import glogging

# Not copied into a line: the record's own fields, and uvicorn's ANSI-coloured copy of the message.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure_json_logging(level: int = logging.INFO) -> None:
    """For entry points only: replaces the root handlers with one JSON handler on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class GunicornJsonLogger(glogging.Logger):
    """gunicorn's logger with JSON lines and no access log.

    No access log: a line per request costs CPU on the hot path, and request lines can carry
    query strings. Requests are counted in /metrics instead.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        level = os.environ.get("APPLIANCE_LOG_LEVEL", "INFO").upper()
        configure_json_logging(getattr(logging, level, logging.INFO))
        self.error_log.handlers[:] = []
        self.error_log.propagate = True

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None
