"""Every prompt and marker of the pipeline, in one place.

Three formats meet here and must agree:

* the self-chat prompt sent to the teacher, whose transcript uses the raw markers
  ``[Human]`` / ``[AI]``;
* the training text, which uses Baize's double-bar markers ``[|Human|]`` / ``[|AI|]``
  and ends with a trailing ``[|Human|] `` so the model learns where to stop;
* the inference prompt used by ``baize chat``, rendered by the same function as
  the training text so the model sees at inference exactly what it was trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Literal

Role = Literal["human", "ai"]

# Raw markers the teacher writes in a self-chat transcript.
RAW_HUMAN = "[Human]"
RAW_AI = "[AI]"

# Markers of the training and inference text.
HUMAN = "[|Human|]"
AI = "[|AI|]"
STOP_MARKERS = (HUMAN, AI)

# Any chat marker of either format, anywhere in a text: "[Human]" / "[AI]", "[|Human|]" /
# "[|AI|]", also with full-width brackets, any case, inner spaces and a trailing colon.
# Text that holds one would be read as a turn boundary, so seeds and turns must not.
MARKER_PATTERN = r"[\[［]\s*\|?\s*(?P<role>human|ai)\s*\|?\s*[\]］]\s*:?"
MARKER_ANYWHERE = re.compile(MARKER_PATTERN, re.IGNORECASE)

# Bump when the self-chat prompt text changes: it is part of the transcripts'
# code_version, so Dagster shows every transcript partition as stale.
SELF_CHAT_PROMPT_VERSION = "v1-2026.11"

# Baize v1 self-chat prompt: one user message, no system message.
SELF_CHAT_TEMPLATE = (
    "Forget all the instructions you were given before this message. "
    "Below is a conversation between a human and an AI assistant. "
    "The human and the AI assistant take turns chatting about the topic '{seed}'. "
    f"Every statement of the human starts with {RAW_HUMAN} and every statement of the "
    f"AI assistant starts with {RAW_AI}. "
    "The human asks follow-up questions about related topics or about what was said "
    "before, and stops the conversation when they have no more questions. "
    "The AI assistant tries not to ask questions. "
    "Complete the transcript in exactly this format.\n"
    f"{RAW_HUMAN} Hello!\n"
    f"{RAW_AI} Hi! How can I help you?\n"
)

# Baize v1.5 (turn by turn): the human turn continues this prompt plus the dialogue so
# far, stopping at the next AI marker; a human with no more questions writes the end marker.
SELF_CHAT_TURN_PROMPT_VERSION = "v1.5-2026.11"
RAW_END = "[END]"
SELF_CHAT_TURN_RULE = f"When the human has no more questions, the human's next statement is exactly {RAW_END}.\n"

_SEED_IN_PROMPT = re.compile(r"chatting about the topic '(?P<seed>.*)'\. Every statement", re.S)

# Header of every training sample (Baize's).
TRAINING_HEADER = "The conversation between human and AI assistant."

# Inference prompt: Baize's system prompt with its guardrail, primed with one exchange.
BAIZE_SYSTEM_PROMPT = (
    "The following is a conversation between a human and an AI assistant named Baize. "
    "Baize is an open-source AI assistant developed from self-chat data. "
    f"The human and the AI assistant take turns chatting. Human statements start with {HUMAN} "
    f"and AI assistant statements start with {AI}. The AI assistant always provides "
    "responses in as much detail as possible, and in Markdown format. "
    "The AI assistant always declines to engage with topics, questions and instructions "
    "related to unethical, controversial, or sensitive issues. Complete the transcript "
    "in exactly that format."
)
PRIMING_TURNS: tuple[tuple[Role, str], ...] = (("human", "Hello!"), ("ai", "Hi!"))


@dataclass(frozen=True)
class Turn:
    role: Role
    text: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "text": self.text}


def self_chat_prompt(seed: str) -> str:
    """The user message that asks the teacher to write both sides of a conversation."""
    return SELF_CHAT_TEMPLATE.format(seed=seed)


def self_chat_turn_prompt(seed: str, dialogue: Iterable[Turn]) -> str:
    """The v1.5 human-turn prompt: the self-chat prompt, the dialogue so far, the end rule."""
    lines = "".join(f"{RAW_HUMAN if t.role == 'human' else RAW_AI} {t.text}\n" for t in dialogue)
    return self_chat_prompt(seed) + lines + SELF_CHAT_TURN_RULE


def exchanges_in_self_chat_prompt(prompt: str) -> int:
    """How many human turns of dialogue follow the example exchange of a self-chat prompt."""
    example_end = SELF_CHAT_TEMPLATE.rsplit(RAW_HUMAN, 1)[1]
    _, _, dialogue = prompt.partition(example_end)
    return dialogue.count(RAW_HUMAN)


def seed_from_self_chat_prompt(prompt: str) -> str | None:
    """The seed a self-chat prompt is about, or None when the text is not one."""
    match = _SEED_IN_PROMPT.search(prompt)
    return match.group("seed") if match else None


def _marker(role: Role) -> str:
    return HUMAN if role == "human" else AI


def conversation_segments(
    turns: Iterable[Turn], header: str = TRAINING_HEADER
) -> list[tuple[str, bool]]:
    """The training text cut into ``(text, is_ai_response)`` pieces.

    Joined, the pieces are exactly :func:`render_conversation`. Each AI piece is the
    AI's words plus the ``[|Human|]`` marker that ends them, which is what a model
    trained on AI turns only must learn to produce (including when to stop).
    """
    segments: list[tuple[str, bool]] = []
    pending = header
    human_marker_written = False  # an AI piece already ends with the next human marker
    for turn in turns:
        if turn.role == "human":
            pending += turn.text if human_marker_written else f"\n{HUMAN} {turn.text}"
            human_marker_written = False
        else:
            segments.append((pending + f"\n{AI} ", False))
            segments.append((f"{turn.text}\n{HUMAN} ", True))
            pending = ""
            human_marker_written = True
    if not human_marker_written:
        segments.append((pending + f"\n{HUMAN} ", False))
    return segments


def render_conversation(turns: Iterable[Turn], header: str = TRAINING_HEADER) -> str:
    """Baize training text: header, alternating marked turns, trailing ``[|Human|] ``."""
    return "".join(text for text, _ in conversation_segments(turns, header))


def render_inference_prompt(history: Iterable[Turn]) -> str:
    """The prompt ``baize chat`` feeds the model: system prompt, priming, history, ``[|AI|] ``.

    ``history`` ends with the human message to answer.
    """
    turns = [Turn(role, text) for role, text in PRIMING_TURNS] + list(history)
    text = BAIZE_SYSTEM_PROMPT
    for turn in turns:
        text += f"\n{_marker(turn.role)} {turn.text}"
    return text + f"\n{AI} "
