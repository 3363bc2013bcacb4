"""Self-chat collection: one teacher call per seed writes a whole Baize v1 transcript.

Requests run concurrently through the official ``openai`` async client against any
OpenAI-compatible endpoint; the client's own retry (with backoff and ``Retry-After``)
handles transient errors. A seed that still fails becomes a row with its failure kind,
never silence. Errors no retry can fix (bad key, no such model) stop the run at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import openai
import pandas as pd
import pyarrow as pa

from .config import TeacherConfig
from .prompts import SELF_CHAT_PROMPT_VERSION, self_chat_prompt

TRANSCRIPT_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("seed", pa.string()),
        ("source", pa.string()),
        ("shard", pa.int32()),
        ("prompt_version", pa.string()),
        ("model", pa.string()),
        ("temperature", pa.float64()),
        ("max_tokens", pa.int64()),
        ("transcript", pa.string()),
        ("finish_reason", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("total_tokens", pa.int64()),
        ("failure_kind", pa.string()),
        ("failure_message", pa.string()),
    ]
)


class TeacherFatalError(RuntimeError):
    """The teacher refused in a way no retry can fix (bad key, missing model)."""


@dataclass
class Usage:
    """Token usage of a collection run, per model (as the teacher reported it)."""

    calls: Counter = field(default_factory=Counter)
    prompt_tokens: Counter = field(default_factory=Counter)
    completion_tokens: Counter = field(default_factory=Counter)

    def add(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.calls[model] += 1
        self.prompt_tokens[model] += prompt_tokens
        self.completion_tokens[model] += completion_tokens

    def as_metadata(self) -> dict[str, int]:
        """Totals and per-model counts, named as dagster-openai names them."""
        metadata = {
            "openai.calls": sum(self.calls.values()),
            "openai.prompt_tokens": sum(self.prompt_tokens.values()),
            "openai.completion_tokens": sum(self.completion_tokens.values()),
            "openai.total_tokens": sum(self.prompt_tokens.values()) + sum(self.completion_tokens.values()),
        }
        for model in self.calls:
            metadata[f"openai.{model}.calls"] = self.calls[model]
            metadata[f"openai.{model}.prompt_tokens"] = self.prompt_tokens[model]
            metadata[f"openai.{model}.completion_tokens"] = self.completion_tokens[model]
            metadata[f"openai.{model}.total_tokens"] = self.prompt_tokens[model] + self.completion_tokens[model]
        return metadata


@dataclass
class CollectionResult:
    transcripts: pd.DataFrame
    usage: Usage
    failures: Counter
    seconds: float


def _failure_kind(error: Exception) -> str:
    if isinstance(error, openai.RateLimitError):
        return "rate_limited"
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection"
    if isinstance(error, openai.InternalServerError):
        return "server_error"
    if isinstance(error, openai.BadRequestError):
        return "bad_request"
    if isinstance(error, openai.APIStatusError):
        return f"http_{error.status_code}"
    return type(error).__name__


async def _collect(
    seeds: pd.DataFrame,
    teacher: TeacherConfig,
    client: openai.AsyncOpenAI,
    log: Callable[[str], None],
    progress_every_s: float,
) -> CollectionResult:
    started = time.monotonic()
    usage, failures = Usage(), Counter()
    rows: list[dict] = []
    in_flight = asyncio.Semaphore(teacher.max_concurrency)
    last_report = started
    stopping = False  # set by a fatal error, before its slot frees, so no request follows it

    async def one(seed: dict) -> None:
        nonlocal last_report, stopping
        row = {
            "seed_id": seed["seed_id"],
            "seed": seed["seed"],
            "source": seed["source"],
            "shard": int(seed["shard"]),
            "prompt_version": SELF_CHAT_PROMPT_VERSION,
            "model": teacher.model,
            "temperature": teacher.temperature,
            "max_tokens": teacher.max_tokens,
        }
        async with in_flight:
            if stopping:
                return
            try:
                response = await client.chat.completions.create(
                    model=teacher.model,
                    messages=[{"role": "user", "content": self_chat_prompt(seed["seed"])}],
                    temperature=teacher.temperature,
                    max_tokens=teacher.max_tokens,
                )
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                stopping = True
                raise TeacherFatalError(
                    f"the teacher endpoint rejected the API key (HTTP {exc.status_code}); "
                    "check OPENAI_API_KEY"
                ) from None
            except openai.NotFoundError:
                stopping = True
                raise TeacherFatalError(
                    f"the teacher endpoint has no model '{teacher.model}' (HTTP 404); "
                    "check teacher.model in the configuration and OPENAI_BASE_URL"
                ) from None
            except openai.OpenAIError as exc:
                kind = _failure_kind(exc)
                failures[kind] += 1
                row.update(failure_kind=kind, failure_message=str(exc)[:500])
            else:
                choice = response.choices[0] if response.choices else None
                prompt_tokens = response.usage.prompt_tokens if response.usage else 0
                completion_tokens = response.usage.completion_tokens if response.usage else 0
                usage.add(response.model or teacher.model, prompt_tokens, completion_tokens)
                row.update(
                    model=response.model or teacher.model,
                    transcript=choice.message.content if choice else None,
                    finish_reason=choice.finish_reason if choice else None,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens,
                )
        rows.append(row)
        now = time.monotonic()
        if now - last_report >= progress_every_s:
            last_report = now
            log(f"self-chat: {len(rows)}/{len(seeds)} done, {dict(failures) or 'no'} failures")

    tasks = [asyncio.create_task(one(seed)) for seed in seeds.to_dict("records")]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    frame = pa.Table.from_pylist(rows, schema=TRANSCRIPT_SCHEMA).to_pandas()
    frame = frame.sort_values("seed_id", kind="stable").reset_index(drop=True)
    return CollectionResult(frame, usage, failures, time.monotonic() - started)


def collect_transcripts(
    seeds: pd.DataFrame,
    teacher: TeacherConfig,
    api_key: str,
    base_url: str | None = None,
    log: Callable[[str], None] = print,
    progress_every_s: float = 10.0,
) -> CollectionResult:
    """Ask the teacher for one self-chat transcript per seed row.

    ``base_url`` None means the ``openai`` client's own default (``OPENAI_BASE_URL``
    or OpenAI itself).
    """

    async def run() -> CollectionResult:
        async with openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=teacher.timeout_s,
            max_retries=teacher.max_retries,
        ) as client:
            return await _collect(seeds, teacher, client, log, progress_every_s)

    return asyncio.run(run())
