"""Baize v2's answers sampled by a serving endpoint (``sampling.endpoint``) through the collector.

Each of a context's k answers is one row: the Baize system prompt and the context's turns as
chat messages, Baize's stop markers, and the answer's own seed (the one the step's own model
would use), so an endpoint that honours ``seed`` samples the same answers on a rerun, and the
cache keys of the k rows differ. ``baize serve`` and vLLM serving v1 with ``--enable-lora``
render the messages with the adapter's chat template, the same Baize prompt training used.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import pandas as pd

from ..collect.client import Answer
from ..collect.modes import OneCall, Writer
from ..config.feedback import SamplingConfig
from ..config.teacher import TeacherConfig
from ..messages import turns_to_messages
from ..prompts import BAIZE_SYSTEM_PROMPT, CHAT_FORMAT_VERSION, STOP_MARKERS, Turn
from .sampling import answer_seed
from .self_distill import SAMPLE_SCHEMA, FeedbackContext

_ROW_KEY = "{seed_id}/{index}"


def _messages(text: str) -> list[dict[str, str]]:
    request = json.loads(text)
    return [{"role": "system", "content": BAIZE_SYSTEM_PROMPT},
            *turns_to_messages(Turn(t["role"], t["text"]) for t in request["context"])]


def _fields(answer: Answer, teacher: TeacherConfig) -> dict[str, Any]:
    return {"model": answer.model, "transcript": answer.text, "finish_reason": answer.finish_reason,
            "ended_by": "max_tokens" if answer.finish_reason == "length" else "teacher_stop",
            "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "reasoning_tokens": answer.reasoning_tokens, "api_calls": 1}


def _any_answer(text: str) -> bool:
    return True  # an empty answer is a sample too: the judge scores it


def _seed(text: str) -> dict[str, Any]:
    return {"seed": json.loads(text)["seed"]}


# Module-level functions only: the writer travels to the collector's child processes.
SAMPLE_WRITER = Writer("sample", CHAT_FORMAT_VERSION, "samples: {done}/{total} answers",
                       one_call=OneCall(_messages, _any_answer, _fields, stop=STOP_MARKERS, request_fields=_seed))


def sample_requests(contexts: Sequence[FeedbackContext], sampling: SamplingConfig) -> pd.DataFrame:
    """k rows per context, in the seed-table shape the collector takes; the row text holds the request."""
    rows = [{"seed_id": _ROW_KEY.format(seed_id=c.seed_id, index=index),
             "seed": json.dumps({"context": [t.as_dict() for t in c.context],
                                 "seed": answer_seed(c.seed_id, index, sampling.seed)}),
             "source": c.source, "shard": c.shard}
            for c in contexts for index in range(sampling.answers_per_seed)]
    return pd.DataFrame(rows, columns=["seed_id", "seed", "source", "shard"])


def samples_from_answers(contexts: Sequence[FeedbackContext], sampling: SamplingConfig,
                         answered: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The samples table (``SAMPLE_SCHEMA``) of the answers the endpoint gave, and the rows it failed."""
    by_key = answered.set_index("seed_id")
    rows, failed = [], []
    for context in contexts:
        for index in range(sampling.answers_per_seed):
            reply = by_key.loc[_ROW_KEY.format(seed_id=context.seed_id, index=index)]
            if isinstance(reply.get("failure_kind"), str):
                failed.append(reply)
                continue
            rows.append({"seed_id": context.seed_id, "source": context.source, "shard": context.shard,
                         "sample_index": index, "context": [t.as_dict() for t in context.context],
                         "answer": reply["transcript"].strip(), "finish_reason": reply["finish_reason"]})
    return pd.DataFrame(rows, columns=SAMPLE_SCHEMA.names), pd.DataFrame(failed)
