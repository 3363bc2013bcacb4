"""Baize turns as OpenAI-style chat messages, the shape trl, axolotl, LLaMA-Factory and chat templates read.

The one mapping between the two: Baize's ``human`` / ``ai`` roles are ``user`` / ``assistant``.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from .prompts import Role, Turn

ROLE_OF_SPEAKER: dict[Role, str] = {"human": "user", "ai": "assistant"}
SPEAKER_OF_ROLE: dict[str, Role] = {role: speaker for speaker, role in ROLE_OF_SPEAKER.items()}


def turns_to_messages(turns: Iterable[Turn]) -> list[dict[str, str]]:
    """``[{"role": "user" | "assistant", "content": text}, ...]`` in conversation order."""
    return [{"role": ROLE_OF_SPEAKER[turn.role], "content": turn.text} for turn in turns]


def messages_to_turns(messages: Iterable[Mapping[str, str]]) -> list[Turn]:
    """The inverse of :func:`turns_to_messages`; a ``system`` message has no turn and is left out."""
    turns = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "system":
            continue
        if role not in SPEAKER_OF_ROLE:
            raise ValueError(f"message {index}: role {role!r} is not one of system, user, assistant")
        turns.append(Turn(SPEAKER_OF_ROLE[role], str(message.get("content", ""))))
    return turns
