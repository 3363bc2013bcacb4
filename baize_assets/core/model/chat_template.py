"""The Jinja chat template of a Baize adapter's tokenizer: OpenAI-style messages in the Baize format.

With it, tools that read ``tokenizer.chat_template`` render ``system`` / ``user`` /
``assistant`` messages exactly as :mod:`prompts` renders training text and the
``baize chat`` prompt, and tokenize them to the ids training used:

* ``add_generation_prompt=True`` gives BOS (when the tokenizer has one) plus
  :func:`prompts.render_inference_prompt`, what ``baize chat`` feeds the model;
* a conversation ending with an assistant message gives BOS plus the training text.

A system message replaces the Baize system prompt; without one the template uses it.

Two variants from one source. The one saved with the tokenizer, for serving, uses only
what every engine's Jinja dialect has: it renders to the same text in jinja2 (transformers,
vLLM, trl) and in minijinja (the engine of text-generation-inference and other Rust
servers), given a ``raise_exception`` function as those servers define it. The training
variant adds transformers' ``{% generation %}`` blocks around the characters of each
assistant piece the trainer labels (the space after ``[|AI|]``, the answer and the
``[|Human|]`` marker that ends it), so ``return_assistant_tokens_mask=True`` (trl's
``assistant_only_loss``) gives the trainer's label mask; minijinja and llama.cpp reject
that tag, so it is never saved for serving.

BOS is written as text, and the text after it must tokenize as training's ``encode``
tokenizes it (BOS id, then the text alone). With a Metaspace ``prepend_scheme: first``
tokenizer (Llama and Mistral as transformers converts them now) ``"<s>The"`` gives
``The`` but ``encode`` gives ``▁The``: there the template writes ``bos_token + ' '``,
whose space becomes that ``▁``. :func:`bos_glue` finds which the tokenizer needs.
"""

from __future__ import annotations

import json

from ..prompts import AI, BAIZE_SYSTEM_PROMPT, HUMAN
from .samples import encode

# What may follow BOS in the template: nothing, or the space a Metaspace "first" tokenizer needs.
BOS_GLUES = ("", " ")


def _literal(text: str) -> str:
    """``text`` as a Jinja string literal (Jinja and minijinja read JSON's escapes)."""
    return json.dumps(text)


def chat_template(bos_glue: str = "", generation: bool = False) -> str:
    """The Baize template: ``bos_glue`` written after BOS; ``generation`` marks the labeled assistant text."""
    start, end = ("{%- generation -%}", "{%- endgeneration -%}") if generation else ("", "")
    return (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set conversation = messages[1:] -%}"
        "{%- else -%}"
        f"{{%- set system = {_literal(BAIZE_SYSTEM_PROMPT)} -%}}{{%- set conversation = messages -%}}"
        "{%- endif -%}"
        f"{{%- if bos_token -%}}{{{{- bos_token + {_literal(bos_glue)} -}}}}{{%- endif -%}}"
        "{{- system -}}"
        "{%- set state = namespace(previous='system') -%}"
        "{%- for message in conversation -%}"
        "{%- if message['role'] == 'user' -%}"
        "{%- if state.previous != 'assistant' -%}"
        f"{{{{- {_literal(chr(10) + HUMAN + ' ')} -}}}}"
        "{%- endif -%}"
        "{{- message['content'] -}}"
        "{%- elif message['role'] == 'assistant' -%}"
        f"{{{{- {_literal(chr(10) + AI)} -}}}}"
        f"{start}{{{{- ' ' + message['content'] + {_literal(chr(10) + HUMAN)} -}}}}{end}"
        "{{- ' ' -}}"
        "{%- else -%}"
        "{{- raise_exception('message ' ~ loop.index0 ~ \": role '\" ~ message['role'] ~ "
        "\"' is not one of system, user, assistant (a system message comes first)\") -}}"
        "{%- endif -%}"
        "{%- set state.previous = message['role'] -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        f"{{{{- {_literal(chr(10) + AI)} -}}}}"
        "{%- endif -%}"
    )


def bos_glue(tokenizer) -> str:
    """What the template writes between BOS and the system prompt so the ids are training's.

    Raises ``ValueError`` for a tokenizer where no glue does (it would serve other ids than it trained on).
    """
    if tokenizer.bos_token is None:
        return ""
    trained = encode(tokenizer, BAIZE_SYSTEM_PROMPT)
    for glue in BOS_GLUES:
        rendered = tokenizer(tokenizer.bos_token + glue + BAIZE_SYSTEM_PROMPT, add_special_tokens=False)
        if rendered["input_ids"] == trained:
            return glue
    raise ValueError(
        f"the tokenizer does not tokenize BOS ({tokenizer.bos_token!r}) followed by text as BOS and then that text "
        "alone; no chat template can give the ids training used"
    )


def serving_chat_template(tokenizer) -> str:
    """The template saved with ``tokenizer`` for serving: every engine renders it alike."""
    return chat_template(bos_glue(tokenizer))


def training_chat_template(tokenizer) -> str:
    """The variant with ``{% generation %}`` marks, for transformers' assistant-token mask (trl)."""
    return chat_template(bos_glue(tokenizer), generation=True)


def attach_chat_template(tokenizer) -> None:
    """Give ``tokenizer`` the serving template; ``save_pretrained`` then writes it alongside."""
    tokenizer.chat_template = serving_chat_template(tokenizer)
