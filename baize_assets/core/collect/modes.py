"""What the collector asks the teacher per row: a self-chat conversation (Baize v1 or v1.5) or one answer.

* **v1** — one call writes the whole transcript, both sides, and the model stops on its own;
* **v1.5** — one call per human turn and one per AI turn, the dialogue so far in each prompt;
* **judge** — the row's text is the whole prompt, and the one answer is the row's text
  (the judge's judgments and the teacher's reference answers, Baize v2); a judgment may
  ask for structured output (a JSON schema, :func:`judge_writer`).

The self-chat modes are guarded against loops (rounds, tokens, repeated turns); every mode
returns the row fields of one row. ``call(messages, stop, valid, response_format)`` is the
collector's request, with its retries, pacing and budget; a valid answer is one
``valid(text)`` accepts. v1 and judge ask once per row (:class:`OneCall`), which is what
the Batch API can send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ..config.pipeline import TeacherConfig
from ..prompts import (
    JUDGE_PROMPT_VERSION,
    RAW_AI,
    RAW_END,
    RAW_HUMAN,
    SELF_CHAT_PROMPT_VERSION,
    SELF_CHAT_TURN_PROMPT_VERSION,
    Turn,
    self_chat_prompt,
    self_chat_turn_prompt,
)
from .client import Answer
from .errors import CONTENT_FILTER, SeedFailure
from .transcript import guard_transcript, has_markers, human_statement, same_text

Call = Callable[..., Awaitable[Answer]]  # (messages, stop, valid, response_format=None) -> Answer


def _self_chat_messages(seed: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": self_chat_prompt(seed)}]


def _v1_fields(answer: Answer, teacher: TeacherConfig) -> dict[str, Any]:
    text, ended_by = guard_transcript(answer.text, teacher.max_rounds)
    if answer.finish_reason == CONTENT_FILTER:
        ended_by = CONTENT_FILTER
    elif ended_by is None:
        ended_by = "max_tokens" if answer.finish_reason == "length" else "teacher_stop"
    return {
        "model": answer.model, "transcript": text, "finish_reason": answer.finish_reason, "ended_by": ended_by,
        "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
        "reasoning_tokens": answer.reasoning_tokens, "api_calls": 1,
    }


@dataclass
class _Spent:
    """What a v1.5 conversation's answered calls used so far."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, answer: Answer) -> Answer:
        self.calls += 1
        self.prompt_tokens += answer.prompt_tokens
        self.completion_tokens += answer.completion_tokens
        self.reasoning_tokens += answer.reasoning_tokens
        return answer


async def v15_conversation(call: Call, seed: str, teacher: TeacherConfig) -> dict[str, Any]:
    spent = _Spent()
    try:
        dialogue, ended_by, finish_reason, model = await _v15_turns(call, seed, teacher, spent)
    except SeedFailure as failure:  # the turns before the failing one were paid for too
        failure.charged(spent.prompt_tokens, spent.completion_tokens, spent.reasoning_tokens)
        raise
    transcript = "\n".join(f"{RAW_HUMAN if t.role == 'human' else RAW_AI} {t.text}" for t in dialogue)
    return {
        "model": model, "transcript": transcript, "finish_reason": finish_reason, "ended_by": ended_by,
        "prompt_tokens": spent.prompt_tokens, "completion_tokens": spent.completion_tokens,
        "reasoning_tokens": spent.reasoning_tokens, "api_calls": spent.calls,
    }


async def _v15_turns(call: Call, seed: str, teacher: TeacherConfig,
                     spent: _Spent) -> tuple[list[Turn], str, str | None, str]:
    """The dialogue, why it ended, the last finish reason and the answering model."""
    dialogue: list[Turn] = []
    ended_by, finish_reason, model = "max_turns", None, teacher.model
    for _ in range(teacher.max_rounds):
        human = spent.add(await call([{"role": "user", "content": self_chat_turn_prompt(seed, dialogue)}], [RAW_AI],
                                     lambda _: True))
        question = human_statement(human.text)
        if human.finish_reason == CONTENT_FILTER:
            return dialogue, CONTENT_FILTER, CONTENT_FILTER, model
        if not question or RAW_END.lower() in question.lower():
            return dialogue, "human_done", finish_reason, model
        if any(t.role == "human" and same_text(t.text) == same_text(question) for t in dialogue):
            return dialogue, "repeated_turn", finish_reason, model
        messages = [{"role": "user" if t.role == "human" else "assistant", "content": t.text} for t in dialogue]
        ai = spent.add(await call(messages + [{"role": "user", "content": question}], None,
                                  lambda text: bool(text.strip())))
        model, finish_reason = ai.model, ai.finish_reason
        if finish_reason == CONTENT_FILTER:  # the row ends here, and the corpus rejects it
            return dialogue, CONTENT_FILTER, finish_reason, model
        if any(t.role == "ai" and same_text(t.text) == same_text(ai.text) for t in dialogue):
            return dialogue, "repeated_turn", finish_reason, model
        dialogue += [Turn("human", question), Turn("ai", ai.text.strip())]
        if spent.completion_tokens >= teacher.max_conversation_tokens:
            return dialogue, "max_tokens", finish_reason, model
    return dialogue, ended_by, finish_reason, model


def _prompt_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def _non_empty(text: str) -> bool:
    return bool(text.strip())


def _answer_fields(answer: Answer, teacher: TeacherConfig) -> dict[str, Any]:
    if answer.finish_reason == CONTENT_FILTER:
        ended_by = CONTENT_FILTER
    else:
        ended_by = "max_tokens" if answer.finish_reason == "length" else "teacher_stop"
    return {
        "model": answer.model, "transcript": answer.text, "finish_reason": answer.finish_reason, "ended_by": ended_by,
        "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
        "reasoning_tokens": answer.reasoning_tokens, "api_calls": 1,
    }


@dataclass(frozen=True)
class OneCall:
    """A row answered by one request: its messages, which answers are valid, and the row fields of an answer;
    the stop sequences it sends, and the request fields of its own (a sampling seed) when it has some.

    The Batch API can only send rows of this shape (one request each, known up front).
    """

    messages: Callable[[str], list[dict[str, str]]]
    valid: Callable[[str], bool]
    fields: Callable[[Answer, TeacherConfig], dict[str, Any]]
    stop: tuple[str, ...] = ()
    request_fields: Callable[[str], dict[str, Any]] | None = None

    def row_fields(self, text: str) -> dict[str, Any] | None:
        return self.request_fields(text) if self.request_fields is not None else None


@dataclass(frozen=True)
class Writer:
    """How the collector turns a row's text into an answer; ``mode``, ``prompt_version`` and the
    response format key its cache.

    ``one_call`` is set for writers that ask once per row (v1, judge); ``turns`` for v1.5.
    ``response_format`` is the structured output a one-call writer asks for, if any.
    """

    mode: str
    prompt_version: str
    progress: str  # how the collector's progress lines count the rows: a format of done and total
    one_call: OneCall | None = None
    turns: Callable[[Call, str, TeacherConfig], Awaitable[dict[str, Any]]] | None = None
    response_format: dict[str, Any] | None = None

    def first_messages(self, text: str) -> list[dict[str, str]]:
        """The messages of a row's first request (a v1.5 conversation's opening human turn)."""
        if self.one_call is None:
            return [{"role": "user", "content": self_chat_turn_prompt(text, [])}]
        return self.one_call.messages(text)

    async def write(self, call: Call, text: str, teacher: TeacherConfig) -> dict[str, Any]:
        if self.one_call is None:
            return await self.turns(call, text, teacher)
        one_call = self.one_call
        answer = await call(one_call.messages(text), list(one_call.stop) or None, one_call.valid, self.response_format,
                            one_call.row_fields(text))
        return one_call.fields(answer, teacher)


_SELF_CHAT_PROGRESS = "self-chat: {done}/{total} conversations"
V1_WRITER = Writer("v1", SELF_CHAT_PROMPT_VERSION, _SELF_CHAT_PROGRESS,
                   one_call=OneCall(_self_chat_messages, has_markers, _v1_fields))
V15_WRITER = Writer("v1.5", SELF_CHAT_TURN_PROMPT_VERSION, _SELF_CHAT_PROGRESS, turns=v15_conversation)
_PROMPT_ANSWER = OneCall(_prompt_messages, _non_empty, _answer_fields)
# The teacher's own answers to the judge's questions: the question is the whole prompt.
REFERENCE_WRITER = Writer("judge", JUDGE_PROMPT_VERSION, "teacher: {done}/{total} answers", one_call=_PROMPT_ANSWER)


def judge_writer(response_format: dict[str, Any], structured: bool = True) -> Writer:
    """Judgments: the judge prompt is the whole message; with ``structured`` (``judge.structured_output``)
    ``response_format`` asks for structured output, else the judgment is read from text."""
    return Writer("judge", JUDGE_PROMPT_VERSION, "judge: {done}/{total} judgments", one_call=_PROMPT_ANSWER,
                  response_format=response_format if structured else None)


def self_chat_writer(teacher: TeacherConfig) -> Writer:
    return V1_WRITER if teacher.mode == "v1" else V15_WRITER
