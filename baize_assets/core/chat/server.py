"""``baize serve``: a trained adapter as an OpenAI-compatible chat server.

Endpoints: ``POST /v1/chat/completions`` (plain, or ``stream: true`` as server-sent
events in OpenAI's chunk format ending with ``data: [DONE]``), ``GET /v1/models`` and
``GET /v1/models/{id}`` (the adapter's directory name), and ``GET /stats`` (how the
generation thread has batched: groups started, rows, largest batch, forward passes, abandoned rows).

Messages are mapped to Baize turns (:mod:`~baize_assets.core.messages`; a first ``system``
message replaces the Baize system prompt, as in the adapter's chat template), rendered with
the Baize inference prompt and answered until a Baize marker, a ``stop`` string, EOS or
``max_tokens``. Concurrent requests and the ``n`` choices of one request are batched by
:class:`~baize_assets.core.chat.batched.BatchedGenerator` on its own thread.
Supported sampling fields: ``n``, ``max_tokens`` (or ``max_completion_tokens``),
``temperature``, ``top_p``, ``stop``, ``seed`` (choice ``i`` uses ``seed + i``) and vLLM's
``repetition_penalty``; other fields are ignored. Error bodies are OpenAI's.

Starlette on uvicorn (both come with dagster-webserver): an asyncio server keeps any
number of requests and streams waiting on the generation thread without a thread each,
and hands them tokens as they come. The simulated teacher keeps to the standard library.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from ...teacher.protocol import ApiError, bad_request, json_object_body, model_and_messages, model_not_found
from ..messages import messages_to_turns
from ..prompts import Turn
from .batched import BatchedGenerator, Completion, SamplingParams
from .chat_model import DEFAULT_REPETITION_PENALTY, ChatModel, load_chat_model

DEFAULT_MAX_TOKENS = 256
MAX_CHOICES = 16
OWNER = "baize"


class ServeError(Exception):
    """A server that cannot start: the message says what to fix."""


def _number(body: dict, field: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        (low < value if low_open else low <= value) and value <= high
    ):
        bounds = f"{'above' if low_open else 'from'} {low} {'up ' if low_open else ''}to {high}"
        raise bad_request(f"Invalid '{field}': {value!r}; expected a number {bounds}.", field)
    return float(value)


def _integer(body: dict, field: str, default: int | None, low: int, high: int | None = None) -> int | None:
    value = body.get(field)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise bad_request(f"Invalid '{field}': {value!r}; expected an integer {bounds}.", field)
    return value


def _message_text(message: dict, index: int) -> str:
    """A message's content: a string, or an array of text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in content
    ):
        return "".join(part["text"] for part in content)
    raise bad_request(f"messages[{index}].content must be a string or an array of text parts.", f"messages[{index}]")


def parse_chat_request(body: dict[str, Any], model_name: str) -> tuple[list[Turn], list[SamplingParams], dict]:
    """The Baize history, one :class:`SamplingParams` per choice, and the streaming options of a request.

    Raises :class:`ApiError` (400, naming the field; 404 for another model).
    """
    _, messages = model_and_messages(body, [model_name])
    texts = [{"role": m.get("role"), "content": _message_text(m, i)} for i, m in enumerate(messages)]
    # As in the adapter's chat template: one system message, first, replaces the Baize system prompt.
    later_system = next((i for i, m in enumerate(texts) if m["role"] == "system" and i > 0), None)
    if later_system is not None:
        raise bad_request(f"messages[{later_system}]: a system message must come first", f"messages[{later_system}]")
    system = texts[0]["content"] if texts and texts[0]["role"] == "system" else None
    try:
        turns = messages_to_turns(texts)
    except ValueError as exc:
        raise bad_request(str(exc), "messages") from None
    if not turns or turns[-1].role != "human":
        raise bad_request("the last message must be from the user", "messages")

    n = _integer(body, "n", 1, 1, MAX_CHOICES)
    limit_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, limit_field, DEFAULT_MAX_TOKENS, 1)
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
    penalty = _number(body, "repetition_penalty", DEFAULT_REPETITION_PENALTY, 0.0, 10.0, low_open=True)
    seed = _integer(body, "seed", None, -(2**63), 2**63 - MAX_CHOICES)  # choice i uses seed + i
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop)):
        raise bad_request("'stop' must be a non-empty string or an array of at most 4 non-empty strings.", "stop")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad_request(f"Invalid 'stream': {stream!r}; expected a boolean.", "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise bad_request("'stream_options' must be an object.", "stream_options")
    params = [
        SamplingParams(max_tokens, temperature, top_p, penalty, None if seed is None else seed + i, tuple(stop))
        for i in range(n)
    ]
    options = {"stream": bool(stream), "include_usage": bool(stream_options.get("include_usage")), "system": system}
    return turns, params, options


def _usage(completions: list[Completion]) -> dict[str, int]:
    prompt = completions[0].prompt_tokens  # the prompt is the same for every choice
    generated = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def create_app(generator: BatchedGenerator, model_name: str) -> Starlette:
    """The ASGI application answering with ``generator`` under the model id ``model_name``."""
    model_object = {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": OWNER}

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [model_object]})

    async def model(request: Request) -> JSONResponse:
        if request.path_params["model"] != model_name:
            raise model_not_found(request.path_params["model"])
        return JSONResponse(model_object)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(vars(generator.stats))

    async def chat_completions(request: Request):
        turns, params, options = parse_chat_request(json_object_body(await request.body()), model_name)
        envelope = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        if options["stream"]:
            answers, events = _start_stream(generator, turns, params, options["system"])
            return StreamingResponse(_stream(answers, events, envelope, options["include_usage"]),
                                     media_type="text/event-stream")
        answers = [_submit(generator, turns, p, system=options["system"]) for p in params]
        try:
            completions = await asyncio.gather(*(asyncio.wrap_future(a) for a in answers))
        finally:
            for answer in answers:
                answer.abandon()  # a no-op once done; stops the rows of a request given up on
        choices = [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
             "finish_reason": c.finish_reason}
            for i, c in enumerate(completions)
        ]
        return JSONResponse({**envelope, "object": "chat.completion", "choices": choices, "usage": _usage(completions)})

    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        error = {"message": f"{exc.detail}: {request.method} {request.url.path}", "type": "invalid_request_error",
                 "param": None, "code": None}
        return JSONResponse({"error": error}, status_code=exc.status_code)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        error = {"message": f"generation failed: {type(exc).__name__}: {exc}", "type": "server_error", "param": None,
                 "code": None}
        return JSONResponse({"error": error}, status_code=500)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model:path}", model, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
        ],
        exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error},
    )


def _submit(generator: BatchedGenerator, turns: list[Turn], params: SamplingParams, on_text=None, system=None):
    try:
        return generator.submit(turns, params, on_text, system)
    except ValueError as exc:
        raise bad_request(str(exc), "messages") from None


def _start_stream(generator: BatchedGenerator, turns: list[Turn], params: list[SamplingParams], system: str | None):
    """Submit every choice (before any byte is sent, so a bad prompt is still a 400) with its events to a queue."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    def deliver(event: tuple) -> None:  # called on the generation thread
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the server's loop has closed: nobody is listening
            pass

    answers = []
    for index, choice_params in enumerate(params):
        answer = _submit(generator, turns, choice_params, lambda text, index=index: deliver((index, text)), system)
        answer.add_done_callback(lambda future, index=index: deliver((index, future)))
        answers.append(answer)
    return answers, events


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def _stream(answers: list, events: asyncio.Queue, envelope: dict, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events: per choice a role chunk, content chunks, a finish chunk; usage; ``[DONE]``."""

    def chunk(index: int, delta: dict, finish_reason: str | None = None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return _event({**envelope, "object": "chat.completion.chunk", "choices": [choice]})

    try:
        for index in range(len(answers)):
            yield chunk(index, {"role": "assistant", "content": ""})
        completions: dict[int, Completion] = {}
        while len(completions) < len(answers):
            index, event = await events.get()
            if isinstance(event, str):
                yield chunk(index, {"content": event})
                continue
            failure = "cancelled" if event.cancelled() else event.exception()
            if failure is not None:
                error = {"message": f"generation failed: {failure}", "type": "server_error"}
                yield _event({"error": error})
                return
            completions[index] = event.result()
            yield chunk(index, {}, completions[index].finish_reason)
        if include_usage:
            usage = _usage([completions[i] for i in range(len(answers))])
            yield _event({**envelope, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        yield "data: [DONE]\n\n"
    finally:
        for answer in answers:
            answer.abandon()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), or a :class:`ServeError` naming the port."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is already in use; choose another with --port") from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def load_adapter(adapter_dir: Path) -> ChatModel:
    """:func:`load_chat_model` with the LoRA merged (nothing served needs the base alone), with any failure as a
    :class:`ServeError` naming the directory."""
    try:
        return load_chat_model(adapter_dir, merge=True)
    except Exception as exc:  # a broken adapter fails in many libraries' ways; the user needs the path
        message = str(exc)
        if str(adapter_dir) not in message:
            message = f"{adapter_dir} is not a loadable adapter: {type(exc).__name__}: {message}"
        raise ServeError(message) from None


class AdapterServer:
    """An adapter served on a background thread: ``with AdapterServer(path) as server: server.base_url``.

    ``port=0`` picks a free port. Pass ``chat`` to serve an already loaded model.
    """

    def __init__(
        self,
        adapter_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        max_batch: int = 16,
        batch_wait_ms: float = 5.0,
        chat: ChatModel | None = None,
        log_level: str = "warning",
    ):
        self.adapter_dir = Path(adapter_dir)
        self.model_name = self.adapter_dir.resolve().name
        self._socket = bind_socket(host, port)
        try:
            self.generator = BatchedGenerator(chat or load_adapter(self.adapter_dir), max_batch, batch_wait_ms)
        except BaseException:
            self._socket.close()
            raise
        config = uvicorn.Config(create_app(self.generator, self.model_name), log_level=log_level, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        address = self._socket.getsockname()
        self.host, self.port = address[0], address[1]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted (Ctrl-C), then stop the generation thread."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self.generator.close()
            self._socket.close()

    def __enter__(self) -> "AdapterServer":
        self._thread = threading.Thread(target=self.serve_forever, name="adapter-server", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise ServeError(f"the server on port {self.port} stopped while starting")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()


def serve_main(adapter: Path, host: str, port: int, max_batch: int, batch_wait_ms: float) -> int:
    """``baize serve``: serve until interrupted. Returns the exit code."""
    try:
        if max_batch < 1:
            raise ServeError("--max-batch must be at least 1")
        if batch_wait_ms < 0:
            raise ServeError("--batch-wait-ms must not be negative")
        server = AdapterServer(adapter, host, port, max_batch, batch_wait_ms, log_level="info")
    except ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"serving adapter {adapter} as model '{server.model_name}' on {server.base_url} "
          f"(batches of up to {max_batch}, gathered for {batch_wait_ms:g} ms)", file=sys.stderr)
    server.serve_forever()
    return 0
