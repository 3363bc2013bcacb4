"""A finished batch's output lines, mapped back to their requests and read like chat answers,
and the reason a batch gives for the requests it has no line for.

Every line is matched to its request by ``custom_id``; missing, duplicated and unknown
``custom_id`` lines and unparsable lines are counted, never turned into rows. A line's
body is classified by the same checks as a chat answer (:mod:`.client`): what is worth
asking again raises :class:`RetryableError`, what is not :class:`TerminalError`.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable

from ..config.teacher import BatchConfig
from .client import Completion, TeacherClient
from .errors import BAD_REQUEST, CONTEXT_LENGTH, SERVER_ERROR, RetryableError, TeacherFatalError, TerminalError

LINE_PROBLEMS = ("missing_custom_ids", "duplicated_custom_ids", "unknown_custom_ids", "unparsable_lines")
# A batch failed for the model's enqueued tokens: its seeds go into a later batch, after a wait.
TOKEN_LIMIT_EXCEEDED = "token_limit_exceeded"
TOKEN_LIMIT_FAILURE = f"batch_{TOKEN_LIMIT_EXCEEDED}"
# A batch failed for a per-batch limit that the configuration sets above the provider's: the setting to lower.
LIMIT_SETTINGS = {"too_many_tasks": "max_requests_per_batch", "file_too_large": "max_bytes_per_batch"}


def first_lines(texts: list[str], pending: set[str], submitted: set[str], problems: Counter) -> dict[str, dict]:
    """The first line of each ``pending`` custom_id among ``texts``, in their order; ``problems`` counts the rest."""
    lines: dict[str, dict] = {}
    for text in texts:
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            problems["unparsable_lines"] += text.strip() != ""
            continue
        key = line.get("custom_id")
        if not isinstance(key, str) or key not in submitted:
            problems["unknown_custom_ids"] += 1
        elif key in lines:
            problems["duplicated_custom_ids"] += 1  # the first line of a custom_id counts
        elif key in pending:
            lines[key] = line
    return lines


def line_completion(line: dict[str, Any], checker: TeacherClient) -> Completion:
    """The completion a line holds, or the error it amounts to."""
    response, error = line.get("response"), line.get("error")
    if isinstance(error, dict) or not isinstance(response, dict):
        code = str(error.get("code") or "error") if isinstance(error, dict) else "error"
        message = error.get("message") if isinstance(error, dict) else "the line has no response"
        kind = SERVER_ERROR if code in ("server_error", "error") else code if code.startswith("batch_") \
            else f"batch_{code}"
        raise RetryableError(kind[:64], checker.redact(f"the batch line failed ({code}): {message}"))
    status, body = response.get("status_code"), response.get("body")
    if status != 200:
        _refused(status, body, checker)
    return checker.completion(body, {})


def _refused(status: Any, body: Any, checker: TeacherClient) -> None:
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = checker.redact(f"HTTP {status}: {error.get('message') if isinstance(error, dict) else body}")
    if status == 400:
        raise TerminalError(CONTEXT_LENGTH if "length" in str(code or "") else BAD_REQUEST, message)
    if isinstance(status, int) and (status >= 500 or status in (408, 409, 429)):
        raise RetryableError(SERVER_ERROR if status >= 500 else f"http_{status}", message)
    raise TerminalError(f"http_{status}"[:64], message)


def unfinished_reason(batch: Any, limits: BatchConfig, tokens_setting: str,
                      redact: Callable[[str], str]) -> tuple[str, str]:
    """The failure kind and message of the requests a finished batch has no line for.

    A batch failed for a per-batch limit set above the provider's raises
    :class:`TeacherFatalError` naming the setting: every batch cut the same way would fail too.
    """
    if batch.status == "completed":
        return "missing_custom_id", f"batch {batch.id} (completed) returned no line for this seed"
    errors = list(batch.errors.data or []) if batch.errors is not None else []
    codes = {error.code for error in errors}
    said = redact("; ".join(f"{error.code}: {error.message}" for error in errors))
    for code, setting in LIMIT_SETTINGS.items():
        if code in codes:
            raise TeacherFatalError(f"the teacher failed batch {batch.id} ({said}); lower teacher.batch.{setting} "
                                    f"(now {getattr(limits, setting):,}) to the provider's limit")
    if TOKEN_LIMIT_EXCEEDED in codes:
        return TOKEN_LIMIT_FAILURE, (
            f"batch {batch.id} failed ({said}): batches of this model outside this step hold the queue, or "
            f"{tokens_setting} is above the organization's limit")
    detail = f": {said}" if said else ""
    return f"batch_{batch.status}", f"batch {batch.id} ({batch.status}{detail}) returned no line for this seed"
