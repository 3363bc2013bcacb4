"""What the simulated teacher answers to a chat request: a judgment, the rest of a self-chat, or a plain reply."""

from __future__ import annotations

from typing import Any

from baize_assets.core.prompts import RAW_END, RAW_HUMAN, exchanges_in_self_chat_prompt, seed_from_self_chat_prompt

from .judge import judge_reply
from .text import last_user_text, plain_reply, self_chat_transcript


def completion_text(messages: list[dict[str, Any]], model: str, temperature: float, as_judge: bool = True,
                    json_schema: str | None = None) -> str:
    """What the simulated teacher answers to ``messages`` (before stop/length limits).

    A self-chat prompt that already carries some dialogue (Baize v1.5's human turn) gets
    the rest of the seed's transcript after that many exchanges, or the end marker when
    the transcript has no more. A judge prompt gets a judgment (see :mod:`.judge`), as
    JSON when the request named a ``json_schema``.
    """
    last_user = last_user_text(messages)
    judgment = judge_reply(last_user, model, as_judge, json_schema is not None)
    if judgment is not None:
        return judgment
    seed = seed_from_self_chat_prompt(last_user)
    if seed is not None:
        lines = self_chat_transcript(seed, model, temperature).split("\n")
        rest = lines[2 * exchanges_in_self_chat_prompt(last_user):]
        return "\n".join(rest) if rest else f"{RAW_HUMAN} {RAW_END}"
    return plain_reply(last_user, model, temperature)
