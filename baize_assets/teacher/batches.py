"""The simulated teacher's Batch API: ``/v1/files`` and ``/v1/batches`` in OpenAI's wire format.

A batch's input file holds one chat completion request a line (``custom_id``,
``method``, ``url``, ``body``). A background thread works through its lines over
``completion_delay_s`` and writes the output file (``{"id", "custom_id", "response":
{"status_code", "request_id", "body"}, "error": null}``) and the error file (failed
lines, with ``error: {"code", "message"}``), as OpenAI does. Each line's completion is
made by the same function as a ``POST /v1/chat/completions`` answer.

Limits, as OpenAI answers them (:class:`BatchLimits`): a batch over the requests or bytes
one input file may hold, or one that would take its model's enqueued prompt tokens (those
of the batches not yet finished) over the limit, is created and then ``failed`` in
validation, with the reason in ``errors.data`` (codes ``too_many_tasks``,
``file_too_large`` and ``token_limit_exceeded``; the messages follow OpenAI's). The
enqueued tokens are the prompt tokens the chat endpoint would count for the lines.

Faults, for exercising a collector: ``failure_rate`` of the lines fail (reproducibly
from the line's custom_id and the batch's number); the first ``expire_batches`` batches
expire with half of their lines done (the rest in the error file as ``batch_expired``);
the output of the first batch repeats ``duplicate_ids`` lines, adds ``unknown_ids`` lines
no request asked for, and leaves out ``missing_ids`` lines altogether.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .protocol import ApiError, bad_request, json_object_body, parse_chat_request
from .text import prompt_tokens_of, stable_rng

if TYPE_CHECKING:
    from .server import SimulatedTeacher

CHAT_ENDPOINT = "/v1/chat/completions"
_TERMINAL = {"completed", "failed", "expired", "cancelled"}
_WINDOW_S = 24 * 3600


@dataclass(frozen=True)
class BatchLimits:
    """What one batch may hold, and the prompt tokens one model may have enqueued (None: no limit).

    The defaults are OpenAI's per-batch limits; its enqueued-token limit depends on the
    organization's tier and the model, so none is set unless asked for.
    """

    max_requests: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024
    enqueued_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_requests", "max_file_bytes", "enqueued_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"batch limit {name} must be at least 1, got {value}")

    def file_errors(self, lines: list[dict[str, Any]], size: int, model: str) -> list[dict[str, Any]]:
        """The validation errors of an input file over the per-batch limits."""
        errors = []
        if len(lines) > self.max_requests:
            errors.append(_batch_error("too_many_tasks", f"The batch input file contains {len(lines):,} requests, "
                                       f"more than the {self.max_requests:,} maximum. Please try again with a "
                                       "smaller batch."))
        if size > self.max_file_bytes:
            errors.append(_batch_error("file_too_large", f"The batch input file is larger than the "
                                       f"{self.max_file_bytes} maximum for the {model} model. Please try again "
                                       "with a smaller batch."))
        return errors


OPENAI_BATCH_LIMITS = BatchLimits()


def _batch_error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": None}


def prompt_tokens(line: dict[str, Any]) -> int:
    """The prompt tokens of a request line, as the chat endpoint counts them."""
    messages = line["body"].get("messages")
    return prompt_tokens_of(messages) if isinstance(messages, list) else 0


def _not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, f"No such {kind}: '{object_id}'", "invalid_request_error", None, outcome="not_found")


def _multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a ``multipart/form-data`` body: name -> (filename, bytes)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not message.is_multipart():
        raise bad_request("Expected a multipart/form-data body with 'file' and 'purpose'.")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


class BatchService:
    """Files and batches of one simulated teacher, in memory."""

    def __init__(self, teacher: SimulatedTeacher, complete: Callable[[dict[str, Any]], dict[str, Any]], *,
                 completion_delay_s: float = 0.5, failure_rate: float = 0.0, expire_batches: int = 0,
                 duplicate_ids: int = 0, unknown_ids: int = 0, missing_ids: int = 0,
                 limits: BatchLimits = OPENAI_BATCH_LIMITS) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"batch_failure_rate must be between 0 and 1, got {failure_rate}")
        self.teacher = teacher
        self.complete = complete
        self.completion_delay_s = completion_delay_s
        self.failure_rate = failure_rate
        self.expire_batches = expire_batches
        self.duplicate_ids, self.unknown_ids, self.missing_ids = duplicate_ids, unknown_ids, missing_ids
        self.limits = limits
        self._enqueued: dict[str, tuple[str, int]] = {}  # unfinished batch -> (model, prompt tokens)
        self.failed_by_code: Counter = Counter()  # batches failed in validation, by their first error's code
        self._lock = threading.Lock()
        self._files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self._cancel_requested: set[str] = set()
        self.batches_created = 0
        self.lines_completed = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"batches_created": self.batches_created, "batch_lines_completed": self.lines_completed,
                    "batches_failed_by_code": dict(self.failed_by_code)}

    def enqueued_tokens(self, model: str) -> int:
        """Prompt tokens of ``model`` in batches not yet finished."""
        with self._lock:
            return sum(tokens for owner, tokens in self._enqueued.values() if owner == model)

    # -- routing

    def route(self, method: str, path: str, body: bytes, content_type: str) -> dict[str, Any] | bytes:
        """The answer to a files or batches request: a JSON object, or a file's bytes."""
        parts = path.strip("/").split("/")[1:]  # without the leading "v1"
        if method == "POST" and parts == ["files"]:
            return self._upload(body, content_type)
        if method == "GET" and len(parts) == 2 and parts[0] == "files":
            return self._file(parts[1])[0]
        if method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
            return self._file(parts[1])[1]
        if method == "POST" and parts == ["batches"]:
            return self._create(body)
        if method == "GET" and len(parts) == 2 and parts[0] == "batches":
            return self._batch(parts[1])
        if method == "POST" and len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
            return self._cancel(parts[1])
        raise ApiError(404, f"Invalid URL ({method} {path})", "invalid_request_error", None, outcome="not_found")

    # -- files

    def _store_file(self, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
        file = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(data),
                "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed",
                "expires_at": None, "status_details": None}
        with self._lock:
            self._files[file["id"]] = (file, data)
        return file

    def _upload(self, body: bytes, content_type: str) -> dict[str, Any]:
        fields = _multipart(body, content_type)
        if "file" not in fields or "purpose" not in fields:
            raise bad_request("Both 'file' and 'purpose' are required.")
        purpose = fields["purpose"][1].decode("utf-8", "replace")
        if purpose not in ("batch", "fine-tune", "assistants", "user_data", "evals", "vision"):
            raise bad_request(f"Invalid purpose '{purpose}'.", "purpose")
        filename, data = fields["file"]
        return self._store_file(filename or "upload", purpose, data)

    def _file(self, file_id: str) -> tuple[dict[str, Any], bytes]:
        with self._lock:
            if file_id not in self._files:
                raise _not_found("file", file_id)
            return self._files[file_id]

    # -- batches

    def _create(self, raw_body: bytes) -> dict[str, Any]:
        body = json_object_body(raw_body)
        if body.get("endpoint") != CHAT_ENDPOINT:
            raise bad_request(f"The simulated teacher batches only {CHAT_ENDPOINT}.", "endpoint")
        if body.get("completion_window") != "24h":
            raise bad_request("completion_window must be '24h'.", "completion_window")
        file, data = self._file(str(body.get("input_file_id")))
        if file["purpose"] != "batch":
            raise bad_request("The input file must have purpose 'batch'.", "input_file_id")
        lines, errors = self._parse_input(data)
        model = str(lines[0]["body"].get("model")) if lines else None
        errors = errors or self.limits.file_errors(lines, len(data), model)
        batch_id, tokens, now = f"batch_{uuid.uuid4().hex[:24]}", sum(map(prompt_tokens, lines)), int(time.time())
        with self._lock:
            self.batches_created += 1
            number = self.batches_created
            errors = errors or self._enqueue(batch_id, model, tokens)
            if errors:
                self.failed_by_code[errors[0]["code"]] += 1
        batch = {
            "id": batch_id, "object": "batch", "endpoint": CHAT_ENDPOINT, "model": model,
            "errors": {"object": "list", "data": errors} if errors else None, "input_file_id": file["id"],
            "completion_window": "24h", "status": "failed" if errors else "validating", "output_file_id": None,
            "error_file_id": None, "created_at": now, "in_progress_at": None, "expires_at": now + _WINDOW_S,
            "finalizing_at": None, "completed_at": None, "failed_at": now if errors else None, "expired_at": None,
            "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0 if errors else len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"), "usage": None,
        }
        with self._lock:
            self._batches[batch["id"]] = batch
        if not errors:
            threading.Thread(target=self._process, args=(batch["id"], lines, number), daemon=True,
                             name=f"batch-{number}").start()
        return dict(batch)

    def _enqueue(self, batch_id: str, model: str, tokens: int) -> list[dict[str, Any]]:
        """Hold the batch's prompt tokens against its model's limit (the lock held); the error if over it."""
        limit = self.limits.enqueued_tokens
        held = sum(count for owner, count in self._enqueued.values() if owner == model)
        if limit is not None and held + tokens > limit:
            return [_batch_error("token_limit_exceeded", f"Enqueued token limit reached for {model} in organization "
                                 f"org-simulated. Limit: {limit:,} enqueued tokens. Please try again once some "
                                 "in_progress batches have been completed.")]
        self._enqueued[batch_id] = (model, tokens)
        return []

    def _parse_input(self, data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The input file's requests, or the errors that fail the batch (as OpenAI's validation does)."""
        lines, errors, seen = [], [], set()
        for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                line = None
            if not isinstance(line, dict) or not isinstance(line.get("body"), dict):
                errors.append({"code": "invalid_json_line", "message": "This line is not a request object.",
                               "param": None, "line": number})
            elif not isinstance(line.get("custom_id"), str) or line["custom_id"] in seen:
                errors.append({"code": "duplicate_custom_id", "message": "custom_id must be unique and a string.",
                               "param": "custom_id", "line": number})
            elif line.get("method") != "POST" or line.get("url") != CHAT_ENDPOINT:
                errors.append({"code": "invalid_url", "message": f"Each line must POST to {CHAT_ENDPOINT}.",
                               "param": "url", "line": number})
            else:
                seen.add(line["custom_id"])
                lines.append(line)
        if not lines and not errors:
            errors.append({"code": "empty_file", "message": "The input file has no requests.", "param": None,
                           "line": None})
        return lines, errors

    def _update(self, batch_id: str, **fields: Any) -> None:
        with self._lock:
            self._batches[batch_id].update(fields)

    def _answer(self, line: dict[str, Any], number: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """One line's ``(response, error)``."""
        request_id = f"req_{uuid.uuid4().hex}"
        if self.failure_rate and stable_rng("batch-line", number, line["custom_id"]).random() < self.failure_rate:
            return None, {"code": "server_error", "message": "The server had an error processing this request "
                                                             "(simulated)."}
        try:
            request = parse_chat_request(line["body"], self.teacher.models, self.teacher.reasoning_models,
                                         self.teacher.structured_output)
        except ApiError as error:
            return {"status_code": error.status, "request_id": request_id, "body": error.body}, None
        return {"status_code": 200, "request_id": request_id, "body": self.complete(request)}, None

    def _process(self, batch_id: str, lines: list[dict[str, Any]], number: int) -> None:
        teacher = self.teacher
        self._update(batch_id, status="in_progress", in_progress_at=int(time.time()))
        expires = number <= self.expire_batches
        stop_after = len(lines) // 2 if expires else len(lines)
        output, errors, completed, failed = [], [], 0, 0
        for index, line in enumerate(lines):
            teacher.sleep(self.completion_delay_s / len(lines))
            if teacher.stopping or batch_id in self._cancel_requested or index >= stop_after:
                break
            response, error = self._answer(line, number)
            record = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"],
                      "response": response, "error": error}
            good = response is not None and response["status_code"] == 200
            (output if good else errors).append(record)
            completed, failed = completed + good, failed + (not good)
            self._update(batch_id, request_counts={"total": len(lines), "completed": completed, "failed": failed})
        with self._lock:
            self.lines_completed += completed
        done = {record["custom_id"] for record in output + errors}
        now = int(time.time())
        if batch_id in self._cancel_requested:
            final = {"status": "cancelled", "cancelled_at": now}
        elif expires:
            errors += [{"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"], "response": None,
                        "error": {"code": "batch_expired",
                                  "message": "This request could not be executed before the completion window "
                                             "expired."}}
                       for line in lines if line["custom_id"] not in done]
            final = {"status": "expired", "expired_at": now}
        else:
            final = {"status": "completed", "completed_at": now}
        if number == 1:
            output = self._with_id_faults(output)
        self._update(batch_id, status="finalizing", finalizing_at=now)
        files = {}
        for name, records in (("output_file_id", output), ("error_file_id", errors)):
            if records:
                data = "".join(json.dumps(record) + "\n" for record in records).encode()
                files[name] = self._store_file(f"{batch_id}_{name.split('_')[0]}.jsonl", "batch_output", data)["id"]
        with self._lock:
            self._enqueued.pop(batch_id, None)
        self._update(batch_id, **files, **final)

    def _with_id_faults(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The first batch's output with lines repeated, made up or left out, as configured."""
        kept = output[self.missing_ids:]
        repeated = [dict(record) for record in kept[: self.duplicate_ids]]
        template = output[0] if output else None
        unknown = [{**template, "id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": f"unknown-{n}"}
                   for n in range(self.unknown_ids)] if template else []
        return kept + repeated + unknown

    def _batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            if batch_id not in self._batches:
                raise _not_found("batch", batch_id)
            return json.loads(json.dumps(self._batches[batch_id]))

    def _cancel(self, batch_id: str) -> dict[str, Any]:
        batch = self._batch(batch_id)
        if batch["status"] in _TERMINAL:
            raise ApiError(409, f"Cannot cancel a batch with status '{batch['status']}'.", "invalid_request_error",
                           None, outcome="conflict")
        self._cancel_requested.add(batch_id)
        self._update(batch_id, status="cancelling", cancelling_at=int(time.time()))
        return self._batch(batch_id)
