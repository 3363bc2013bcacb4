"""The adapter tokenizer's chat template renders messages exactly as training and ``baize chat`` do.

On every tokenizer layout: byte-level BPE, SentencePiece with a Metaspace ``first``
pre-tokenizer and SentencePiece legacy (all trained here), and SmolLM2's real tokenizer
(BOS ``<|im_start|>``, pad = EOS) read from the packaged GGUF file; and in every engine
that renders templates: transformers, jinja2 as vLLM sets it up, and minijinja.
"""

from __future__ import annotations

import jinja2
import minijinja
import pytest
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from baize_assets.core.messages import messages_to_turns, turns_to_messages
from baize_assets.core.model.batching import IGNORE_INDEX
from baize_assets.core.model.chat_template import (
    attach_chat_template,
    bos_glue,
    serving_chat_template,
    training_chat_template,
)
from baize_assets.core.model.samples import build_sample, encode
from baize_assets.core.model.smollm2_base import load_smollm2_tokenizer
from baize_assets.core.prompts import (
    BAIZE_SYSTEM_PROMPT,
    HUMAN,
    Turn,
    render_conversation,
    render_inference_prompt,
)

from .tokenizer_support import TOKENIZER_KINDS, trained_tokenizer

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


LAYOUTS = (*TOKENIZER_KINDS, "smollm2")


@pytest.fixture(scope="module", params=LAYOUTS)
def tokenizer(request):
    if request.param == "smollm2":
        tokenizer = load_smollm2_tokenizer()
    else:
        # Without the last exchange: its rare words stay unmerged.
        texts = [render_conversation(MULTI_TURN[:4]), "winter river mountain fish welcome thanks 12345"]
        tokenizer = trained_tokenizer(request.param, texts)
    attach_chat_template(tokenizer)
    return tokenizer


def bos_text(tokenizer) -> str:
    """What the template writes before the system prompt."""
    return tokenizer.bos_token + bos_glue(tokenizer)


@pytest.mark.parametrize("name", HISTORIES)
def test_generation_prompt_is_the_baize_chat_prompt(tokenizer, name):
    history = HISTORIES[name]
    rendered = tokenizer.apply_chat_template(turns_to_messages(history), add_generation_prompt=True, tokenize=False)
    assert rendered == bos_text(tokenizer) + render_inference_prompt(history)
    ids = tokenizer.apply_chat_template(turns_to_messages(history), add_generation_prompt=True, return_dict=False)
    assert ids == encode(tokenizer, render_inference_prompt(history))  # the ids ChatModel.prompt_ids feeds


def test_bos_is_followed_by_the_first_token_training_sees(tokenizer):
    """Writing BOS as text right before the prompt is what went wrong with Metaspace "first" tokenizers."""
    prompt = render_inference_prompt(MULTI_TURN[:1])
    glued_directly = tokenizer(tokenizer.bos_token + prompt, add_special_tokens=False)["input_ids"]
    needs_glue = glued_directly != encode(tokenizer, prompt)
    assert needs_glue == (tokenizer.backend_tokenizer.pre_tokenizer.__class__.__name__ == "Metaspace")
    assert bos_glue(tokenizer) == (" " if needs_glue else "")
    assert encode(tokenizer, prompt)[0] == tokenizer.bos_token_id


def test_a_system_message_replaces_the_system_prompt(tokenizer):
    system = "You are Baize, a terse assistant. Decline sensitive topics."
    messages = [{"role": "system", "content": system}, *turns_to_messages(MULTI_TURN[:3])]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == bos_text(tokenizer) + render_inference_prompt(messages_to_turns(messages), system=system)
    assert BAIZE_SYSTEM_PROMPT not in rendered
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert ids == encode(tokenizer, render_inference_prompt(messages_to_turns(messages), system=system))
    default = tokenizer.apply_chat_template(messages[1:], add_generation_prompt=True, tokenize=False)
    assert default.startswith(bos_text(tokenizer) + BAIZE_SYSTEM_PROMPT + f"\n{HUMAN} ")


def test_a_finished_conversation_is_the_training_text(tokenizer):
    rendered = tokenizer.apply_chat_template(turns_to_messages(MULTI_TURN), tokenize=False)
    assert rendered == bos_text(tokenizer) + render_conversation(MULTI_TURN)
    ids = tokenizer.apply_chat_template(turns_to_messages(MULTI_TURN), return_dict=False)
    assert ids == build_sample(MULTI_TURN, tokenizer, "ai").input_ids


def test_training_variant_masks_the_tokens_the_trainer_labels(tokenizer):
    tokenizer.chat_template = training_chat_template(tokenizer)
    try:
        encoded = tokenizer.apply_chat_template(
            turns_to_messages(MULTI_TURN), return_assistant_tokens_mask=True, return_dict=True
        )
    finally:
        attach_chat_template(tokenizer)
    sample = build_sample(MULTI_TURN, tokenizer, "ai")
    assert encoded["input_ids"] == sample.input_ids
    assert encoded["assistant_masks"] == [int(label != IGNORE_INDEX) for label in sample.labels]
    assert sum(encoded["assistant_masks"]) > 3 * 4  # three answers, each several tokens and its stop marker


def test_byte_level_answers_start_both_ways():
    """With the markers as single tokens, an answer starts with the space alone or folded into its first word."""
    texts = [render_conversation(MULTI_TURN[:4]), "winter river mountain fish welcome thanks 12345"]
    tokenizer = trained_tokenizer("byte_level_bpe", texts)
    sample = build_sample(MULTI_TURN, tokenizer, "ai")
    tokens = tokenizer.convert_ids_to_tokens(sample.input_ids)
    after_ai = {(tokens[i + 1], sample.labels[i + 1]) for i, token in enumerate(tokens[:-1]) if token == "[|AI|]"}
    assert any(token == "Ġ" for token, _ in after_ai) and any(len(token) > 1 for token, _ in after_ai)
    assert all(label != IGNORE_INDEX for _, label in after_ai)


def test_an_unknown_role_is_named(tokenizer):
    with pytest.raises(TemplateError, match="message 1: role 'tool'"):
        tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "tool", "content": "{}"}])


def raise_exception(message: str):
    raise ValueError(message)


def render_with_jinja2(template: str, **context) -> str:
    """As vLLM renders: a sandboxed jinja2 environment, blocks trimmed, ``raise_exception`` defined."""
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(template).render(**context)


def render_with_minijinja(template: str, **context) -> str:
    """As text-generation-inference renders (minijinja, ``raise_exception`` defined)."""
    environment = minijinja.Environment()
    environment.add_function("raise_exception", raise_exception)
    return environment.render_str(template, **context)


RENDERINGS = {
    "generation prompt": (MULTI_TURN[:5], True, None),
    "finished conversation": (MULTI_TURN, False, None),
    "system message": (MULTI_TURN[:3], True, "Be brief. Decline sensitive topics."),
    "two answers in a row": (HISTORIES["two answers in a row"], True, None),
}


@pytest.mark.parametrize("name", RENDERINGS)
def test_the_saved_template_renders_alike_in_every_engine(tokenizer, name):
    turns, add_generation_prompt, system = RENDERINGS[name]
    messages = ([{"role": "system", "content": system}] if system else []) + turns_to_messages(turns)
    template = serving_chat_template(tokenizer)
    assert tokenizer.chat_template == template and "generation" not in template.replace("add_generation_prompt", "")
    context = {"messages": messages, "add_generation_prompt": add_generation_prompt, "bos_token": tokenizer.bos_token}
    expected = bos_text(tokenizer) + (
        render_inference_prompt(turns, system or BAIZE_SYSTEM_PROMPT)
        if add_generation_prompt
        else render_conversation(turns)
    )
    transformers_text = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                      tokenize=False)
    assert transformers_text == render_with_jinja2(template, **context) == expected
    assert render_with_minijinja(template, **context) == expected


def test_minijinja_names_an_unknown_role_and_rejects_only_the_training_variant(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "tool", "content": "{}"}]
    with pytest.raises(ValueError, match="message 1: role 'tool'"):
        render_with_minijinja(serving_chat_template(tokenizer), messages=messages, bos_token=tokenizer.bos_token)
    with pytest.raises(minijinja.TemplateError, match="unknown statement generation"):
        render_with_minijinja(training_chat_template(tokenizer), messages=messages[:1], bos_token="<s>")
    with pytest.raises(jinja2.TemplateSyntaxError, match="generation"):
        render_with_jinja2(training_chat_template(tokenizer), messages=messages[:1], bos_token="<s>")


def test_inference_prompt_is_a_prefix_of_the_training_text():
    """Training and inference see one format: the prompt the model answers is how its training text begins."""
    for turns in (MULTI_TURN, MULTI_TURN[:2], [Turn("human", "Hi."), Turn("human", "There?"), Turn("ai", "Yes.")]):
        for end, turn in enumerate(turns):
            if turn.role == "ai" and turns[end - 1].role == "human":
                prompt = render_inference_prompt(turns[:end])
                training_text = render_conversation(turns[: end + 1])
                assert training_text.startswith(prompt) and training_text.startswith(BAIZE_SYSTEM_PROMPT)
                assert training_text[len(prompt) :] == f" {turn.text}\n{HUMAN} "
