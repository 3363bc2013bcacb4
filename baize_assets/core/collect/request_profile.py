"""Provider parameter rules: which fields a request carries for a model, and adapting when an endpoint refuses one.

OpenAI's reasoning models (the gpt-5, o1, o3 and o4 families) refuse ``max_tokens``
(they take ``max_completion_tokens``, which also bounds their hidden reasoning), any
``temperature`` or ``top_p`` but the default, and ``stop``: those models start from a
profile that sends none of them. Any other model starts with the classic fields. When an
endpoint answers 400 naming one field it does not take (``unsupported_parameter``,
``unsupported_value``, "Unrecognized request argument"), the run adapts once: a token
limit is renamed to the other name, any other field is dropped, and a dropped ``stop``
is applied on the client side by cutting the answer at the first stop sequence. The
change is recorded in the shared limit store under the run's ledger (:mod:`.shared_limits`),
so every process of the run sends the adapted request from then on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config.pipeline import TeacherConfig

TOKEN_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")
RENAME, DROP = "rename", "drop"
# What no adaptation may drop: without them there is no request.
REQUIRED_FIELDS = frozenset({"model", "messages"})
_REASONING_FAMILY = re.compile(r"(?:^|/)(?:o1|o3|o4|gpt-5)(?:$|[-.:_])", re.IGNORECASE)
# The fields these models refuse unless they hold the default (temperature 1, top_p 1, no stop).
_REASONING_REFUSED = frozenset({"temperature", "top_p", "stop"})
_QUOTED_FIELD = re.compile(r"'([A-Za-z_][A-Za-z0-9_.]*)'")
_UNRECOGNIZED = re.compile(r"unrecognized request arguments? supplied:\s*([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
_REFUSAL_WORDS = re.compile(r"not supported|unsupported|unrecognized|not allowed|not permitted|validation error",
                            re.IGNORECASE)
# A web framework's validation error of the request body (FastAPI, pydantic): "'loc': ('body', 'response_format', ...)".
_VALIDATION_LOCATION = re.compile(r"""\(\s*['"]body['"]\s*,\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")
ADAPTABLE_CODES = frozenset({"unsupported_parameter", "unsupported_value"})


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` is of an OpenAI reasoning family (``gpt-5-mini``, ``o4-mini``, ``openai/o3`` ...)."""
    return bool(_REASONING_FAMILY.search(model))


@dataclass(frozen=True)
class RequestProfile:
    """How a run's requests to one model are shaped: the token limit's name and the fields left out."""

    token_limit: str = "max_tokens"
    dropped: frozenset[str] = field(default_factory=frozenset)

    @property
    def stops_on_client(self) -> bool:
        return "stop" in self.dropped

    def sends(self, name: str) -> bool:
        """Whether requests under this profile carry field ``name`` (when the row or settings have it)."""
        if name in TOKEN_LIMIT_FIELDS:
            return name == self.token_limit
        return name not in self.dropped

    def adapted(self, adaptations: Mapping[str, str]) -> "RequestProfile":
        """This profile with ``adaptations`` (field -> ``rename`` or ``drop``) applied."""
        token_limit, dropped = self.token_limit, set(self.dropped)
        for name, action in adaptations.items():
            if action == RENAME and name == token_limit:
                token_limit = _other_token_limit(name)
            elif action == DROP:
                dropped.add(name)
        return RequestProfile(token_limit, frozenset(dropped))


def _other_token_limit(name: str) -> str:
    return TOKEN_LIMIT_FIELDS[1 - TOKEN_LIMIT_FIELDS.index(name)]


def starting_profile(model: str) -> RequestProfile:
    """The profile a run starts from: the reasoning families' rules, else the classic fields."""
    if is_reasoning_model(model):
        return RequestProfile("max_completion_tokens", _REASONING_REFUSED)
    return RequestProfile()


def request_fields(teacher: TeacherConfig, profile: RequestProfile, messages: list[dict[str, str]],
                   stop: list[str] | None, response_format: dict[str, Any] | None = None,
                   row_fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every field of one chat completion request body: ``teacher.extra_body`` and the row's own (a seed)."""
    fields: dict[str, Any] = {"model": teacher.model, "messages": messages, profile.token_limit: teacher.max_tokens}
    optional = {"temperature": teacher.temperature, "top_p": teacher.top_p, "stop": stop or None,
                "reasoning_effort": teacher.reasoning_effort, "response_format": response_format,
                **teacher.extra_body, **(row_fields or {})}
    fields.update((name, value) for name, value in optional.items()
                  if value is not None and name not in profile.dropped)
    return fields


def rejected_field(code: str | None, param: str | None, message: str, sent: Mapping[str, Any]) -> str | None:
    """The field of ``sent`` an error refuses, when it is about one field the run can adapt to; else None.

    A 400 names it in ``param`` or its message; a server whose framework validates the body
    (llama-cpp-python answers 500, others 422) names it in the error's location.
    """
    found = (_UNRECOGNIZED.findall(message) or _VALIDATION_LOCATION.findall(message)
             or _QUOTED_FIELD.findall(message))
    named = param or next(iter(found), None)
    if named is None or named in REQUIRED_FIELDS or named not in sent:
        return None
    if code in ADAPTABLE_CODES or _REFUSAL_WORDS.search(message):
        return named
    return None


def adaptation(name: str, profile: RequestProfile, adapted: Mapping[str, str]) -> str | None:
    """What to do about refused field ``name``, ``adapted`` being the run's adaptations so far: rename the token
    limit (once: an endpoint that refuses both names takes neither), drop anything else (once); None: nothing helps."""
    if name in adapted:
        return None
    if name in TOKEN_LIMIT_FIELDS:
        renamed = any(adapted.get(field) == RENAME for field in TOKEN_LIMIT_FIELDS)
        return RENAME if name == profile.token_limit and not renamed else None
    return DROP


def describe(name: str, action: str, profile: RequestProfile) -> str:
    """The warning's account of one adaptation, ``profile`` being the one before it."""
    if action == RENAME:
        return f"sends the completion limit as '{_other_token_limit(profile.token_limit)}' instead of '{name}'"
    if name == "stop":
        return "sends no 'stop' and cuts each answer at the first stop sequence itself"
    return f"sends no '{name}'"


def unsent_settings(teacher: TeacherConfig, profile: RequestProfile, section: str) -> list[str]:
    """Settings the profile leaves out although they differ from the model's default: one line each."""
    defaults = {"temperature": 1.0, "top_p": 1.0}
    return [f"{section}.{name} is {getattr(teacher, name)!r}, but '{teacher.model}' takes only its default "
            f"({default:g}): the requests are sent without it"
            for name, default in defaults.items()
            if name in profile.dropped and getattr(teacher, name) not in (None, default)]


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """``text`` up to its first stop sequence, as an endpoint that took ``stop`` would have ended it; and
    whether it was cut."""
    cuts = [text.find(s) for s in stop or () if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)
