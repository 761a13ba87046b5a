#!/usr/bin/env python3
"""A real fake of `vllm serve`: same command line, OpenAI-shaped HTTP, fault injection.

It is a separate process launched exactly like vLLM (the loader's `vllm_bin` is this script), so
tests exercise real process groups, signals, ports and HTTP without the 20 s start of the real
engine. Standard library only, so it runs under any Python >= 3.11.

Command line (unknown vLLM flags are accepted and ignored, as a note on stderr):

    fake_vllm.py serve MODEL_DIR [--host 127.0.0.1] [--port 8000] [--served-model-name NAME]
                 [--max-model-len 512] [...]

MODEL_DIR must be an existing directory. Endpoints, modelled on vLLM 0.32:

    GET  /health                200, empty body
    GET  /version               {"version": "0.0.0+fake"}
    GET  /v1/models             one model card: id = served name, root = MODEL_DIR, max_model_len
    POST /v1/chat/completions   JSON, or SSE with `"stream": true`
    POST /v1/completions        JSON, or SSE with `"stream": true`
    POST /v1/embeddings         deterministic unit vectors

Completions are deterministic: the words are drawn from SHA-256 of (served name, prompt), so the
same prompt always gives the same text and different prompts almost surely differ (useful to catch
mixed-up concurrent streams). With `max_tokens` the reply has exactly that many tokens and
finish_reason "length"; without it, 8 tokens and finish_reason "stop". One token = one word.
Streams: a first chunk with the role (chat only), one chunk per token, a chunk with the
finish_reason, a usage chunk with empty `choices` when `stream_options.include_usage` is true, then
`data: [DONE]`; the body is sent with chunked transfer encoding, like uvicorn. Bad input gets vLLM's
error envelope `{"error": {"message", "type", "param", "code"}}` (400, or 404 for an unknown model);
unknown paths get FastAPI's `{"detail": "Not Found"}`.

Fault injection, through the environment (seconds may be fractional):

    FAKE_VLLM_START_DELAY=S          wait S seconds before listening (vLLM takes ~20 s)
    FAKE_VLLM_EXIT_AT_START=CODE     print a traceback-like error and exit with CODE instead of
                                     serving
    FAKE_VLLM_NEVER_HEALTHY=1        /health answers 503 forever
    FAKE_VLLM_UNHEALTHY_AFTER=S      /health answers 500 once S seconds have passed since listening
    FAKE_VLLM_CRASH_AFTER_REQUESTS=N exit abruptly (status 70) right after answering the N-th
                                     inference request
    FAKE_VLLM_RESPONSE_DELAY=S       wait S seconds before answering an inference request
    FAKE_VLLM_STREAM_DELAY=S         wait S seconds between SSE events
    FAKE_VLLM_ABORT_STREAM_AFTER=K   drop the connection after K SSE events (no [DONE], no final
                                     chunk)
    FAKE_VLLM_END_DELAY=S            wait S seconds after `data: [DONE]` before ending the body
    FAKE_VLLM_POOLING=1              serve as a pooling model: only /v1/embeddings, FastAPI's 404
                                     `{"detail": "Not Found"}` for the generation routes
    FAKE_VLLM_IGNORE_SIGTERM=1       ignore SIGTERM (the loader must escalate to SIGKILL)
    FAKE_VLLM_STOP_DELAY=S           on SIGTERM, take S seconds to shut down
    FAKE_VLLM_CHILD=1                start a helper child in the same process group, like vLLM's
                                     EngineCore; it is stopped on a graceful shutdown
    FAKE_VLLM_ORPHAN_CHILD=1         with FAKE_VLLM_CHILD: the child ignores SIGTERM and the server
                                     leaves it behind when it exits
    FAKE_VLLM_SPAWN_LOG=PATH         append one JSON line {"pid", "pgid", "argv", "model"} per start
    FAKE_VLLM_LOG_LINES=N            print N extra log lines at start (to fill ring buffers)
    FAKE_VLLM_LOG_PROMPTS=1          print every prompt to stdout (a leaky engine; the loader must
                                     never pass engine output to its logs at info level)
    FAKE_VLLM_EMBEDDING_DIM=N        embedding size (default 16)

Exit status: 0 after a graceful shutdown, 2 on a bad command line or environment, 70 for an
injected crash, CODE for FAKE_VLLM_EXIT_AT_START.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CRASH_EXIT_STATUS = 70
USAGE_EXIT_STATUS = 2
DEFAULT_TOKENS = 8
MAX_BODY_BYTES = 8 * 1024 * 1024
VOCABULARY = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "red", "orange", "yellow", "green",
    "blue", "indigo", "violet", "amber", "coral", "ivory", "jade", "olive", "pearl", "ruby",
    "silver", "topaz", "north", "south", "east", "west", "river", "stone", "cloud", "field",
    "light", "storm", "ember", "frost", "meadow", "harbor", "lantern", "orbit", "prism", "quartz",
    "signal", "tundra", "vector", "willow",
)


class BadRequest(Exception):
    """Input that vLLM would refuse: answered with its error envelope."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Faults:
    start_delay: float
    exit_at_start: int | None
    never_healthy: bool
    unhealthy_after: float | None
    crash_after_requests: int | None
    response_delay: float
    stream_delay: float
    abort_stream_after: int | None
    end_delay: float
    pooling: bool
    ignore_sigterm: bool
    stop_delay: float
    child: bool
    orphan_child: bool
    spawn_log: Path | None
    log_lines: int
    log_prompts: bool
    embedding_dim: int

    @classmethod
    def from_environment(cls, env: dict[str, str]) -> Faults:
        def number(name: str, kind: type, default: Any, minimum: float = 0) -> Any:
            raw = env.get(f"FAKE_VLLM_{name}")
            if raw is None or raw == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SystemExit(
                    f"fake_vllm: FAKE_VLLM_{name}={raw!r} is not a {kind.__name__}"
                ) from None
            if value < minimum:
                raise SystemExit(f"fake_vllm: FAKE_VLLM_{name} must be >= {minimum}, got {raw}")
            return value

        def flag(name: str) -> bool:
            return env.get(f"FAKE_VLLM_{name}", "") not in ("", "0")

        spawn_log = env.get("FAKE_VLLM_SPAWN_LOG")
        return cls(
            start_delay=number("START_DELAY", float, 0.0),
            exit_at_start=number("EXIT_AT_START", int, None),
            never_healthy=flag("NEVER_HEALTHY"),
            unhealthy_after=number("UNHEALTHY_AFTER", float, None),
            crash_after_requests=number("CRASH_AFTER_REQUESTS", int, None, minimum=1),
            response_delay=number("RESPONSE_DELAY", float, 0.0),
            stream_delay=number("STREAM_DELAY", float, 0.0),
            abort_stream_after=number("ABORT_STREAM_AFTER", int, None),
            end_delay=number("END_DELAY", float, 0.0),
            pooling=flag("POOLING"),
            ignore_sigterm=flag("IGNORE_SIGTERM"),
            stop_delay=number("STOP_DELAY", float, 0.0),
            child=flag("CHILD"),
            orphan_child=flag("ORPHAN_CHILD"),
            spawn_log=Path(spawn_log) if spawn_log else None,
            log_lines=number("LOG_LINES", int, 0),
            log_prompts=flag("LOG_PROMPTS"),
            embedding_dim=number("EMBEDDING_DIM", int, 16, minimum=1),
        )


@dataclass(frozen=True)
class ServeArgs:
    model: str
    host: str
    port: int
    served_model_name: str
    max_model_len: int


def parse_command_line(argv: list[str]) -> ServeArgs:
    parser = argparse.ArgumentParser(prog="fake_vllm", description="A fake `vllm serve`.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("model")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-model-name", nargs="+")
    serve.add_argument("--max-model-len", type=int, default=512)
    args, ignored = parser.parse_known_args(argv)
    if ignored:
        print(f"fake_vllm: ignoring engine options {' '.join(ignored)}", file=sys.stderr)
    if not Path(args.model).is_dir():
        raise SystemExit(f"fake_vllm: model directory {args.model} does not exist")
    # Like vLLM: the first served name is the model id; without one, the model path is.
    name = args.served_model_name[0] if args.served_model_name else args.model
    return ServeArgs(args.model, args.host, args.port, name, args.max_model_len)


def log(message: str) -> None:
    print(f"INFO {time.strftime('%m-%d %H:%M:%S')} [fake_vllm] {message}", flush=True)


# -- deterministic "inference" -------------------------------------------------------------------


def words_for(seed_text: str, count: int) -> list[str]:
    """`count` vocabulary words drawn from SHA-256 in counter mode over `seed_text`."""
    words: list[str] = []
    block = 0
    while len(words) < count:
        digest = hashlib.sha256(f"{block}\0{seed_text}".encode()).digest()
        words.extend(VOCABULARY[byte % len(VOCABULARY)] for byte in digest)
        block += 1
    return words[:count]


def count_tokens(text: str) -> int:
    return len(text.split())


def embedding_for(model: str, text: str, dim: int) -> list[float]:
    raw = hashlib.sha256(f"{model}\0{text}".encode()).digest() * (dim // 32 + 1)
    vector = [byte - 127.5 for byte in raw[:dim]]
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


@dataclass(frozen=True)
class Generation:
    """What the engine "decides" for one request: its tokens, why it stops, and the usage."""

    tokens: list[str]
    finish_reason: str
    prompt_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def usage(self) -> dict[str, int]:
        completion = len(self.tokens)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }


def generate(model: str, prompt: str, prompt_tokens: int, max_tokens: int | None) -> Generation:
    count = DEFAULT_TOKENS if max_tokens is None else max_tokens
    words = words_for(f"{model}\0{prompt}", count)
    tokens = [word if index == 0 else " " + word for index, word in enumerate(words)]
    return Generation(tokens, "stop" if max_tokens is None else "length", prompt_tokens)


# -- request validation (only what the fake routes on; vLLM validates the rest) ----------------


def require_model(body: dict[str, Any], served: str) -> str:
    model = body.get("model", served)
    if model != served:
        raise BadRequest(
            f"The model `{model}` does not exist. Valid aliases: {served}.", HTTPStatus.NOT_FOUND
        )
    return served


def read_max_tokens(body: dict[str, Any], limit: int, *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadRequest(f"{name} must be an integer, got {value!r}")
        if value < 1:
            raise BadRequest(f"{name} must be at least 1, got {value}.")
        if value > limit:
            raise BadRequest(
                f"This model's maximum context length is {limit} tokens. "
                f"However, you requested {value} output tokens."
            )
        return value
    return None


def read_stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest(f"stream must be a boolean, got {stream!r}")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise BadRequest("Stream options can only be defined when `stream=True`.")
    if not isinstance(options, dict):
        raise BadRequest("stream_options must be an object")
    return stream, bool(options.get("include_usage", False))


def require_single_choice(body: dict[str, Any]) -> None:
    n = body.get("n", 1)
    if n != 1:
        raise BadRequest(f"the fake engine supports n=1 only, got n={n!r}")


def chat_prompt(body: dict[str, Any]) -> tuple[str, int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    parts = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{index}] must be an object with a string role")
        content = message.get("content", "")
        if isinstance(content, list):  # content parts: keep the text ones
            content = " ".join(
                part.get("text", "") for part in content if isinstance(part, dict)
            )
        if not isinstance(content, str):
            raise BadRequest(f"messages[{index}].content must be a string or a list of parts")
        parts.append(f"{message['role']}: {content}")
    prompt = "\n".join(parts)
    # A few tokens per message for the chat template, as real templates add them.
    return prompt, count_tokens(prompt) + 3 * len(messages)


def completion_prompt(body: dict[str, Any]) -> tuple[str, int]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string (the fake engine takes one prompt)")
    return prompt, count_tokens(prompt)


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise BadRequest("input must be a string or a non-empty list of strings")
    return inputs


# -- HTTP ----------------------------------------------------------------------------------------


class EngineState:
    """Counters and times shared by the handler threads."""

    def __init__(self, args: ServeArgs, faults: Faults) -> None:
        self.args = args
        self.faults = faults
        self.listening_since = time.monotonic()
        self._lock = threading.Lock()
        self._inference_requests = 0

    def health_status(self) -> HTTPStatus:
        if self.faults.never_healthy:
            return HTTPStatus.SERVICE_UNAVAILABLE
        after = self.faults.unhealthy_after
        if after is not None and time.monotonic() - self.listening_since >= after:
            return HTTPStatus.INTERNAL_SERVER_ERROR
        return HTTPStatus.OK

    def count_inference_request(self) -> int:
        with self._lock:
            self._inference_requests += 1
            return self._inference_requests


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-vllm/0.0.0"
    engine: EngineState  # set on the subclass made by make_handler

    # Access log lines like uvicorn's, without bodies.
    def log_message(self, format: str, *args: Any) -> None:
        log(f"{self.client_address[0]}:{self.client_address[1]} - {format % args}")

    # -- plumbing --

    def send_json(self, status: HTTPStatus, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_empty(self, status: HTTPStatus) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_error_envelope(self, error: BadRequest) -> None:
        kind = "NotFoundError" if error.status == HTTPStatus.NOT_FOUND else "BadRequestError"
        self.send_json(
            error.status,
            {"error": {"message": str(error), "type": kind, "param": None, "code": error.status}},
        )

    def read_body(self) -> dict[str, Any]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = self.read_chunked_body()
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise BadRequest("Content-Length is not an integer") from None
            if length > MAX_BODY_BYTES:
                raise BadRequest(f"request body of {length} bytes is too large")
            raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BadRequest(f"JSON decode error: {error}") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        return body

    def read_chunked_body(self) -> bytes:
        chunks = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise BadRequest("request body is too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def start_event_stream(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_events(self, events: Iterator[dict[str, Any]]) -> None:
        faults = self.engine.faults
        for sent, payload in enumerate([*events, None]):
            if faults.abort_stream_after is not None and sent >= faults.abort_stream_after:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # a torn stream: no final chunk, no [DONE]
                return
            if sent and faults.stream_delay:
                time.sleep(faults.stream_delay)
            data = "[DONE]" if payload is None else json.dumps(payload)
            frame = f"data: {data}\n\n".encode()
            try:
                self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                # Reported on stdout (the engine log tail) so that tests can see a proxy close
                # the upstream request when its client goes away, as vLLM aborts generation.
                log(f"client disconnected mid-stream after {sent} events")
                self.close_connection = True
                return
        time.sleep(faults.end_delay)  # vLLM ends its body a moment after [DONE]
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- routes --

    def do_GET(self) -> None:
        args = self.engine.args
        if self.path == "/health":
            self.send_empty(self.engine.health_status())
        elif self.path == "/version":
            self.send_json(HTTPStatus.OK, {"version": "0.0.0+fake"})
        elif self.path == "/v1/models":
            card = {
                "id": args.served_model_name,
                "object": "model",
                "created": int(time.time()),
                "owned_by": "vllm",
                "root": args.model,
                "parent": None,
                "max_model_len": args.max_model_len,
            }
            self.send_json(HTTPStatus.OK, {"object": "list", "data": [card]})
        elif self.path in ROUTES:
            self.send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"detail": "Method Not Allowed"})
        else:
            self.send_json(HTTPStatus.NOT_FOUND, {"detail": "Not Found"})

    def do_POST(self) -> None:
        route = ROUTES.get(self.path)
        if self.engine.faults.pooling and self.path != "/v1/embeddings":
            route = None  # a pooling model's vLLM registers no generation routes
        if route is None:
            self.close_connection = True  # its body is not read: the connection cannot go on
            self.send_json(HTTPStatus.NOT_FOUND, {"detail": "Not Found"})
            return
        try:
            body = self.read_body()
        except BadRequest as error:
            self.close_connection = True  # the body may be half-read
            self.send_error_envelope(error)
            return
        if self.engine.faults.response_delay:
            time.sleep(self.engine.faults.response_delay)
        try:
            route(self, body)
        except BadRequest as error:
            self.send_error_envelope(error)
        crash_after = self.engine.faults.crash_after_requests
        if self.engine.count_inference_request() == crash_after:
            log(f"injected crash after {crash_after} requests")
            self.wfile.flush()
            os._exit(CRASH_EXIT_STATUS)

    def chat_completions(self, body: dict[str, Any]) -> None:
        limit = self.engine.args.max_model_len
        model = require_model(body, self.engine.args.served_model_name)
        prompt, prompt_tokens = chat_prompt(body)
        max_tokens = read_max_tokens(body, limit, "max_completion_tokens", "max_tokens")
        stream, include_usage = read_stream_options(body)
        require_single_choice(body)
        self.log_prompt(prompt)
        result = generate(model, prompt, prompt_tokens, max_tokens)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not stream:
            message = {"role": "assistant", "content": result.text, "tool_calls": []}
            choice = {"index": 0, "message": message, "logprobs": None,
                      "finish_reason": result.finish_reason, "stop_reason": None}
            self.send_json(HTTPStatus.OK, {
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [choice], "usage": result.usage(),
            })
            return

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [choice]}

        def events() -> Iterator[dict[str, Any]]:
            yield chunk({"role": "assistant", "content": ""})
            for token in result.tokens:
                yield chunk({"content": token})
            yield chunk({}, result.finish_reason)
            if include_usage:
                yield {"id": ident, "object": "chat.completion.chunk", "created": created,
                       "model": model, "choices": [], "usage": result.usage()}

        self.start_event_stream()
        self.send_events(events())

    def completions(self, body: dict[str, Any]) -> None:
        limit = self.engine.args.max_model_len
        model = require_model(body, self.engine.args.served_model_name)
        prompt, prompt_tokens = completion_prompt(body)
        max_tokens = read_max_tokens(body, limit, "max_tokens")
        stream, include_usage = read_stream_options(body)
        require_single_choice(body)
        self.log_prompt(prompt)
        result = generate(model, prompt, prompt_tokens, max_tokens)
        ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def response(text: str, finish_reason: str | None) -> dict[str, Any]:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                      "stop_reason": None}
            return {"id": ident, "object": "text_completion", "created": created,
                    "model": model, "choices": [choice]}

        if not stream:
            self.send_json(HTTPStatus.OK,
                           response(result.text, result.finish_reason) | {"usage": result.usage()})
            return

        def events() -> Iterator[dict[str, Any]]:
            for token in result.tokens:
                yield response(token, None)
            yield response("", result.finish_reason)
            if include_usage:
                yield {"id": ident, "object": "text_completion", "created": created,
                       "model": model, "choices": [], "usage": result.usage()}

        self.start_event_stream()
        self.send_events(events())

    def embeddings(self, body: dict[str, Any]) -> None:
        model = require_model(body, self.engine.args.served_model_name)
        inputs = embedding_inputs(body)
        dim = self.engine.faults.embedding_dim
        data = [
            {"index": index, "object": "embedding", "embedding": embedding_for(model, text, dim)}
            for index, text in enumerate(inputs)
        ]
        tokens = sum(count_tokens(text) for text in inputs)
        self.send_json(HTTPStatus.OK, {
            "id": f"embd-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
            "model": model, "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        })

    def log_prompt(self, prompt: str) -> None:
        if self.engine.faults.log_prompts:
            log(f"Received request: prompt: {prompt!r}")


ROUTES = {
    "/v1/chat/completions": Handler.chat_completions,
    "/v1/completions": Handler.completions,
    "/v1/embeddings": Handler.embeddings,
}


# -- process -------------------------------------------------------------------------------------


def start_child(faults: Faults) -> subprocess.Popen[bytes]:
    """A helper process in our process group, standing in for vLLM's EngineCore."""
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if faults.orphan_child else ""
    code = f"import signal, time; {ignore}time.sleep(3600)"
    return subprocess.Popen([sys.executable, "-c", code])


def record_spawn(path: Path, args: ServeArgs) -> None:
    entry = {"pid": os.getpid(), "pgid": os.getpgid(0), "argv": sys.argv, "model": args.model}
    with path.open("a") as spawn_log:
        spawn_log.write(json.dumps(entry) + "\n")


def main(argv: list[str]) -> int:
    try:
        faults = Faults.from_environment(dict(os.environ))
        args = parse_command_line(argv)
    except SystemExit as error:
        if isinstance(error.code, str):
            print(error.code, file=sys.stderr)
        return USAGE_EXIT_STATUS
    if faults.spawn_log:
        record_spawn(faults.spawn_log, args)
    log(f"fake vLLM API server version 0.0.0+fake; model={args.model}")
    for index in range(faults.log_lines):
        log(f"loading weights, step {index + 1} of {faults.log_lines}")
    if faults.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = start_child(faults) if faults.child else None
    time.sleep(faults.start_delay)
    if faults.exit_at_start is not None:
        print("Traceback (most recent call last):\n  File \"fake_vllm.py\", line 1, in main\n"
              "RuntimeError: injected start-up failure (FAKE_VLLM_EXIT_AT_START)\n"
              "INFO shutting down", file=sys.stderr)
        return faults.exit_at_start

    handler = type("BoundHandler", (Handler,), {})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    handler.engine = EngineState(args, faults)

    def shut_down() -> None:
        time.sleep(faults.stop_delay)
        server.shutdown()

    if not faults.ignore_sigterm:
        signal.signal(
            signal.SIGTERM, lambda signum, frame: threading.Thread(target=shut_down).start()
        )
    log(f"Uvicorn running on http://{args.host}:{args.port} (Press CTRL+C to quit)")
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    if child is not None and not faults.orphan_child:
        child.terminate()
        child.wait()
    log("Shutdown complete")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
