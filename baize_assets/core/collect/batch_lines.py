"""A finished batch's output lines, mapped back to their requests and read like chat answers.

Every line is matched to its request by ``custom_id``; missing, duplicated and unknown
``custom_id`` lines and unparsable lines are counted, never turned into rows. A line's
body is classified by the same checks as a chat answer (:mod:`.client`): what is worth
asking again raises :class:`RetryableError`, what is not :class:`TerminalError`.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from .client import Completion, TeacherClient
from .errors import BAD_REQUEST, CONTEXT_LENGTH, SERVER_ERROR, RetryableError, TerminalError

LINE_PROBLEMS = ("missing_custom_ids", "duplicated_custom_ids", "unknown_custom_ids", "unparsable_lines")


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
