"""The Jinja chat template of a Baize adapter's tokenizer: OpenAI-style messages in the Baize format.

With it, tools that read ``tokenizer.chat_template`` (transformers' ``apply_chat_template``,
vLLM, TGI, trl) render ``system`` / ``user`` / ``assistant`` messages exactly as
:mod:`prompts` renders training text and the ``baize chat`` prompt:

* ``add_generation_prompt=True`` gives BOS (when the tokenizer has one) plus
  :func:`prompts.render_inference_prompt`, what ``baize chat`` feeds the model;
* a conversation ending with an assistant message gives BOS plus the training text;
* ``{% generation %}`` spans the characters of each assistant piece the trainer labels
  (the space after ``[|AI|]``, the answer and the ``[|Human|]`` marker that ends it), so
  the assistant-token mask equals the trainer's label mask.

A system message replaces the Baize system prompt; without one the template uses it.
"""

from __future__ import annotations

import json

from ..prompts import AI, BAIZE_SYSTEM_PROMPT, HUMAN


def _literal(text: str) -> str:
    """``text`` as a Jinja string literal (Jinja reads JSON's escapes)."""
    return json.dumps(text)


BAIZE_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set conversation = messages[1:] -%}"
    "{%- else -%}"
    f"{{%- set system = {_literal(BAIZE_SYSTEM_PROMPT)} -%}}{{%- set conversation = messages -%}}"
    "{%- endif -%}"
    "{%- if bos_token -%}{{- bos_token -}}{%- endif -%}"
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
    "{%- generation -%}"
    f"{{{{- ' ' + message['content'] + {_literal(chr(10) + HUMAN)} -}}}}"
    "{%- endgeneration -%}"
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


def attach_chat_template(tokenizer) -> None:
    """Give ``tokenizer`` the Baize chat template; ``save_pretrained`` then writes it alongside."""
    tokenizer.chat_template = BAIZE_CHAT_TEMPLATE
