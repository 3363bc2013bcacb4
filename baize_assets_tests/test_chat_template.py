"""The adapter tokenizer's chat template renders messages exactly as training and ``baize chat`` do."""

from __future__ import annotations

import pytest
from jinja2.exceptions import TemplateError

from baize_assets.core.messages import messages_to_turns, turns_to_messages
from baize_assets.core.model.batching import IGNORE_INDEX
from baize_assets.core.model.chat_template import attach_chat_template
from baize_assets.core.model.samples import build_sample, encode
from baize_assets.core.model.tiny_base import train_tokenizer
from baize_assets.core.prompts import (
    BAIZE_SYSTEM_PROMPT,
    HUMAN,
    Turn,
    render_conversation,
    render_inference_prompt,
)

MULTI_TURN = [
    Turn("human", "What is the river like in winter?"),
    Turn("ai", "The river is cold and slow.\n\n- It freezes at the edges.\n- Fish stay deep."),
    Turn("human", "And 2 mountains?"),
    Turn("ai", "Mountains are *high*; the 2 of them are old."),
    Turn("human", "Qvx thanks!"),  # unseen first letters: the space before them stays a token alone
    Turn("ai", "Zqy, you're welcome."),
]
HISTORIES = {
    "one message": [Turn("human", "Hello")],
    "multi-turn": MULTI_TURN[:5],
    "two human turns in a row": [Turn("human", "Hi."), Turn("human", "Are you there?")],
    "ends with an answer": MULTI_TURN[:2],
    "two answers in a row": [Turn("human", "Hi."), Turn("ai", "Hello."), Turn("ai", "How can I help?")],
}


@pytest.fixture(scope="module")
def tokenizer():
    # Without the last exchange: its rare words stay unmerged.
    texts = [render_conversation(MULTI_TURN[:4]), "winter river mountain fish welcome thanks 12345"]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    attach_chat_template(tokenizer)
    return tokenizer


@pytest.mark.parametrize("name", HISTORIES)
def test_generation_prompt_is_the_baize_chat_prompt(tokenizer, name):
    history = HISTORIES[name]
    rendered = tokenizer.apply_chat_template(turns_to_messages(history), add_generation_prompt=True, tokenize=False)
    assert rendered == tokenizer.bos_token + render_inference_prompt(history)
    ids = tokenizer.apply_chat_template(turns_to_messages(history), add_generation_prompt=True, return_dict=False)
    assert ids == encode(tokenizer, render_inference_prompt(history))  # the ids ChatModel.prompt_ids feeds


def test_a_system_message_replaces_the_system_prompt(tokenizer):
    system = "You are Baize, a terse assistant. Decline sensitive topics."
    messages = [{"role": "system", "content": system}, *turns_to_messages(MULTI_TURN[:3])]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == tokenizer.bos_token + render_inference_prompt(messages_to_turns(messages), system=system)
    assert BAIZE_SYSTEM_PROMPT not in rendered
    default = tokenizer.apply_chat_template(messages[1:], add_generation_prompt=True, tokenize=False)
    assert default.startswith(tokenizer.bos_token + BAIZE_SYSTEM_PROMPT + f"\n{HUMAN} ")


def test_a_finished_conversation_is_the_training_text(tokenizer):
    rendered = tokenizer.apply_chat_template(turns_to_messages(MULTI_TURN), tokenize=False)
    assert rendered == tokenizer.bos_token + render_conversation(MULTI_TURN)


def test_assistant_mask_is_the_trainer_label_mask(tokenizer):
    encoded = tokenizer.apply_chat_template(
        turns_to_messages(MULTI_TURN), return_assistant_tokens_mask=True, return_dict=True
    )
    sample = build_sample(MULTI_TURN, tokenizer, "ai")
    assert encoded["input_ids"] == sample.input_ids
    assert encoded["assistant_masks"] == [int(label != IGNORE_INDEX) for label in sample.labels]
    assert sum(encoded["assistant_masks"]) > 3 * 4  # three answers, each several tokens and its stop marker
    # Both kinds of answer start are covered: the space after [|AI|] alone and folded into the first word.
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    after_ai = {tokens[i + 1] for i, token in enumerate(tokens[:-1]) if token == "[|AI|]"}
    assert "Ġ" in after_ai and any(len(token) > 1 for token in after_ai)


def test_an_unknown_role_is_named(tokenizer):
    with pytest.raises(TemplateError, match="message 1: role 'tool'"):
        tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "tool", "content": "{}"}])


def test_inference_prompt_is_a_prefix_of_the_training_text():
    """Training and inference see one format: the prompt the model answers is how its training text begins."""
    for turns in (MULTI_TURN, MULTI_TURN[:2], [Turn("human", "Hi."), Turn("human", "There?"), Turn("ai", "Yes.")]):
        for end, turn in enumerate(turns):
            if turn.role == "ai" and turns[end - 1].role == "human":
                prompt = render_inference_prompt(turns[:end])
                training_text = render_conversation(turns[: end + 1])
                assert training_text.startswith(prompt) and training_text.startswith(BAIZE_SYSTEM_PROMPT)
                assert training_text[len(prompt) :] == f" {turn.text}\n{HUMAN} "
