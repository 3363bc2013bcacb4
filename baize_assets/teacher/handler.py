"""The simulated teacher's HTTP side: a threading server and its request handler.

The handler reads each request, asks the :class:`~baize_assets.teacher.server.SimulatedTeacher`
it serves for the answer's inputs (auth, limits, faults, scripted replies) and writes
OpenAI-shaped responses: JSON, Server-Sent Events, or a fault's broken body.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .faults import completion_body, faulty_text, malformed_reply, status_fault
from .protocol import (
    RATE_LIMIT_REQUESTS,
    RATE_LIMIT_TOKENS,
    ApiError,
    bad_request,
    json_object_body,
    model_not_found,
    model_object,
    parse_chat_request,
)
from .reply import completion_text
from .text import apply_limits, approx_tokens, prompt_subject, prompt_tokens_of

if TYPE_CHECKING:
    from .server import SimulatedTeacher

log = logging.getLogger(__name__)

_MAX_BODY_BYTES = 16 * 1024 * 1024
_STREAM_WORDS_PER_CHUNK = 4
_DRIP_BYTES = 16


def build_completion(teacher: SimulatedTeacher, request: dict[str, Any],
                     fault: str | None) -> tuple[dict[str, Any], bytes | None]:
    """The chat completion answering ``request`` (a chat answer or a batch line), and scripted raw bytes if any."""
    scripted = teacher.scripted_reply(prompt_subject(request["messages"])) if teacher.scripted_reply else None
    raw_content = scripted if isinstance(scripted, bytes) else None
    if fault == "malformed":
        text = malformed_reply(teacher.faults.seed, request["messages"])
    elif isinstance(scripted, str):
        text = scripted
    elif raw_content is not None:
        text = raw_content.decode("utf-8", "replace")  # for the token count only
    else:
        text = completion_text(request["messages"], request["model"], request["temperature"], teacher.judge,
                               request["json_schema"])
    # A reasoning model thinks first: its hidden reasoning comes out of the same completion budget.
    reasoning = request["reasoning_tokens"]
    visible_budget = request["max_tokens"]
    if reasoning is not None and visible_budget is not None:
        reasoning = min(reasoning, visible_budget)
        visible_budget -= reasoning
    if raw_content is None and visible_budget == 0:
        text, finish_reason = "", "length"
    elif raw_content is None:
        text, finish_reason = apply_limits(text, request["stop"], visible_budget)
    else:
        finish_reason = "stop"
    text, finish_reason = faulty_text(fault, text, finish_reason, teacher.oversized_chars)

    prompt_tokens = prompt_tokens_of(request["messages"])
    completion_tokens = approx_tokens(text) + (reasoning or 0)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    completion = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": request["model"],
        "system_fingerprint": None, "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }
    return completion, raw_content


class TeacherHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hanging request must not keep the process alive
    request_queue_size = 1024  # many clients connect at once; the default backlog of 5 drops SYNs

    def __init__(self, address: tuple[str, int], teacher: SimulatedTeacher) -> None:
        self.teacher = teacher
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        self.teacher.count_connection()
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, cancelled run) is normal here, not a server fault.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Shut down every open connection so pooled clients cannot reach a stopped server."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pooled clients reuse connections
    server_version = "baize-simulated-teacher/1"
    timeout = 120  # idle keep-alive connections end instead of holding a thread forever
    # Headers and body are separate small writes; with Nagle's algorithm each response
    # would wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: TeacherHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Request lines only (never headers, so never the key); quiet unless debugging.
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # -- dispatch

    def _handle(self, method: str) -> None:
        teacher = self.server.teacher
        path = urlsplit(self.path).path.rstrip("/") or "/"
        teacher.count_request(path)
        self._request_limit: tuple[int, int, float] | None = None
        self._token_limit: tuple[int, int, float] | None = None
        try:
            # Read the body before anything can fail: unread bytes would corrupt the
            # next request on this keep-alive connection.
            body = self._read_body()
            if not teacher.authorized(self.headers.get("Authorization")):
                raise self._auth_error()
            if method == "GET" and path == "/stats":
                teacher.count_outcome("ok")  # counted first, so the snapshot includes this request
                self._send_json(200, teacher.stats(), outcome=None, rate_limit_headers=False)
            elif method == "GET" and path == "/v1/models":
                teacher.sleep(teacher.latency_s)
                self._send_json(200, {"object": "list", "data": [model_object(m) for m in teacher.models]},
                                outcome="ok")
            elif method == "GET" and path.startswith("/v1/models/"):
                model = path.removeprefix("/v1/models/")
                if model not in teacher.models:
                    raise model_not_found(model)
                teacher.sleep(teacher.latency_s)
                self._send_json(200, model_object(model), outcome="ok")
            elif method == "POST" and path == "/v1/chat/completions":
                self._chat_completion(body)
            elif path.startswith(("/v1/files", "/v1/batches")):
                self._batch_api(method, path, body)
            else:
                raise ApiError(404, f"Invalid URL ({method} {path})", "invalid_request_error", None,
                               outcome="not_found")
        except ApiError as error:
            self._send_json(error.status, error.body, outcome=error.outcome, extra_headers=error.headers,
                            rate_limit_headers=False)
        except (ConnectionError, TimeoutError):
            # The client gave up (e.g. its timeout hit during a hang); nothing to answer.
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True  # the chunked body stays unread
            raise bad_request("Chunked request bodies are not supported; send Content-Length.")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise bad_request("Invalid Content-Length header.") from None
        if length > _MAX_BODY_BYTES:
            self.close_connection = True
            raise bad_request("Request body too large.")
        return self.rfile.read(length) if length > 0 else b""

    def _auth_error(self) -> ApiError:
        if not self.headers.get("Authorization"):
            message = "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        else:
            message = "Incorrect API key provided."  # never echo any part of a key
        return ApiError(401, message, "invalid_request_error", "invalid_api_key", outcome="unauthorized")

    # -- chat completions

    def _chat_completion(self, raw_body: bytes) -> None:
        teacher = self.server.teacher
        body = json_object_body(raw_body)
        teacher.count_fields(body)
        request = parse_chat_request(body, teacher.models, teacher.reasoning_models, teacher.structured_output)

        # Tokens are counted at admission as the answer will use them (the fault-free answer).
        tokens = build_completion(teacher, request, None)[0]["usage"]["total_tokens"] if teacher.tokens_per_window \
            else 0
        self._request_limit, self._token_limit = teacher.admit(self.headers.get("Authorization") or "", tokens)
        teacher.sleep(teacher.latency_s)
        fault = teacher.faults.next()
        error = status_fault(fault, teacher.retry_after_s)
        if error is not None:
            raise error
        if fault == "hang":
            teacher.count_outcome("hang")
            teacher.sleep(teacher.hang_s)

        completion, raw_content = build_completion(teacher, request, fault)
        if fault != "hang":  # a hang was counted when it started
            teacher.count_outcome(fault or "ok")
        usage = completion["usage"]
        if request["stream"]:
            choice = completion["choices"][0]
            envelope = {name: completion[name] for name in ("id", "created", "model", "system_fingerprint")}
            self._stream(envelope, choice["message"]["content"], choice["finish_reason"], usage,
                         request["include_usage"])
            return
        self._send_completion(completion_body(fault, completion, raw_content, teacher.faults.seed), fault,
                              usage["total_tokens"])

    def _batch_api(self, method: str, path: str, body: bytes) -> None:
        answer = self.server.teacher.batches.route(method, path, body, self.headers.get("Content-Type", ""))
        if isinstance(answer, dict):
            self._send_json(200, answer, outcome="ok", rate_limit_headers=False)
            return
        self.server.teacher.count_outcome("ok")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        self.wfile.flush()

    def _send_completion(self, data: bytes, fault: str | None, tokens: int) -> None:
        """A 200 answer; ``short_body`` and ``slow_drip`` change how its bytes go out."""
        teacher = self.server.teacher
        declared = len(data)
        if fault == "short_body":
            data = data[: declared // 2]
            self.close_connection = True  # the client waits for bytes that never come
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(declared))
        self._send_rate_limit_headers(tokens)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if fault != "slow_drip":
            self.wfile.write(data)
            self.wfile.flush()
            return
        for start in range(0, len(data), _DRIP_BYTES):
            if teacher.stopping:
                self.close_connection = True  # the body is incomplete
                return
            self.wfile.write(data[start : start + _DRIP_BYTES])
            self.wfile.flush()
            teacher.sleep(teacher.drip_interval_s)

    def _stream(self, envelope: dict[str, Any], text: str, finish_reason: str,
                usage: dict[str, int], include_usage: bool) -> None:
        """Server-Sent Events in chunked transfer encoding, so the connection stays reusable."""
        with_usage = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
            return {**envelope, "object": "chat.completion.chunk", **with_usage,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        pieces = re.findall(r"\S+\s*|\s+", text)
        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": "".join(pieces[i:i + _STREAM_WORDS_PER_CHUNK])})
                   for i in range(0, len(pieces), _STREAM_WORDS_PER_CHUNK)]
        events.append(chunk({}, finish_reason))
        if include_usage:
            events.append({**envelope, "object": "chat.completion.chunk", "choices": [], "usage": usage})

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self._send_rate_limit_headers(usage["total_tokens"])
        self.end_headers()
        for event in events:
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- responses

    def _send_json(self, status: int, payload: dict[str, Any], *, outcome: str | None, tokens: int = 0,
                   extra_headers: dict[str, str] | None = None, rate_limit_headers: bool = True) -> None:
        """Send a JSON response; ``outcome`` is counted unless None (already counted)."""
        if outcome is not None:
            self.server.teacher.count_outcome(outcome)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if rate_limit_headers:
            self._send_rate_limit_headers(tokens)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_rate_limit_headers(self, tokens: int) -> None:
        limit, remaining, reset_s = self._request_limit or (RATE_LIMIT_REQUESTS, RATE_LIMIT_REQUESTS - 1, 0.0)
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.send_header("x-ratelimit-limit-requests", str(limit))
        self.send_header("x-ratelimit-remaining-requests", str(remaining))
        self.send_header("x-ratelimit-reset-requests", f"{reset_s:.3f}s")
        if self._token_limit is None:
            self.send_header("x-ratelimit-limit-tokens", str(RATE_LIMIT_TOKENS))
            self.send_header("x-ratelimit-remaining-tokens", str(RATE_LIMIT_TOKENS - tokens))
            return
        limit, remaining, reset_s = self._token_limit
        self.send_header("x-ratelimit-limit-tokens", str(limit))
        self.send_header("x-ratelimit-remaining-tokens", str(remaining))
        self.send_header("x-ratelimit-reset-tokens", f"{reset_s:.3f}s")
