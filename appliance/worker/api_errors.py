"""What a failed request answers, in both of the worker's stacks: the OpenAI error envelope.

The native ASGI handler (`appliance.worker.asgi`) and the Flask app's error handler
(`appliance.worker.routes`) both turn an exception into the `ApiError` they answer with here, and
send its `body()` as `ERROR_CONTENT_TYPE`. An `ApiError` is answered as it is; anything else is a
bug: its traceback goes to the log and the client gets a generic internal error.
"""

from __future__ import annotations

import logging

from appliance.errors import ApiError

log = logging.getLogger(__name__)

ERROR_CONTENT_TYPE = "application/json"
INTERNAL_ERROR_MESSAGE = "internal error (details are in the appliance's log)"


def as_api_error(exc: Exception, method: str, path: str) -> ApiError:
    """The error a request that raised `exc` answers with; `method` and `path` are for the log."""
    if isinstance(exc, ApiError):
        if exc.status >= 500:
            log.warning("request failed: %s %s", exc.status, exc.message)
        return exc
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return ApiError(INTERNAL_ERROR_MESSAGE)
