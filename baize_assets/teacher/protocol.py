"""The OpenAI wire format of the simulated teacher: error bodies, request validation, model objects."""

from __future__ import annotations

import json
from typing import Any, Sequence

DEFAULT_MODEL = "baize-simulated-teacher"
OWNER = "baize-simulation"

# A fixed creation time keeps the model objects identical across runs.
_MODEL_CREATED = 1767225600  # 2026-01-01T00:00:00Z
# Advertised in the x-ratelimit-* headers when no request limit is enforced (the default).
RATE_LIMIT_REQUESTS = 10_000
RATE_LIMIT_TOKENS = 2_000_000
# Hidden reasoning tokens a reasoning model spends per answer, by reasoning_effort (medium when unset).
REASONING_TOKENS = {"none": 0, "minimal": 16, "low": 64, "medium": 192, "high": 512, "xhigh": 1024}


class ApiError(Exception):
    """A request the server answers with an OpenAI-shaped error body."""

    def __init__(self, status: int, message: str, type_: str, code: str | None, param: str | None = None,
                 outcome: str = "invalid_request", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.outcome = outcome
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", None, param)


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error", "model_not_found", "model", outcome="not_found")


def json_object_body(raw_body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object, or the 400 OpenAI answers when it is not."""
    try:
        body = json.loads(raw_body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict):
        raise bad_request("We could not parse the JSON body of your request. The body must be a JSON object.")
    return body


def model_and_messages(body: dict[str, Any], models: Sequence[str]) -> tuple[str, list[dict[str, Any]]]:
    """The ``model`` (one of ``models``) and ``messages`` of a chat request, checked as OpenAI checks them."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise bad_request("'messages' must be a non-empty array of message objects", "messages")
    if model not in models:
        raise model_not_found(model)
    return model, messages


def _unsupported(param: str) -> ApiError:
    return ApiError(400, f"Unsupported parameter: '{param}' is not supported with this model.",
                    "invalid_request_error", "unsupported_parameter", param)


def check_reasoning_fields(body: dict[str, Any], reasoning: bool) -> None:
    """OpenAI's rules for the fields of a reasoning model's request (and for reasoning_effort elsewhere),
    refused with OpenAI's exact 400 bodies."""
    if not reasoning:
        if body.get("reasoning_effort") is not None:
            raise _unsupported("reasoning_effort")
        return
    if body.get("max_tokens") is not None:
        raise ApiError(400, "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                            "'max_completion_tokens' instead.", "invalid_request_error", "unsupported_parameter",
                       "max_tokens")
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        raise ApiError(400, f"Unsupported value: 'temperature' does not support {json.dumps(temperature)} with this "
                            "model. Only the default (1) value is supported.", "invalid_request_error",
                       "unsupported_value", "temperature")
    for param in ("top_p", "stop"):
        if body.get(param) is not None and body.get(param) != 1:
            raise _unsupported(param)
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_TOKENS:
        raise ApiError(400, f"Invalid value: '{effort}'. Supported values are: "
                            f"{', '.join(repr(e) for e in REASONING_TOKENS)}.", "invalid_request_error",
                       "invalid_value", "reasoning_effort")


# How a server takes ``response_format: json_schema``: follows it, refuses it as OpenAI does for a model without
# structured output (400), or refuses it as llama-cpp-python's server does (its body validation, answered 500).
STRUCTURED_OUTPUT = ("json_schema", "refused", "refused_as_500")


def check_response_format(body: dict[str, Any], structured_output: str) -> dict[str, Any] | None:
    """The JSON schema a request asks its answer to follow, or None; refused as ``structured_output`` says."""
    response_format = body.get("response_format")
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if structured_output == "refused_as_500":
        raise ApiError(500, "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
                            f"'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': '{kind}'}}",
                       "internal_server_error", None, outcome="server_error")
    if kind != "json_schema" or structured_output != "json_schema":
        raise ApiError(400, f"Invalid parameter: 'response_format' of type '{kind}' is not supported with this "
                            "model.", "invalid_request_error", None, "response_format")
    schema = response_format.get("json_schema")
    if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
        raise bad_request("Missing required parameter: 'response_format.json_schema.name'.",
                          "response_format.json_schema.name")
    return schema


def parse_chat_request(body: dict[str, Any], models: Sequence[str], reasoning_models: Sequence[str] = (),
                       structured_output: str = "json_schema") -> dict[str, Any]:
    """Validate a chat completion request; returns the normalised fields or raises ApiError."""
    model, messages = model_and_messages(body, models)
    reasoning = model in reasoning_models
    check_reasoning_fields(body, reasoning)
    json_schema = check_response_format(body, structured_output)

    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request("The simulated teacher only supports n=1.", "n")

    temperature = body.get("temperature")
    if temperature is None:
        temperature = 1.0
    elif isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise bad_request(f"Invalid 'temperature': {temperature!r}; expected a number from 0 to 2.", "temperature")

    limit_param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(limit_param)
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise bad_request(f"Invalid '{limit_param}': expected an integer of at least 1.", limit_param)

    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)):
        raise bad_request("'stop' must be a string or an array of at most 4 strings.", "stop")

    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise bad_request("'stream_options' must be an object.", "stream_options")
    return {
        "model": model,
        "messages": messages,
        "temperature": float(temperature),
        "max_tokens": max_tokens,
        "stop": stop,
        "stream": bool(body.get("stream")),
        "include_usage": bool(stream_options.get("include_usage")),
        "reasoning_tokens": REASONING_TOKENS[body.get("reasoning_effort") or "medium"] if reasoning else None,
        "json_schema": json_schema["name"] if json_schema else None,
    }


def model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": OWNER}
