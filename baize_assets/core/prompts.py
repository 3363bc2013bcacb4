"""Every prompt and marker of the pipeline, in one place.

Three formats meet here and must agree:

* the self-chat prompt sent to the teacher, whose transcript uses the raw markers
  ``[Human]`` / ``[AI]``;
* the training text, which uses Baize's double-bar markers ``[|Human|]`` / ``[|AI|]``
  and ends with a trailing ``[|Human|] `` so the model learns where to stop;
* the inference prompt used by ``baize chat``, rendered by the same function as
  the training text so the model sees at inference exactly what it was trained on.

Both start with one header, Baize's training header plus its guardrail. The original
trained under the bare header and served under a longer system prompt plus a priming
exchange (``Hello!`` / ``Hi!``) that no training sample held; here the model learns
its answers, and the guardrail, in the very context it is served in.
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

# The one system prompt, header of every training sample and of every inference prompt:
# Baize's training header plus the guardrail sentence of Baize's inference prompt. That
# longer prompt also described the markers and asked for Markdown and for completing the
# transcript "in exactly that format", words that steer a base model never tuned on the
# format; a model trained on it needs none of them, and in training all their tokens
# would be an unlabeled prefix of every sample.
BAIZE_GUARDRAIL = (
    "The AI assistant always declines to engage with topics, questions and instructions "
    "related to unethical, controversial, or sensitive issues."
)
BAIZE_SYSTEM_PROMPT = f"The conversation between human and AI assistant. {BAIZE_GUARDRAIL}"
TRAINING_HEADER = BAIZE_SYSTEM_PROMPT  # the same text, named for where training code uses it
# Bump when the training / inference text changes (header, markers, layout): the
# corpus text and every adapter trained on it change with it.
CHAT_FORMAT_VERSION = "2-2026.12"


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


def conversation_segments(
    turns: Iterable[Turn], header: str = TRAINING_HEADER
) -> list[tuple[str, bool]]:
    """The training text cut into ``(text, is_ai_response)`` pieces.

    Joined, the pieces are exactly :func:`render_conversation`. Each AI piece is the
    AI's words plus the ``[|Human|]`` marker that ends them, which is what a model
    trained on AI turns only must learn to produce (including when to stop). It starts
    with the space after ``[|AI|]``, which tokenizers fold into the first word (``" I"``)
    or keep alone; the space after ``[|Human|]`` begins the next human turn instead.
    """
    segments: list[tuple[str, bool]] = []
    pending = header
    human_marker_written = False  # an AI piece already ends with the next human marker
    for turn in turns:
        if turn.role == "human":
            pending += turn.text if human_marker_written else f"\n{HUMAN} {turn.text}"
            human_marker_written = False
        else:
            segments.append((pending + f"\n{AI}", False))
            segments.append((f" {turn.text}\n{HUMAN}", True))
            pending = " "
            human_marker_written = True
    segments.append((pending if human_marker_written else pending + f"\n{HUMAN} ", False))
    return segments


def render_conversation(turns: Iterable[Turn], header: str = TRAINING_HEADER) -> str:
    """Baize training text: header, alternating marked turns, trailing ``[|Human|] ``."""
    return "".join(text for text, _ in conversation_segments(turns, header))


def render_inference_prompt(history: Iterable[Turn], system: str = BAIZE_SYSTEM_PROMPT) -> str:
    """The prompt ``baize chat`` feeds the model: the training text of ``history`` up to ``[|AI|]``.

    ``history`` ends with the human message to answer. The prompt is the training text
    of ``history`` plus its answer, up to where the labeled answer piece begins.
    """
    segments = conversation_segments([*history, Turn("ai", "")], header=system)
    answer = len(segments) - 2  # the empty answer's piece, before the trailing space
    return "".join(text for text, _ in segments[:answer])


# The teacher as judge (Baize v2). Bump when a judge prompt's text changes: it is part of
# the feedback scores' and the judged evaluations' code_version.
JUDGE_PROMPT_VERSION = "v2-2026.12"

# Self-distillation with feedback: one sampled answer scored 1-100 in its conversation.
SCORE_ANSWER_TEMPLATE = (
    "You are reviewing one answer an AI assistant gave in a conversation with a human.\n\n"
    "[Conversation]\n{conversation}\n[End of conversation]\n\n"
    "[Answer]\n{answer}\n[End of answer]\n\n"
    "Rate how well the answer responds to the human's last message, judging its helpfulness, "
    "relevance, accuracy and level of detail together. On the first line write only one integer "
    "from 1 to 100, higher is better. Then explain the score in a short paragraph."
)

# Evaluation: two answers to one question in one prompt, 1-10 each; asked in both orders.
COMPARE_ANSWERS_TEMPLATE = (
    "[Question]\n{question}\n\n"
    "[The Start of Assistant 1's Answer]\n{first}\n[The End of Assistant 1's Answer]\n\n"
    "[The Start of Assistant 2's Answer]\n{second}\n[The End of Assistant 2's Answer]\n\n"
    "Please compare the two AI assistants' answers to the question above. Judge the helpfulness, "
    "relevance, accuracy and level of detail of each. Give each assistant one overall score from 1 "
    "to 10, higher is better. On the first line write only the two scores, for Assistant 1 and "
    "Assistant 2 in that order, separated by a space. Then explain your judgment; do not let the "
    "order in which the answers appear or their length sway it."
)
# The judge filter (opt-in): one kept conversation rated 1-10 as a whole, before it is trained on.
RATE_CONVERSATION_TEMPLATE = (
    "You are reviewing a conversation between a human and an AI assistant, written to train assistants.\n\n"
    "[Conversation]\n{conversation}\n[End of conversation]\n\n"
    "Rate the AI assistant's replies in this conversation, judging their helpfulness and correctness together. "
    "On the first line write only one integer from 1 to 10, higher is better. Then explain the score in a short "
    "paragraph."
)
_RATED_CONVERSATION = re.compile(
    r"^You are reviewing a conversation between.*?\[Conversation\]\n(?P<conversation>.*)\n\[End of conversation\]"
    r"\n\nRate the AI assistant's replies", re.S)

# Structured output of the judgments, where the judge's endpoint takes a JSON schema
# (``response_format``); the explanation comes first, so the score follows from it.
SCORE_ANSWER_FIELD = "score"
COMPARE_ANSWERS_FIELDS = ("assistant_1_score", "assistant_2_score")


def _judgment_format(name: str, scores: tuple[str, ...]) -> dict:
    properties = {"explanation": {"type": "string"}, **{score: {"type": "integer"} for score in scores}}
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": {
        "type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}}}


SCORE_ANSWER_FORMAT = _judgment_format("answer_score", (SCORE_ANSWER_FIELD,))
RATE_CONVERSATION_FORMAT = _judgment_format("conversation_rating", (SCORE_ANSWER_FIELD,))
COMPARE_ANSWERS_FORMAT = _judgment_format("answer_comparison", COMPARE_ANSWERS_FIELDS)

_SCORED_ANSWER = re.compile(
    r"^You are reviewing one answer.*?\[Conversation\]\n(?P<conversation>.*)\n\[End of conversation\]\n\n"
    r"\[Answer\]\n(?P<answer>.*)\n\[End of answer\]\n\nRate how well",
    re.S,
)
_COMPARED_ANSWERS = re.compile(
    r"^\[Question\]\n(?P<question>.*)\n\n\[The Start of Assistant 1's Answer\]\n(?P<first>.*)\n"
    r"\[The End of Assistant 1's Answer\]\n\n\[The Start of Assistant 2's Answer\]\n(?P<second>.*)\n"
    r"\[The End of Assistant 2's Answer\]\n\nPlease compare",
    re.S,
)


def _plain_dialogue(turns: Iterable[Turn]) -> str:
    return "\n".join(f"{'Human' if t.role == 'human' else 'AI'}: {t.text}" for t in turns)


def score_answer_prompt(context: Iterable[Turn], answer: str) -> str:
    """The judge prompt of one sampled answer; ``context`` ends with the human message it answers."""
    return SCORE_ANSWER_TEMPLATE.format(conversation=_plain_dialogue(context), answer=answer)


def rate_conversation_prompt(turns: Iterable[Turn]) -> str:
    """The judge filter's prompt of one conversation."""
    return RATE_CONVERSATION_TEMPLATE.format(conversation=_plain_dialogue(turns))


def parse_rate_conversation_prompt(prompt: str) -> list[Turn] | None:
    """The turns of a judge filter prompt, or None when the text is not one."""
    match = _RATED_CONVERSATION.match(prompt)
    if not match:
        return None
    turns = []
    for line in match["conversation"].split("\n"):
        role, _, text = line.partition(": ")
        if role in ("Human", "AI"):
            turns.append(Turn("human" if role == "Human" else "ai", text))
        elif turns:  # a turn of several lines
            turns[-1] = Turn(turns[-1].role, f"{turns[-1].text}\n{line}")
    return turns


def compare_answers_prompt(question: str, first: str, second: str) -> str:
    return COMPARE_ANSWERS_TEMPLATE.format(question=question, first=first, second=second)


def parse_score_answer_prompt(prompt: str) -> tuple[str, str] | None:
    """``(last human message, answer)`` of a scoring prompt, or None when the text is not one."""
    match = _SCORED_ANSWER.match(prompt)
    if not match:
        return None
    human_lines = [line for line in match["conversation"].split("\n") if line.startswith("Human: ")]
    return (human_lines[-1].removeprefix("Human: ") if human_lines else ""), match["answer"]


def parse_compare_answers_prompt(prompt: str) -> tuple[str, str, str] | None:
    """``(question, first answer, second answer)`` of a comparison prompt, or None."""
    match = _COMPARED_ANSWERS.match(prompt)
    return (match["question"], match["first"], match["second"]) if match else None
