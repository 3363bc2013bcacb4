"""A simulated teacher: an OpenAI-compatible chat server that writes placeholder self-chats.

The offline demo and the tests talk to it over real HTTP with the real ``openai``
client, exactly as the pipeline would talk to OpenAI, so retries, timeouts, streaming
and error handling are exercised end to end. It says plainly that it is simulated:
its model is ``baize-simulated-teacher``, owned by ``baize-simulation``, and its
transcripts are deterministic placeholder text built from the seed's words
(:mod:`~baize_assets.teacher.text`).

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``
(plain or ``stream: true`` Server-Sent Events), the Batch API (``/v1/files`` and
``/v1/batches``, :mod:`~baize_assets.teacher.batches`) and ``GET /stats`` (request counters).
A self-chat prompt (see :mod:`baize_assets.core.prompts`) gets a ``[Human]``/``[AI]``
transcript about its seed; any other message gets a short placeholder reply; a test can
script the replies instead (``scripted_reply``).

Faults, for exercising the pipeline's retries and guards, are listed in
:mod:`~baize_assets.teacher.faults`: error statuses, hangs, slow and broken bodies, and
answers that are well-formed but unusable.

Models named in ``reasoning_models`` follow OpenAI's reasoning models: ``max_tokens``,
``temperature`` or ``top_p`` other than 1 and ``stop`` are refused with OpenAI's exact 400
bodies, ``max_completion_tokens`` and ``reasoning_effort`` are taken, and each answer first
spends hidden reasoning tokens (by effort) out of its completion budget, reported in
``usage.completion_tokens_details.reasoning_tokens``. With ``judge=False`` the server
answers judge prompts as a chat model that is no judge does (scores far outside the
scale); ``structured_output`` says whether it follows ``response_format``'s JSON schema or
refuses it, as OpenAI does for a model without structured output (``refused``: 400) or as
llama-cpp-python's server does (``refused_as_500``: its body validation error, answered 500).

Standard library only, so it runs wherever the package is installed.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Iterable, Sequence

from .batches import OPENAI_BATCH_LIMITS, BatchLimits, BatchService
from .faults import ALL_FAULT_KINDS, DEFAULT_FAULT_KINDS, FaultSchedule
from .handler import TeacherHTTPServer, build_completion
from .protocol import DEFAULT_MODEL, OWNER, RATE_LIMIT_REQUESTS, STRUCTURED_OUTPUT, ApiError

__all__ = ["ALL_FAULT_KINDS", "API_KEY_ENV", "DEFAULT_FAULT_KINDS", "DEFAULT_MODEL", "OWNER", "SimulatedTeacher"]

API_KEY_ENV = "BAIZE_TEACHER_API_KEY"
ADMISSION_TIMES_KEPT = 100_000


def busiest_window(admitted_at_s: list[float], window_s: float, weights: list[int] | None = None) -> int:
    """The most admissions within any ``window_s`` of ``stats()["admitted_at_s"]`` (a sliding window).

    With ``weights`` (the tokens of each admission, as in ``stats()["admitted_tokens_at_s"]``),
    the most tokens admitted within any such window.
    """
    pairs = sorted(zip(admitted_at_s, weights if weights is not None else [1] * len(admitted_at_s)))
    first = best = inside = 0
    for at, weight in pairs:
        inside += weight
        while pairs[first][0] <= at - window_s:
            inside -= pairs[first][1]
            first += 1
        best = max(best, inside)
    return best


def _served_models(models: Sequence[str] | None, reasoning_models: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Every model served, and those of them with the reasoning-model rules; the default model unless only
    reasoning models are named."""
    if models is None:
        models = () if reasoning_models else (DEFAULT_MODEL,)
    if not models and not reasoning_models:
        raise ValueError("the server needs at least one model name")
    return tuple(dict.fromkeys((*models, *reasoning_models))), tuple(reasoning_models)


class SimulatedTeacher:
    """An OpenAI-compatible chat server with deterministic placeholder answers.

    ``fault_rate`` of the valid chat completion requests fail with one of
    ``fault_kinds``; whether the n-th one faults, and how, depends only on n and
    ``fault_seed``, so a run with faults is reproducible. ``scripted_reply``, when set
    (also while serving), maps a request's seed (or, for a prompt that is not a
    self-chat, its last user message) to the reply's content: text, which the stop
    sequences and the token limit still cut, or raw bytes sent verbatim as the content.
    The ``batch_*`` options shape the Batch API (:class:`~baize_assets.teacher.batches.BatchService`):
    how long a batch takes, the share of its lines that fail, how many batches expire, the
    ``custom_id`` faults of the first batch's output, and the limits it enforces.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: Sequence[str] | None = None,
        reasoning_models: Sequence[str] = (),
        judge: bool = True,
        structured_output: str = "json_schema",
        api_key: str | None = None,
        latency_s: float = 0.0,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = DEFAULT_FAULT_KINDS,
        fault_seed: int = 0,
        retry_after_s: float = 1.0,
        hang_s: float = 30.0,
        drip_interval_s: float = 0.2,
        oversized_chars: int = 5_000_000,
        requests_per_window: int | None = None,
        tokens_per_window: int | None = None,
        rate_window_s: float = 60.0,
        scripted_reply: Callable[[str], str | bytes] | None = None,
        batch_completion_delay_s: float = 0.5,
        batch_failure_rate: float = 0.0,
        batch_expire: int = 0,
        batch_duplicate_ids: int = 0,
        batch_unknown_ids: int = 0,
        batch_missing_ids: int = 0,
        batch_limits: BatchLimits = OPENAI_BATCH_LIMITS,
    ) -> None:
        self.faults = FaultSchedule(fault_rate, fault_kinds, fault_seed)
        # Batch lines are answered by the chat endpoint's own code, without its fault schedule.
        self.batches = BatchService(
            self, lambda request: build_completion(self, request, None)[0],
            completion_delay_s=batch_completion_delay_s, failure_rate=batch_failure_rate,
            expire_batches=batch_expire, duplicate_ids=batch_duplicate_ids, unknown_ids=batch_unknown_ids,
            missing_ids=batch_missing_ids, limits=batch_limits,
        )
        self.host = host
        self.port = port
        self.models, self.reasoning_models = _served_models(models, reasoning_models)
        self.judge = judge
        if structured_output not in STRUCTURED_OUTPUT:
            raise ValueError(f"structured_output is one of {', '.join(STRUCTURED_OUTPUT)}")
        self.structured_output = structured_output
        self._api_key = api_key  # never logged, printed or echoed in an error
        self.latency_s = latency_s
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.drip_interval_s = drip_interval_s
        self.oversized_chars = oversized_chars
        self.scripted_reply = scripted_reply
        # Enforced only when set: at most this many chat completions in any rate window,
        # advertised in the x-ratelimit-* headers the way OpenAI does.
        self.requests_per_window = requests_per_window
        # Likewise per API key: at most this many tokens (prompt and completion) admitted in any
        # window, counted when the request is admitted, as the answer will use them.
        self.tokens_per_window = tokens_per_window
        self.rate_window_s = rate_window_s
        self._admitted: deque[float] = deque()
        self._admitted_tokens: dict[str, deque[tuple[float, int]]] = {}  # per key: (when, tokens)
        self._token_admissions: deque[tuple[float, int]] = deque(maxlen=ADMISSION_TIMES_KEPT)
        # When each chat completion was admitted (seconds since start), so a test can find the busiest window.
        self._admission_times: deque[float] = deque(maxlen=ADMISSION_TIMES_KEPT)
        self._started = time.monotonic()

        self._lock = threading.Lock()
        self._requests_total = 0
        self._by_path: Counter[str] = Counter()
        self._by_outcome: Counter[str] = Counter()
        self._fields: Counter[str] = Counter()  # top-level fields of the chat completion requests
        self._temperatures: Counter[str] = Counter()  # their temperature ("None" when they sent none)
        self._connections_total = 0

        # Set on stop() so latency, hang and drip sleeps end at once instead of holding threads.
        self._stopping = threading.Event()
        self._server: TeacherHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def fault_rate(self) -> float:
        return self.faults.rate

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        return self.faults.kinds

    # -- lifecycle

    def start(self) -> "SimulatedTeacher":
        """Bind and serve in a background thread; port 0 picks a free port."""
        if self._server is not None:
            raise RuntimeError("the simulated teacher is already running")
        self._stopping.clear()
        self._server = TeacherHTTPServer((self.host, self.port), self)
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

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- counters

    def stats(self) -> dict[str, Any]:
        """A snapshot of the request counters (also served as ``GET /stats``)."""
        with self._lock:
            return {
                "requests_total": self._requests_total,
                "requests_by_path": dict(self._by_path),
                "requests_by_outcome": dict(self._by_outcome),
                "request_fields": dict(self._fields),
                "temperatures": dict(self._temperatures),
                "connections_total": self._connections_total,
                "admitted_at_s": [round(t, 4) for t in self._admission_times],
                "admitted_tokens_at_s": [[round(t, 4), tokens] for t, tokens in self._token_admissions],
                **self.batches.stats(),
            }

    def count_request(self, path: str) -> None:
        with self._lock:
            self._requests_total += 1
            self._by_path[path] += 1

    def count_outcome(self, outcome: str) -> None:
        with self._lock:
            self._by_outcome[outcome] += 1

    def count_fields(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._fields.update(name for name, value in body.items() if value is not None)
            self._temperatures[str(body.get("temperature"))] += 1

    def count_connection(self) -> None:
        with self._lock:
            self._connections_total += 1

    # -- behaviour

    def authorized(self, header: str | None) -> bool:
        if self._api_key is None:
            return True
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._api_key.encode())

    def admit(self, key: str = "", tokens: int = 0) -> tuple[tuple[int, int, float], tuple[int, int, float] | None]:
        """Admit one chat completion of ``tokens`` tokens for API key ``key`` under the limits.

        Returns ``(limit, remaining, reset_s)`` of requests, and of tokens when a token limit
        is enforced (else None). ``reset_s`` is, as in OpenAI's ``x-ratelimit-reset-*``, the
        time until the whole window is free again. A full window raises a 429 whose
        ``Retry-After`` is the time until enough of it has left.
        """
        with self._lock:
            now = time.monotonic()
            requests = (RATE_LIMIT_REQUESTS, RATE_LIMIT_REQUESTS - 1, 0.0)
            if self.requests_per_window is not None:
                while self._admitted and self._admitted[0] <= now - self.rate_window_s:
                    self._admitted.popleft()
                if len(self._admitted) >= self.requests_per_window:
                    raise self._refusal("requests", self.requests_per_window, self._admitted[0] - now,
                                        self._admitted[-1] - now)
                requests = (self.requests_per_window, self.requests_per_window - len(self._admitted) - 1,
                            self.rate_window_s)
            token_limit = None
            if self.tokens_per_window is not None:
                window = self._admitted_tokens.setdefault(key, deque())
                while window and window[0][0] <= now - self.rate_window_s:
                    window.popleft()
                used = sum(n for _, n in window)
                if used + tokens > self.tokens_per_window:
                    # Enough of the window has left for this request once the entry that frees the excess has.
                    excess, frees_at = used + tokens - self.tokens_per_window, now
                    for at, n in window:
                        excess, frees_at = excess - n, at
                        if excess <= 0:
                            break
                    raise self._refusal("tokens", self.tokens_per_window, frees_at - now,
                                        window[-1][0] - now if window else 0.0)
                window.append((now, tokens))
                self._token_admissions.append((now - self._started, tokens))
                token_limit = (self.tokens_per_window, self.tokens_per_window - used - tokens, self.rate_window_s)
            if self.requests_per_window is not None:
                self._admitted.append(now)
            self._admission_times.append(now - self._started)
            return requests, token_limit

    def _refusal(self, kind: str, limit: int, oldest_s: float, newest_s: float) -> ApiError:
        """The 429 of a full ``kind`` window; ``oldest_s`` and ``newest_s`` (from now, so negative) are when the
        entry whose leaving makes room and the window's last entry came."""
        return ApiError(429, f"Rate limit reached for {kind} (simulated limit).", kind, "rate_limit_exceeded",
                        outcome="rate_limited_by_limit",
                        headers={"Retry-After": f"{max(oldest_s + self.rate_window_s, 0.001):.3f}",
                                 f"x-ratelimit-limit-{kind}": str(limit),
                                 f"x-ratelimit-remaining-{kind}": "0",
                                 f"x-ratelimit-reset-{kind}": f"{newest_s + self.rate_window_s:.3f}s"})

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)
