"""The worker's one error renderer: what an exception answers with, in both stacks alike."""

from __future__ import annotations

import logging

import pytest
from support.worker_app import MODEL, AsgiClient, SupervisorDouble

from appliance.channel.shared_state import SharedStateReader
from appliance.errors import BadRequest, UpstreamError
from appliance.worker.api_errors import as_api_error
from appliance.worker.server import build_worker

LOGGER = "appliance.worker.api_errors"
# The exact bytes a client gets for a bug: no detail of the failure leaks into them.
INTERNAL_ERROR_BODY = (
    b'{"error": {"message": "internal error (details are in the appliance\'s log)", '
    b'"type": "server_error", "param": null, "code": "internal_error"}}'
)


def test_an_api_error_is_answered_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    error = BadRequest("`model` is required", param="model")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert as_api_error(error, "POST", "/v1/completions") is error
    assert caplog.records == []


def test_a_server_side_api_error_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    error = UpstreamError("the engine closed the connection")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert as_api_error(error, "POST", "/v1/completions") is error
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "request failed: 502 the engine closed the connection"


def test_any_other_exception_is_an_internal_error_with_its_traceback_in_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise KeyError("secret detail")
    except KeyError as exc:
        bug = exc
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        error = as_api_error(bug, "GET", "/v1/models")
    assert (error.status, error.body()) == (500, INTERNAL_ERROR_BODY)
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "unhandled error on GET /v1/models"
    assert record.exc_info is not None and record.exc_info[1] is bug


def test_both_stacks_answer_a_bug_with_the_same_bytes(
        supervisor_double: SupervisorDouble, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    app, _tls = build_worker(supervisor_double.settings)
    client = AsgiClient(app)

    def broken(_reader: SharedStateReader) -> None:
        raise RuntimeError("the state reader broke")

    monkeypatch.setattr(SharedStateReader, "current", broken)
    try:
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            native = client.post("/v1/chat/completions", json={"model": MODEL, "prompt": "x"})
            flask = client.get("/v1/models")
    finally:
        client.close()
    for response in (native, flask):
        assert response.status_code == 500
        assert response.content == INTERNAL_ERROR_BODY
        assert response.headers["content-type"] == "application/json"
    assert [r.getMessage() for r in caplog.records] == [
        "unhandled error on POST /v1/chat/completions", "unhandled error on GET /v1/models"]
