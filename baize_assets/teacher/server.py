"""A simulated teacher: an OpenAI-compatible chat server that writes placeholder self-chats.

The offline demo and the tests talk to it over real HTTP with the real ``openai``
client, exactly as the pipeline would talk to OpenAI, so retries, timeouts, streaming
and error handling are exercised end to end. It says plainly that it is simulated:
its model is ``baize-simulated-teacher``, owned by ``baize-simulation``, and its
transcripts are deterministic placeholder text built from the seed's words.

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``
(plain or ``stream: true`` Server-Sent Events) and ``GET /stats`` (request counters).
A self-chat prompt (see :mod:`baize_assets.core.prompts`) gets a ``[Human]``/``[AI]``
transcript about its seed; any other message gets a short placeholder reply.

Token counts everywhere (usage, ``max_tokens``) use one deterministic approximation:
``ceil(whitespace-separated words * 4 / 3)`` (see :func:`approx_tokens`).

Faults, for exercising the pipeline's retries: ``rate_limit`` (429 with ``Retry-After``),
``server_error`` (500), ``hang`` (answers only after ``hang_s``, so the client's timeout
hits first) and ``malformed`` (a 200 whose text has no markers).

Standard library only, so it runs wherever the package is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import math
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

from baize_assets.core.prompts import (
    RAW_AI,
    RAW_END,
    RAW_HUMAN,
    exchanges_in_self_chat_prompt,
    seed_from_self_chat_prompt,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "baize-simulated-teacher"
OWNER = "baize-simulation"
FAULT_KINDS = ("rate_limit", "server_error", "hang", "malformed")
API_KEY_ENV = "BAIZE_TEACHER_API_KEY"

# A fixed creation time keeps the model objects identical across runs.
_MODEL_CREATED = 1767225600  # 2026-01-01T00:00:00Z
# Advertised in the x-ratelimit-* headers when no request limit is enforced (the default).
_RATE_LIMIT_REQUESTS = 10_000
_RATE_LIMIT_TOKENS = 2_000_000
_MAX_BODY_BYTES = 16 * 1024 * 1024
_STREAM_WORDS_PER_CHUNK = 4


# --------------------------------------------------------------------------- text


def approx_tokens(text: str) -> int:
    """Approximate token count: whitespace-separated words × 4/3, rounded up."""
    return math.ceil(len(text.split()) * 4 / 3)


def apply_limits(text: str, stop: Sequence[str], max_tokens: int | None) -> tuple[str, str]:
    """Cut ``text`` like OpenAI does; returns ``(text, finish_reason)``.

    The text ends before the first occurrence of any stop sequence, then at
    ``max_tokens`` approximate tokens (finish reason ``length``).
    """
    cuts = [text.find(s) for s in stop if s and s in text]
    if cuts:
        text = text[: min(cuts)]
    if max_tokens is not None and approx_tokens(text) > max_tokens:
        # The most words whose approximate count fits: ceil(4w/3) <= m  <=>  w <= 3m/4.
        keep_words = (3 * max_tokens) // 4
        words = list(re.finditer(r"\S+", text))
        return (text[: words[keep_words - 1].end()] if keep_words else ""), "length"
    return text, "stop"


_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before
    being between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself
    just me more most my no nor not now of off on once only or other our out over own same
    she should so some such than that the their them then there these they this those
    through to too under until up very was we were what when where which while who whom
    why will with would you your yours best way ways get make thing things tell know explain
    please like want need think use using good""".split()
)

_FIRST_QUESTION_FOR_QUESTION = ("{seed}", "I have a question: {seed}", "Can you help me with this? {seed}")
_FIRST_QUESTION_FOR_TOPIC = (
    "Can you tell me about {seed}?",
    "I'd like to learn about {seed}. Where should I start?",
    "What is important to know about {seed}?",
)
_FOLLOW_UPS = (
    "How does {a} relate to {b}?",
    "What should a beginner know about {a}?",
    "What is a common mistake people make with {a}?",
    "Could you give me an example involving {a}?",
    "Why does {a} matter in practice?",
    "Where can I learn more about {a}?",
    "Does {b} change how {a} works?",
    "What would you do first if you were dealing with {a}?",
)
# The first answer of every transcript opens with one of these, so nobody mistakes
# the corpus for a real teacher's.
_PLACEHOLDER_OPENERS = (
    "This is a simulated answer about {a}, written as a placeholder.",
    "As a simulated teacher, I can give a placeholder overview of {a}.",
    "Here is a placeholder explanation of {a} from the simulated teacher.",
)
_ANSWER_SENTENCES = (
    "The short version is that {a} depends a lot on context, so it helps to start with the basics.",
    "A useful first step is to look at how {a} connects to {b}.",
    "Many people find {a} easier once they break it into smaller, concrete steps.",
    "The details vary from case to case, but the core idea behind {a} stays the same.",
    "One practical example is comparing {a} and {b} side by side and noting where they differ.",
    "It is worth checking a reliable reference on {a}, because advice about it changes over time.",
    "A common mistake is to treat {a} as a single thing when it really has several parts.",
    "If you keep {b} in mind, the role of {a} becomes much clearer.",
    "Practising {a} a little every day usually works better than doing it all at once.",
    "In most situations {a} matters less than people expect, while {b} matters more.",
    "There is no single right answer about {a}, but a few principles apply almost everywhere.",
    "Thinking about why {a} exists in the first place often explains how it behaves.",
)
_PLAIN_REPLIES = (
    "This is a simulated reply from {model} about {a}; a real teacher model would answer here.",
    "Simulated answer from {model}: your message about {a} was received, and this placeholder stands in for a reply.",
    "Placeholder reply from {model}. A real model would now discuss {a} and {b} in detail.",
)
_MALFORMED_REPLIES = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.",
    "Sure! Here is the conversation you asked for. The human starts by asking about the topi",
    "I'm sorry, but I can't continue this transcript.",
    '{"choices": [{"text": "unexpected end of',
)


def _rng(*parts: object) -> random.Random:
    """A random generator seeded from a stable hash of ``parts`` (not Python's ``hash``)."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _clean(text: str) -> str:
    """One line of text without raw markers, safe to put inside a marker-format turn."""
    return " ".join(text.replace(RAW_HUMAN, " ").replace(RAW_AI, " ").split())


def key_phrases(text: str) -> list[str]:
    """The distinct runs of content words in ``text`` (at most 3 words each), in order.

    "How do volcanoes form on the ocean floor?" gives ["volcanoes form", "ocean floor"]:
    runs read better in the templates than single words.
    """
    words = [w.strip("'-") for w in re.findall(r"\w[\w+#'-]*", text)]
    if words and words[0].istitle():
        words[0] = words[0].lower()  # capitalised only because it starts the sentence
    phrases: list[list[str]] = [[]]
    for word in words:
        if len(word) < 3 or word.lower() in _STOPWORDS or len(phrases[-1]) == 3:
            phrases.append([])
        if len(word) >= 3 and word.lower() not in _STOPWORDS:
            phrases[-1].append(word)
    distinct = dict.fromkeys(" ".join(p) for p in phrases if p)
    return list(distinct) or [w for w in words if w][:3] or ["this topic"]


def _two_phrases(rng: random.Random, phrases: list[str]) -> dict[str, str]:
    """Template fields: ``a`` a key phrase, ``b`` another one (or "its context")."""
    a = rng.choice(phrases)
    others = [p for p in phrases if p != a]
    return {"a": a, "b": rng.choice(others) if others else "its context"}


def self_chat_transcript(seed: str, model: str, temperature: float) -> str:
    """A deterministic placeholder self-chat about ``seed`` in the raw marker format.

    It continues after the prompt's example exchange: 2 to 4 ``[Human]``/``[AI]``
    exchanges, each answer 2–4 sentences mentioning the seed's key words.
    """
    rng = _rng("self-chat", seed, model, float(temperature))
    topic = _clean(seed) or "this topic"
    phrases = key_phrases(topic)
    if topic.endswith("?"):
        questions = [rng.choice(_FIRST_QUESTION_FOR_QUESTION).format(seed=topic)]
    else:
        questions = [rng.choice(_FIRST_QUESTION_FOR_TOPIC).format(seed=topic.rstrip("."))]
    exchanges = rng.randint(2, 4)
    questions += [q.format(**_two_phrases(rng, phrases)) for q in rng.sample(_FOLLOW_UPS, exchanges - 1)]

    lines = []
    for number, question in enumerate(questions):
        sentences = [s.format(**_two_phrases(rng, phrases)) for s in rng.sample(_ANSWER_SENTENCES, rng.randint(2, 4))]
        if number == 0:
            sentences[0] = rng.choice(_PLACEHOLDER_OPENERS).format(**_two_phrases(rng, phrases))
        lines += [f"{RAW_HUMAN} {question}", f"{RAW_AI} {' '.join(sentences)}"]
    return "\n".join(lines)


def plain_reply(message: str, model: str, temperature: float) -> str:
    """A deterministic short placeholder answer to an ordinary chat message."""
    rng = _rng("plain", message, model, float(temperature))
    return rng.choice(_PLAIN_REPLIES).format(model=model, **_two_phrases(rng, key_phrases(_clean(message))))


def _content_text(content: Any) -> str:
    """The text of a message's content: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def completion_text(messages: list[dict[str, Any]], model: str, temperature: float) -> str:
    """What the simulated teacher answers to ``messages`` (before stop/length limits).

    A self-chat prompt that already carries some dialogue (Baize v1.5's human turn) gets
    the rest of the seed's transcript after that many exchanges, or the end marker when
    the transcript has no more.
    """
    last_user = next((_content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    seed = seed_from_self_chat_prompt(last_user)
    if seed is not None:
        lines = self_chat_transcript(seed, model, temperature).split("\n")
        rest = lines[2 * exchanges_in_self_chat_prompt(last_user):]
        return "\n".join(rest) if rest else f"{RAW_HUMAN} {RAW_END}"
    return plain_reply(last_user, model, temperature)


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A request the server answers with an OpenAI-shaped error body."""

    def __init__(self, status: int, message: str, type_: str, code: str | None, param: str | None = None,
                 outcome: str = "invalid_request", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.outcome = outcome
        self.headers = headers or {}


def _bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", None, param)


def _model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error", "model_not_found", "model", outcome="not_found")


# --------------------------------------------------------------------------- request parsing


def _parse_chat_request(body: dict[str, Any], models: Sequence[str]) -> dict[str, Any]:
    """Validate a chat completion request; returns the normalised fields or raises ApiError."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad_request("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise _bad_request("'messages' must be a non-empty array of message objects", "messages")
    if model not in models:
        raise _model_not_found(model)

    n = body.get("n")
    if n is not None and n != 1:
        raise _bad_request("The simulated teacher only supports n=1.", "n")

    temperature = body.get("temperature")
    if temperature is None:
        temperature = 1.0
    elif isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise _bad_request(f"Invalid 'temperature': {temperature!r}; expected a number from 0 to 2.", "temperature")

    limit_param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(limit_param)
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise _bad_request(f"Invalid '{limit_param}': expected an integer of at least 1.", limit_param)

    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)):
        raise _bad_request("'stop' must be a string or an array of at most 4 strings.", "stop")

    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise _bad_request("'stream_options' must be an object.", "stream_options")
    return {
        "model": model,
        "messages": messages,
        "temperature": float(temperature),
        "max_tokens": max_tokens,
        "stop": stop,
        "stream": bool(body.get("stream")),
        "include_usage": bool(stream_options.get("include_usage")),
    }


# --------------------------------------------------------------------------- server


class SimulatedTeacher:
    """An OpenAI-compatible chat server with deterministic placeholder answers.

    ``fault_rate`` of the valid chat completion requests fail with one of
    ``fault_kinds``; whether the n-th one faults, and how, depends only on n and
    ``fault_seed``, so a run with faults is reproducible.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: Sequence[str] = (DEFAULT_MODEL,),
        api_key: str | None = None,
        latency_s: float = 0.0,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = FAULT_KINDS,
        fault_seed: int = 0,
        retry_after_s: float = 1.0,
        hang_s: float = 30.0,
        requests_per_window: int | None = None,
        rate_window_s: float = 60.0,
    ) -> None:
        self.fault_kinds = tuple(sorted(set(fault_kinds)))
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {list(FAULT_KINDS)}")
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1, got {fault_rate}")
        if fault_rate > 0 and not self.fault_kinds:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        if not models:
            raise ValueError("the server needs at least one model name")
        self.host = host
        self.port = port
        self.models = tuple(models)
        self._api_key = api_key  # never logged, printed or echoed in an error
        self.latency_s = latency_s
        self.fault_rate = fault_rate
        self.fault_seed = fault_seed
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        # Enforced only when set: at most this many chat completions in any rate window,
        # advertised in the x-ratelimit-* headers the way OpenAI does.
        self.requests_per_window = requests_per_window
        self.rate_window_s = rate_window_s
        self._admitted: deque[float] = deque()

        self._lock = threading.Lock()
        self._requests_total = 0
        self._by_path: Counter[str] = Counter()
        self._by_outcome: Counter[str] = Counter()
        self._connections_total = 0
        self._chat_requests = 0  # valid chat completions: the fault schedule's counter

        # Set on stop() so latency and hang sleeps end at once instead of holding threads.
        self._stopping = threading.Event()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> "SimulatedTeacher":
        """Bind and serve in a background thread; port 0 picks a free port."""
        if self._server is not None:
            raise RuntimeError("the simulated teacher is already running")
        self._stopping.clear()
        self._server = _HTTPServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        # A short poll interval keeps stop() fast; serve_forever checks for shutdown that often.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="simulated-teacher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections, including idle keep-alive ones."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> "SimulatedTeacher":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client, e.g. ``http://127.0.0.1:8000/v1``."""
        if self._server is None:
            raise RuntimeError("the simulated teacher is not running")
        return f"http://{self.host}:{self.port}/v1"

    # -- counters

    def stats(self) -> dict[str, Any]:
        """A snapshot of the request counters (also served as ``GET /stats``)."""
        with self._lock:
            return {
                "requests_total": self._requests_total,
                "requests_by_path": dict(self._by_path),
                "requests_by_outcome": dict(self._by_outcome),
                "connections_total": self._connections_total,
            }

    def _count_request(self, path: str) -> None:
        with self._lock:
            self._requests_total += 1
            self._by_path[path] += 1

    def _count_outcome(self, outcome: str) -> None:
        with self._lock:
            self._by_outcome[outcome] += 1

    def _count_connection(self) -> None:
        with self._lock:
            self._connections_total += 1

    # -- behaviour

    def _authorized(self, header: str | None) -> bool:
        if self._api_key is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._api_key.encode())

    def _admit(self) -> tuple[int, int, float]:
        """Admit one chat completion under the request limit: ``(limit, remaining, reset_s)``.

        ``reset_s`` is, as in OpenAI's ``x-ratelimit-reset-requests``, the time until the
        whole window is free again. A full window raises a 429 whose ``Retry-After`` is the
        time until its oldest request leaves it.
        """
        if self.requests_per_window is None:
            return _RATE_LIMIT_REQUESTS, _RATE_LIMIT_REQUESTS - 1, 0.0
        with self._lock:
            now = time.monotonic()
            while self._admitted and self._admitted[0] <= now - self.rate_window_s:
                self._admitted.popleft()
            if len(self._admitted) >= self.requests_per_window:
                next_slot_s = max(self._admitted[0] + self.rate_window_s - now, 0.001)
                reset_s = self._admitted[-1] + self.rate_window_s - now
                raise ApiError(429, "Rate limit reached for requests (simulated limit).", "requests",
                               "rate_limit_exceeded", outcome="rate_limited_by_limit",
                               headers={"Retry-After": f"{next_slot_s:.3f}",
                                        "x-ratelimit-limit-requests": str(self.requests_per_window),
                                        "x-ratelimit-remaining-requests": "0",
                                        "x-ratelimit-reset-requests": f"{reset_s:.3f}s"})
            self._admitted.append(now)
            return self.requests_per_window, self.requests_per_window - len(self._admitted), self.rate_window_s

    def _next_fault(self) -> str | None:
        """The fault of the next valid chat completion, a function of its number and the seed."""
        with self._lock:
            self._chat_requests += 1
            number = self._chat_requests
        rng = _rng("fault", self.fault_seed, number)
        if rng.random() < self.fault_rate:
            return rng.choice(self.fault_kinds)
        return None

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


class _HTTPServer(ThreadingHTTPServer):
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
        self.teacher._count_connection()
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
    server: _HTTPServer

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
        teacher._count_request(path)
        self._request_limit: tuple[int, int, float] | None = None
        try:
            # Read the body before anything can fail: unread bytes would corrupt the
            # next request on this keep-alive connection.
            body = self._read_body()
            if not teacher._authorized(self.headers.get("Authorization")):
                raise self._auth_error()
            if method == "GET" and path == "/stats":
                teacher._count_outcome("ok")  # counted first, so the snapshot includes this request
                self._send_json(200, teacher.stats(), outcome=None, rate_limit_headers=False)
            elif method == "GET" and path == "/v1/models":
                teacher._sleep(teacher.latency_s)
                self._send_json(200, {"object": "list", "data": [_model_object(m) for m in teacher.models]},
                                outcome="ok")
            elif method == "GET" and path.startswith("/v1/models/"):
                model = path.removeprefix("/v1/models/")
                if model not in teacher.models:
                    raise _model_not_found(model)
                teacher._sleep(teacher.latency_s)
                self._send_json(200, _model_object(model), outcome="ok")
            elif method == "POST" and path == "/v1/chat/completions":
                self._chat_completion(body)
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
            raise _bad_request("Chunked request bodies are not supported; send Content-Length.")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise _bad_request("Invalid Content-Length header.") from None
        if length > _MAX_BODY_BYTES:
            self.close_connection = True
            raise _bad_request("Request body too large.")
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
        try:
            body = json.loads(raw_body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        if not isinstance(body, dict):
            raise _bad_request("We could not parse the JSON body of your request. The body must be a JSON object.")
        request = _parse_chat_request(body, teacher.models)

        self._request_limit = teacher._admit()
        teacher._sleep(teacher.latency_s)
        fault = teacher._next_fault()
        if fault == "rate_limit":
            raise ApiError(429, "Rate limit reached for requests (simulated).", "rate_limit_exceeded",
                           "rate_limit_exceeded", outcome="rate_limit",
                           headers={"Retry-After": f"{teacher.retry_after_s:g}"})
        if fault == "server_error":
            raise ApiError(500, "The server had an error while processing your request (simulated).",
                           "server_error", None, outcome="server_error")
        if fault == "hang":
            teacher._count_outcome("hang")
            teacher._sleep(teacher.hang_s)
        if fault == "malformed":
            text = _rng("malformed", teacher.fault_seed, request["messages"]).choice(_MALFORMED_REPLIES)
        else:
            text = completion_text(request["messages"], request["model"], request["temperature"])
        text, finish_reason = apply_limits(text, request["stop"], request["max_tokens"])

        prompt_tokens = sum(approx_tokens(_content_text(m.get("content"))) for m in request["messages"])
        completion_tokens = approx_tokens(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if fault != "hang":  # a hang was counted when it started
            teacher._count_outcome(fault or "ok")
        envelope = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                    "model": request["model"], "system_fingerprint": None}
        if request["stream"]:
            self._stream(envelope, text, finish_reason, usage, request["include_usage"])
            return
        self._send_json(200, {
            **envelope,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage,
        }, outcome=None, tokens=usage["total_tokens"])

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
            self.server.teacher._count_outcome(outcome)
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
        limit, remaining, reset_s = self._request_limit or (_RATE_LIMIT_REQUESTS, _RATE_LIMIT_REQUESTS - 1, 0.0)
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex}")
        self.send_header("x-ratelimit-limit-requests", str(limit))
        self.send_header("x-ratelimit-remaining-requests", str(remaining))
        self.send_header("x-ratelimit-reset-requests", f"{reset_s:.3f}s")
        self.send_header("x-ratelimit-limit-tokens", str(_RATE_LIMIT_TOKENS))
        self.send_header("x-ratelimit-remaining-tokens", str(_RATE_LIMIT_TOKENS - tokens))


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": OWNER}


# --------------------------------------------------------------------------- command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m baize_assets.teacher",
        description="Run the simulated (placeholder) OpenAI-compatible teacher in the foreground.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks a free one (default 8000)")
    parser.add_argument("--model", action="append", dest="models", metavar="NAME",
                        help=f"model name to serve; repeatable (default {DEFAULT_MODEL})")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}, which keeps "
                             "the key out of the process list; unset = accept any key)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every API request")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of chat completions that fault (0..1)")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help=f"comma-separated fault kinds (default {','.join(FAULT_KINDS)})")
    parser.add_argument("--fault-seed", type=int, default=0, help="seed of the deterministic fault schedule")
    parser.add_argument("--retry-after-s", type=float, default=1.0, help="Retry-After value on simulated 429s")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long a hanging request sleeps")
    parser.add_argument("--rpm", type=int, default=None,
                        help="enforce at most this many chat completions per minute (429 beyond; default off)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT; the first stdout line is the base URL."""
    args = _parse_args(argv)
    try:
        teacher = SimulatedTeacher(
            args.host, args.port,
            models=args.models or (DEFAULT_MODEL,),
            api_key=args.api_key or None,
            latency_s=args.latency_ms / 1000,
            fault_rate=args.fault_rate,
            fault_kinds=[k.strip() for k in args.faults.split(",") if k.strip()],
            fault_seed=args.fault_seed,
            retry_after_s=args.retry_after_s,
            hang_s=args.hang_s,
            requests_per_window=args.rpm,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    with teacher:
        print(teacher.base_url, flush=True)
        print(
            f"simulated teacher (placeholder answers) serving {', '.join(teacher.models)}; "
            f"auth {'required' if args.api_key else 'off'}; fault rate {teacher.fault_rate:g} "
            f"({', '.join(teacher.fault_kinds)}); stop with Ctrl-C or SIGTERM",
            file=sys.stderr, flush=True,
        )
        stop_requested.wait()
    return 0
