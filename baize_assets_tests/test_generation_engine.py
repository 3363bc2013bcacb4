"""The sampling engine's parts: text decoded a few tokens at a time, the slot cache, the draws, the merged adapter."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch
from peft import PeftModel
from transformers import Gemma2Config, LlamaConfig, MistralConfig, Qwen2Config
from transformers.generation import TemperatureLogitsWarper, TopPLogitsWarper

from baize_assets.core.chat.answer_text import AnswerText, cut_at_stop, decode_answer, held_token_ids
from baize_assets.core.chat.batched import BatchedGenerator, SamplingParams
from baize_assets.core.chat.chat_model import load_chat_model
from baize_assets.core.chat.decode import DecodeBatch, check_full_attention
from baize_assets.core.chat.kv_cache import SlotCache
from baize_assets.core.chat.sampler import NUCLEUS_CANDIDATES, RowMix, next_tokens, uniform_stream
from baize_assets.core.config.feedback import SamplingConfig
from baize_assets.core.feedback.sampling import sample_answers
from baize_assets.core.feedback.self_distill import FeedbackContext
from baize_assets.core.model.smollm2_base import load_smollm2_tokenizer
from baize_assets.core.prompts import HUMAN, Turn, render_conversation

from .serving_support import conversations, served_adapter_dir, served_chat  # noqa: F401
from .test_batched_generation import HISTORIES
from .tokenizer_support import TOKENIZER_KINDS, trained_tokenizer

TRICKY = "café naïve 日本語 😀 €  two  spaces\n\ttab [|AI|] done."


@pytest.fixture(scope="module", params=(*TOKENIZER_KINDS, "smollm2"))
def tokenizer(request):
    if request.param == "smollm2":
        return load_smollm2_tokenizer()
    return trained_tokenizer(request.param, [render_conversation(turns) for turns in conversations()] + [TRICKY])


def test_incremental_text_is_the_whole_decode_after_every_token(tokenizer):
    """Random ids, ids heavy in byte and special tokens, and real text shuffled: the text and the first stop
    string after each token are those of decoding every token so far."""
    held = held_token_ids(tokenizer)
    text_ids = tokenizer(TRICKY + f" {HUMAN} more", add_special_tokens=False)["input_ids"]
    pool = [*held, *text_ids]
    rng = random.Random(0)
    for trial in range(400):
        kind = trial % 3
        if kind == 0:
            ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randint(1, 40))]
        elif kind == 1:
            ids = [rng.choice(pool) if rng.random() < 0.8 else rng.randrange(len(tokenizer)) for _ in range(40)]
        else:
            ids = rng.sample(text_ids, len(text_ids))
        # The fast path is the tokenizer's own decode.
        assert decode_answer(tokenizer, ids) == tokenizer.decode(ids, skip_special_tokens=True,
                                                                 clean_up_tokenization_spaces=False)
        stop = tuple(rng.sample(["é", "wo", "s\n", "日本", "😀", " d"], rng.randint(0, 2)))
        text = AnswerText(lambda part: decode_answer(tokenizer, part), stop, held)
        for count in range(1, len(ids) + 1):
            stopped = text.append(ids[count - 1])
            whole = decode_answer(tokenizer, ids[:count])
            cut, found = cut_at_stop(whole, stop)
            assert (text.text, stopped) == (whole, found), ids[:count]
            if stopped:
                assert text.stop_at == len(cut) and text.answer() == cut.strip()
                break


def test_a_marker_split_over_tokens_stops_where_it_begins_and_the_window_stays_short(tokenizer):
    answer = "The river is cold and slow, and the fish stay deep. " * 12
    ids = tokenizer(f"{answer}{HUMAN} more", add_special_tokens=False)["input_ids"]
    decoded = []

    def decode(part: list[int]) -> str:
        decoded.append(len(part))
        return decode_answer(tokenizer, part)

    text = AnswerText(decode)
    stopped_at = next(i for i, token in enumerate(ids) if text.append(token))
    assert text.answer() == answer.strip() and text.stop_at == len(answer)
    assert decode_answer(tokenizer, ids[: stopped_at + 1]).startswith(answer + "[")  # stopped on the marker's end
    # A short window each step, never the whole answer again.
    assert len(ids) > 100 and max(decoded) <= 8 and sum(decoded) < 4 * len(ids)


def test_the_slot_cache_writes_in_place_and_doubles_when_full():
    cache = SlotCache(layers=1, max_rows=4)
    cache.reserve(3, 4)
    prompt = torch.randn(3, 2, 4, 8)
    cache.plan_block(slice(0, 3), 0, 4)
    keys, _ = cache.update(prompt, -prompt, 0)
    assert torch.equal(keys, prompt)
    written = [prompt[i] for i in range(3)]  # each row's columns, as a reference
    buffers = set()
    for step in range(40):  # each row writes its own column: row i is i columns further on
        new = torch.randn(3, 2, 1, 8)
        for i in range(3):
            written[i] = torch.cat([written[i], torch.zeros(2, 4 + step + i - written[i].shape[1], 8), new[i]], dim=1)
        columns = torch.tensor([4 + step + i for i in range(3)])
        cache.reserve(3, 4 + step + 3)
        cache.plan_columns(columns, 4 + step + 3)
        keys, values = cache.update(new, -new, 0)
        buffers.add(cache.layers[0].keys.data_ptr())
        for i in range(3):
            assert torch.equal(keys[i, :, : written[i].shape[1]], written[i])
            assert torch.equal(values[i, :, : written[i].shape[1]], -written[i])
    assert cache.capacity == (3, 64) and len(buffers) == 4  # 4 -> 8 -> 16 -> 32 -> 64 columns
    cache.move_rows([(2, 0)], written[2].shape[1])
    assert torch.equal(cache.layers[0].keys[0, :, : written[2].shape[1]], written[2])
    assert torch.equal(cache.layers[0].keys[1, :, : written[1].shape[1]], written[1])


@dataclass
class Row:
    prompt_ids: list[int]
    max_new_tokens: int
    params: SamplingParams


GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0)


def test_rows_joining_and_leaving_decode_as_generate_does_alone(served_chat):
    model, tokenizer = served_chat.model, served_chat.tokenizer

    def forward(inputs, positions, mask, cache):
        with torch.no_grad():
            output = model(input_ids=inputs, position_ids=positions, attention_mask=mask, cache=cache, use_cache=True)
        return output.logits[:, -1].float()

    prompts = [served_chat.prompt_ids(history) for history in HISTORIES[:3]]
    batch = DecodeBatch(forward, model.config.num_hidden_layers, 4, len(tokenizer), tokenizer.pad_token_id, "cpu")
    batch.cache.reserve(4, 256)
    rows = [Row(prompt, 10, GREEDY) for prompt in prompts]
    tokens = {id(row): [] for row in rows}

    def note(first: int, new: torch.Tensor) -> None:
        for row, token in zip(batch.requests[first:], new.tolist()):
            tokens[id(row)].append(token)

    note(0, batch.join(rows[:2]))
    note(0, batch.step())
    running = batch.cache.layers[0].keys
    before = running[:2, :, :8].clone()
    note(2, batch.join(rows[2:]))  # a third row joins the two running ones
    assert batch.cache.layers[0].keys is running and torch.equal(running[:2, :, :8], before)
    assert batch.reused_tokens >= len(prompts[0]) // 2  # the Baize system prompt, computed once
    while len(batch):
        note(0, batch.step())
        batch.drop([i for i, row in enumerate(batch.requests) if len(tokens[id(row)]) == row.max_new_tokens])
    for row, prompt in zip(rows, prompts):
        alone = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                               repetition_penalty=1.0, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
        assert tokens[id(row)] == alone[0, len(prompt):].tolist()


def _reference(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """generate()'s probabilities after its temperature and top-p warpers."""
    warped = TemperatureLogitsWarper(temperature)(None, logits[None].clone())
    if top_p < 1:
        warped = TopPLogitsWarper(top_p)(None, warped)
    return warped.softmax(dim=-1)[0]


@pytest.mark.parametrize(("vocab", "temperature", "top_p"), [(50, 1.0, 0.9), (50, 0.7, 1.0), (600, 1.3, 0.95)])
def test_draws_follow_generates_distribution_and_no_other_row(vocab, temperature, top_p):
    """Evenly spaced uniform numbers drawn through a row's distribution hit each token as often as generate()'s
    warped probability says (to one draw in the count). With 600 near-equal tokens the nucleus is wider than
    the first candidates from topk, and the row's draw goes on to the whole vocabulary."""
    generator = torch.Generator().manual_seed(vocab)
    logits = torch.randn(vocab, generator=generator) * (3 if vocab < NUCLEUS_CANDIDATES[0] else 0.1)
    draws = 6000
    uniform = (torch.arange(draws) + 0.5) / draws
    rows = logits.expand(draws, vocab)
    settings = [torch.full((draws,), value) for value in (temperature, top_p, 1.0)]
    mix = RowMix(penalised=False, greedy=False, whole=top_p == 1, nucleus=top_p < 1)
    tokens = next_tokens(rows, torch.zeros(draws, vocab, dtype=torch.bool), *settings, uniform, mix)
    counts = torch.bincount(tokens, minlength=vocab)
    expected = _reference(logits, temperature, top_p) * draws
    assert (counts - expected).abs().max() <= 1.5
    assert counts[expected == 0].sum() == 0
    # A row draws the same token whatever rows share its batch.
    other = torch.randn(3, vocab, generator=generator)
    mixed = torch.cat([other, logits[None]])
    mixed_settings = [torch.cat([torch.tensor([0.0, 1.0, 0.5]), s[:1]]) for s in settings[:2]] + [torch.ones(4)]
    mixed_mix = RowMix(penalised=False, greedy=True, whole=True, nucleus=True)
    for u in (0.01, 0.5, 0.99):
        together = next_tokens(mixed, torch.zeros(4, vocab, dtype=torch.bool), *mixed_settings,
                               torch.tensor([0.3, 0.6, 0.9, u]), mixed_mix)
        alone = next_tokens(logits[None], torch.zeros(1, vocab, dtype=torch.bool), *(s[:1] for s in settings),
                            torch.tensor([u]), mix)
        assert together[3] == alone[0]


def test_a_seed_gives_the_same_numbers_whatever_the_token_limit():
    short = uniform_stream(SamplingParams(seed=7), 5)
    assert torch.equal(uniform_stream(SamplingParams(seed=7), 50)[:5], short)
    assert not torch.equal(uniform_stream(SamplingParams(seed=8), 5), short)
    assert len(uniform_stream(SamplingParams(temperature=0, seed=7), 5)) == 0  # greedy draws nothing


def test_the_merged_adapter_answers_as_the_unmerged_one(served_adapter_dir, served_chat):
    merged = load_chat_model(served_adapter_dir, merge=True)
    assert not isinstance(merged.model, PeftModel) and isinstance(served_chat.model, PeftModel)
    ids = torch.tensor([served_chat.prompt_ids(HISTORIES[0])])
    with torch.no_grad():
        adapted = served_chat.model(input_ids=ids).logits
        with served_chat.model.disable_adapter():  # the unmerged model still has its base (the evaluation's path)
            base = served_chat.model(input_ids=ids).logits
        merged_logits = merged.model(input_ids=ids).logits
    assert torch.allclose(merged_logits, adapted, atol=1e-4) and not torch.allclose(merged_logits, base, atol=1e-2)
    greedy = SamplingParams(max_new_tokens=16, temperature=0)
    with BatchedGenerator(merged) as fast, BatchedGenerator(served_chat) as slow:
        assert [c.text for c in fast.generate(HISTORIES, greedy)] == [c.text for c in slow.generate(HISTORIES, greedy)]
    assert merged.reply(HISTORIES[2], max_new_tokens=16, temperature=0) == served_chat.reply(
        HISTORIES[2], max_new_tokens=16, temperature=0)


def test_v2_samples_depend_on_the_seed_id_and_index_only(served_adapter_dir):
    contexts = [FeedbackContext(f"s{i}", "synthetic", 0, [Turn("human", f"Tell me about the {word}.")])
                for i, word in enumerate(("river", "fire", "garden"))]
    frames = [sample_answers(served_adapter_dir, contexts[::order], SamplingConfig(max_new_tokens=12, batch_size=size),
                             log=lambda _: None)
              for order, size in ((1, 2), (-1, 16))]
    columns = ["seed_id", "sample_index", "answer"]
    first, second = (frame[columns].sort_values(columns[:2]).reset_index(drop=True) for frame in frames)
    assert first.equals(second) and first["answer"].nunique() > 1


def test_models_whose_attention_the_masks_cannot_express_are_refused():
    check_full_attention(LlamaConfig(), 2048)
    check_full_attention(Qwen2Config(sliding_window=1024, use_sliding_window=False), 2048)
    check_full_attention(Gemma2Config(sliding_window=4096), 2048)  # a window wider than any history
    with pytest.raises(ValueError, match="sliding window is 1024"):
        check_full_attention(MistralConfig(sliding_window=1024), 2048)
    with pytest.raises(ValueError, match="sliding window is 512"):
        check_full_attention(Gemma2Config(sliding_window=512), 2048)
    with pytest.raises(ValueError, match="linear_attention"):
        check_full_attention(LlamaConfig(layer_types=["full_attention", "linear_attention"], num_hidden_layers=2),
                             2048)
