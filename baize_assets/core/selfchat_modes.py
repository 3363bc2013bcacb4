"""What the collector asks the teacher per row: a self-chat conversation (Baize v1 or v1.5) or one answer.

* **v1** — one call writes the whole transcript, both sides, and the model stops on its own;
* **v1.5** — one call per human turn and one per AI turn, the dialogue so far in each prompt;
* **judge** — the row's text is the whole prompt, and the one answer is the row's text
  (the teacher's judgments of sampled answers, Baize v2).

Both are guarded against loops (rounds, tokens, repeated turns) and return the row fields
of one conversation. ``call(messages, stop, valid)`` is the collector's request, with its
retries, pacing and budget; a valid answer is one ``valid(text)`` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from .config import TeacherConfig
from .prompts import (
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
from .teacher_client import CONTENT_FILTER, Answer
from .transcript_format import guard_transcript, has_markers, human_statement, same_text

Call = Callable[[list[dict[str, str]], list[str] | None, Callable[[str], bool]], Awaitable[Answer]]


async def v1_conversation(call: Call, seed: str, teacher: TeacherConfig) -> dict[str, Any]:
    answer = await call([{"role": "user", "content": self_chat_prompt(seed)}], None, has_markers)
    text, ended_by = guard_transcript(answer.text, teacher.max_rounds)
    if answer.finish_reason == CONTENT_FILTER:
        ended_by = CONTENT_FILTER
    elif ended_by is None:
        ended_by = "max_tokens" if answer.finish_reason == "length" else "teacher_stop"
    return {
        "model": answer.model, "transcript": text, "finish_reason": answer.finish_reason, "ended_by": ended_by,
        "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens, "api_calls": 1,
    }


async def v15_conversation(call: Call, seed: str, teacher: TeacherConfig) -> dict[str, Any]:
    dialogue: list[Turn] = []
    calls = prompt_tokens = completion_tokens = 0
    ended_by, finish_reason, model = "max_turns", None, teacher.model
    for _ in range(teacher.max_rounds):
        human = await call([{"role": "user", "content": self_chat_turn_prompt(seed, dialogue)}], [RAW_AI],
                           lambda _: True)
        question = human_statement(human.text)
        calls, prompt_tokens, completion_tokens = (calls + 1, prompt_tokens + human.prompt_tokens,
                                                   completion_tokens + human.completion_tokens)
        if human.finish_reason == CONTENT_FILTER:
            ended_by, finish_reason = CONTENT_FILTER, CONTENT_FILTER
            break
        if not question or RAW_END.lower() in question.lower():
            ended_by = "human_done"
            break
        if any(t.role == "human" and same_text(t.text) == same_text(question) for t in dialogue):
            ended_by = "repeated_turn"
            break
        messages = [{"role": "user" if t.role == "human" else "assistant", "content": t.text} for t in dialogue]
        ai = await call(messages + [{"role": "user", "content": question}], None, lambda text: bool(text.strip()))
        calls, prompt_tokens, completion_tokens = (calls + 1, prompt_tokens + ai.prompt_tokens,
                                                   completion_tokens + ai.completion_tokens)
        model, finish_reason = ai.model, ai.finish_reason
        if finish_reason == CONTENT_FILTER:  # the row ends here, and the corpus rejects it
            ended_by = CONTENT_FILTER
            break
        if any(t.role == "ai" and same_text(t.text) == same_text(ai.text) for t in dialogue):
            ended_by = "repeated_turn"
            break
        dialogue += [Turn("human", question), Turn("ai", ai.text.strip())]
        if completion_tokens >= teacher.max_conversation_tokens:
            ended_by = "max_tokens"
            break
    transcript = "\n".join(f"{RAW_HUMAN if t.role == 'human' else RAW_AI} {t.text}" for t in dialogue)
    return {
        "model": model, "transcript": transcript, "finish_reason": finish_reason, "ended_by": ended_by,
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "api_calls": calls,
    }


async def single_answer(call: Call, prompt: str, teacher: TeacherConfig) -> dict[str, Any]:
    answer = await call([{"role": "user", "content": prompt}], None, lambda text: bool(text.strip()))
    if answer.finish_reason == CONTENT_FILTER:
        ended_by = CONTENT_FILTER
    else:
        ended_by = "max_tokens" if answer.finish_reason == "length" else "teacher_stop"
    return {
        "model": answer.model, "transcript": answer.text, "finish_reason": answer.finish_reason, "ended_by": ended_by,
        "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens, "api_calls": 1,
    }


@dataclass(frozen=True)
class Writer:
    """How the collector turns a row's text into an answer; ``mode`` and ``prompt_version`` key its cache."""

    mode: str
    prompt_version: str
    write: Callable[[Call, str, TeacherConfig], Awaitable[dict[str, Any]]]


V1_WRITER = Writer("v1", SELF_CHAT_PROMPT_VERSION, v1_conversation)
V15_WRITER = Writer("v1.5", SELF_CHAT_TURN_PROMPT_VERSION, v15_conversation)
JUDGE_WRITER = Writer("judge", JUDGE_PROMPT_VERSION, single_answer)


def self_chat_writer(teacher: TeacherConfig) -> Writer:
    return V1_WRITER if teacher.mode == "v1" else V15_WRITER
