"""A real pretrained base through the whole graph: SmolLM2-135M-Instruct, offline, from the packaged GGUF file.

``baize.smollm2.yaml`` as shipped, trained for two short steps: the graph builds the base
from the GGUF file, the Alpaca corpus and training set, the adapter and its evaluation;
then ``baize chat``, ``baize serve`` and ``baize export`` use the adapter. A pretrained
model answers in English from the first step, which a random tiny base never does, and its
tokenizer (BOS ``<|im_start|>``, pad = EOS ``<|im_end|>``) is another layout the chat
template must give training's ids on.
"""

from __future__ import annotations

import json
import math

import openai
import pytest
import torch
from dagster import instance_for_test
from lingua import Language, LanguageDetectorBuilder

from baize_assets.cli import main
from baize_assets.core.chat.chat_model import load_chat_model
from baize_assets.core.chat.server import AdapterServer
from baize_assets.core.config.pipeline import PROJECT_ROOT, load_config
from baize_assets.core.messages import turns_to_messages
from baize_assets.core.model.samples import build_sample, encode
from baize_assets.core.prompts import Turn, render_inference_prompt
from baize_assets.core.storage import Layout
from baize_assets.core.train.export import export_adapter
from baize_assets.core.train.summary import read_summary
from baize_assets.definitions import build_definitions
from baize_assets.demo import materialize_whole_graph
from baize_assets.pipes_messages import subprocess_client
from baize_assets.resources import BaizeStorage

QUESTION = "How do I make a good cup of tea?"
CONVERSATION = [Turn("human", QUESTION), Turn("ai", "Boil fresh water and steep the leaves for three minutes.")]
ENGLISH_AND_NEIGHBOURS = [Language.ENGLISH, Language.FRENCH, Language.GERMAN, Language.SPANISH, Language.ITALIAN,
                          Language.DUTCH, Language.PORTUGUESE]

pytestmark = pytest.mark.slow


def english(text: str) -> bool:
    """Real English words: several of them, and English by far the likeliest language of the text."""
    detector = LanguageDetectorBuilder.from_languages(*ENGLISH_AND_NEIGHBOURS).build()
    return len(text.split()) >= 4 and detector.compute_language_confidence(text, Language.ENGLISH) > 0.5


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> tuple[Layout, str]:
    """The shipped real-base configuration, materialized with two steps of two short samples."""
    config = load_config(PROJECT_ROOT / "baize.smollm2.yaml")
    (adapter,) = config.adapters
    training = adapter.training.model_copy(update={
        "max_steps": 2, "micro_batch_size": 2, "effective_batch_size": 2, "cutoff_len": 96, "eval_steps": 2,
        "eval_prompts": [QUESTION],
    })
    config = config.model_copy(update={"adapters": [adapter.model_copy(update={"training": training})]})
    output = tmp_path_factory.mktemp("real_base")
    defs = build_definitions(config, {"storage": BaizeStorage(output_dir=str(output)),
                                      "pipes_subprocess_client": subprocess_client()})
    with instance_for_test() as instance:
        materialize_whole_graph(defs, config, instance, log=lambda _: None)
    return Layout(output), adapter.name


def test_the_english_check_tells_words_from_gibberish():
    assert english("Boil fresh water and steep the leaves for three minutes.")
    assert not english("xqz blorf vuu kaplin dorr") and not english("Le chat dort sur la table de la cuisine.")
    assert not english("Tea is good")  # too few words to tell


def test_the_graph_builds_the_base_trains_and_evaluates(graph):
    layout, name = graph
    base = layout.base_model("smollm2_135m_instruct")
    assert json.loads((base / "config.json").read_text())["num_hidden_layers"] == 30
    summary = read_summary(layout.adapter(name))
    assert summary["base_model"] == str(base) and summary["steps"] == 2
    assert summary["trainable_parameters"] > 0 and math.isfinite(summary["train_loss_final"])
    report = json.loads(layout.evaluation(name).read_text())
    assert report["eval_tokens"] > 0 and math.isfinite(report["adapter_eval_loss"])
    # Two tiny steps leave a pretrained model about where it was: far below a random model's loss.
    assert report["base_eval_loss"] < math.log(49152) / 2
    assert abs(report["adapter_eval_loss"] - report["base_eval_loss"]) < 0.5
    (answer,) = report["answers"]
    assert english(answer["answer"]), answer


def test_baize_chat_answers_in_english(graph, capsys):
    layout, name = graph
    args = ["chat", "--adapter", str(layout.adapter(name)), "--message", QUESTION, "--temperature", "0",
            "--max-new-tokens", "40"]
    assert main(args) == 0
    answer = capsys.readouterr().out.strip()
    assert english(answer), answer


def test_baize_serve_answers_in_english_on_the_template_ids(graph):
    from transformers import AutoTokenizer

    layout, name = graph
    messages = [{"role": "user", "content": QUESTION}]
    tokenizer = AutoTokenizer.from_pretrained(layout.adapter(name))
    assert (tokenizer.bos_token, tokenizer.pad_token, tokenizer.eos_token) == ("<|im_start|>",) + ("<|im_end|>",) * 2
    template_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert template_ids == encode(tokenizer, render_inference_prompt([Turn("human", QUESTION)]))
    with AdapterServer(layout.adapter(name)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)
        reply = client.chat.completions.create(model=name, messages=messages, temperature=0, max_tokens=40)
    assert reply.usage.prompt_tokens == len(template_ids)
    assert english(reply.choices[0].message.content), reply.choices[0].message.content


def test_export_gives_a_model_with_the_training_ids_and_the_adapter_logits(graph, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    layout, name = graph
    merged = export_adapter(layout.adapter(name), tmp_path / "merged", log=lambda _: None)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    training_ids = build_sample(CONVERSATION, tokenizer, "ai").input_ids
    assert tokenizer.apply_chat_template(turns_to_messages(CONVERSATION), return_dict=False) == training_ids
    assert json.loads((merged / "config.json").read_text())["dtype"] == "bfloat16"  # as SmolLM2 was released
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    chat = load_chat_model(layout.adapter(name))
    ids = torch.tensor([training_ids])
    with torch.no_grad():
        merged_logits, adapter_logits = model(ids).logits, chat.model(ids).logits
    # The merged weights are rounded to bf16: the predictions stay the adapter's.
    assert (merged_logits.argmax(-1) == adapter_logits.argmax(-1)).float().mean() > 0.9
