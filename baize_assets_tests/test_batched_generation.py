"""Batched generation: batched rows answer as they would alone, each with its own limits and stops."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from baize_assets.core.chat.batched import BatchedGenerator, SamplingParams, cut_at_stop, streamable_prefix
from baize_assets.core.prompts import AI, HUMAN, Turn

from .serving_support import a_stop_string_inside, served_adapter_dir, served_chat  # noqa: F401

GREEDY = SamplingParams(max_new_tokens=24, temperature=0)
# Prompts of different lengths, so the batch is left-padded.
HISTORIES = [
    [Turn("human", "Tell me about the river.")],
    [Turn("human", "Hello")],
    [Turn("human", "What is music?"), Turn("ai", "music stone bread."), Turn("human", "And the garden and the fire?")],
    [Turn("human", "apple")],
]


def test_stops_and_streamable_prefix():
    assert cut_at_stop(f"one two{HUMAN} three", ()) == ("one two", True)
    assert cut_at_stop("one two. three", (".",)) == ("one two", True)
    assert cut_at_stop("one two", ("x",)) == ("one two", False)
    assert streamable_prefix("the answer [|Hu", ()) == "the answer"  # may still become a marker
    assert streamable_prefix("the answer EN", ("END",)) == "the answer"
    assert streamable_prefix("the answer ", ()) == "the answer"
    assert streamable_prefix("caf\ufffd", ()) == "caf"  # half a UTF-8 sequence


def test_sampling_params_are_checked():
    for bad in ({"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"repetition_penalty": 0}, {"stop": ("",)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)


def test_batched_greedy_rows_answer_as_alone_and_as_generate(served_chat):
    with BatchedGenerator(served_chat, max_batch=8, batch_wait_ms=50) as generator:
        together = generator.generate(HISTORIES, GREEDY)
        alone = [generator.generate([history], GREEDY)[0] for history in HISTORIES]
        assert generator.stats.largest_batch == len(HISTORIES)
    assert [c.text for c in together] == [c.text for c in alone]
    # The hand-written decode loop is generate()'s greedy decoding, repetition penalty included.
    assert together[0].text == served_chat.reply(HISTORIES[0], max_new_tokens=24, temperature=0)
    for completion in together:
        assert completion.finish_reason in ("stop", "length")
        assert HUMAN not in completion.text and AI not in completion.text
        assert completion.prompt_tokens > 0 and 0 < completion.completion_tokens <= 24


def test_seeded_sampling_does_not_depend_on_the_batch(served_chat):
    params = [SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=seed) for seed in range(6)]
    with BatchedGenerator(served_chat, max_batch=8, batch_wait_ms=50) as generator:
        futures = [generator.submit(HISTORIES[0], p) for p in params]
        together = [f.result().text for f in futures]
        alone = [generator.submit(HISTORIES[0], p).result().text for p in params]
    assert together == alone


def test_each_row_keeps_its_own_limit_and_stop(served_chat):
    with BatchedGenerator(served_chat, max_batch=8, batch_wait_ms=50) as generator:
        # Seeded samples: the longest of a few, whatever the tiny model answers.
        sampled = {seed: SamplingParams(max_new_tokens=40, temperature=1.0, seed=seed) for seed in range(8)}
        answers = {seed: generator.submit(HISTORIES[0], p) for seed, p in sampled.items()}
        seed, free = max(((s, f.result()) for s, f in answers.items()), key=lambda pair: len(pair[1].text))
        stop = a_stop_string_inside(free.text)
        short = generator.submit(HISTORIES[0], SamplingParams(max_new_tokens=2, temperature=1.0, seed=seed))
        stopped = generator.submit(HISTORIES[0], SamplingParams(max_new_tokens=40, temperature=1.0, seed=seed,
                                                                stop=(stop,)))
        long = generator.submit(HISTORIES[0], sampled[seed])
        short, stopped, long = short.result(), stopped.result(), long.result()
        assert generator.stats.largest_batch == 8
    assert (short.finish_reason, short.completion_tokens) == ("length", 2)
    assert stopped.finish_reason == "stop" and stop not in stopped.text and free.text.startswith(stopped.text)
    assert len(stopped.text) < len(free.text)
    assert long == free


def test_requests_join_a_running_batch_and_answer_as_alone(served_chat):
    with BatchedGenerator(served_chat, max_batch=8, batch_wait_ms=0) as generator:
        sampled = {seed: SamplingParams(max_new_tokens=40, temperature=1.0, seed=seed) for seed in range(8)}
        answers = {seed: generator.submit(HISTORIES[0], p) for seed, p in sampled.items()}
        seed = max(answers, key=lambda s: answers[s].result().completion_tokens)
        assert answers[seed].result().completion_tokens >= 6
        # A seed with which both late prompts answer in more than one token (one is their own prompt pass).
        late_params = next(
            params for params in (SamplingParams(max_new_tokens=12, temperature=1.0, seed=s) for s in range(99, 130))
            if all(generator.submit(HISTORIES[i], params).result().completion_tokens > 1 for i in (2, 1))
        )
        generator.stats.largest_batch = generator.stats.batches = 0
        late = []  # a longer and a shorter prompt, submitted once the first row shows text

        def join_late(_text: str) -> None:
            if not late:
                late.extend(generator.submit(HISTORIES[i], late_params) for i in (2, 1))

        first = generator.submit(HISTORIES[0], sampled[seed], join_late).result()
        joined = [answer.result() for answer in late]
        assert generator.stats.batches == 2 and generator.stats.largest_batch == 3
        assert first == answers[seed].result()
        assert joined == [generator.submit(HISTORIES[i], late_params).result() for i in (2, 1)]


def test_streamed_text_is_the_answer_and_max_batch_is_respected(served_chat):
    pieces: dict[int, list[str]] = {i: [] for i in range(10)}
    with BatchedGenerator(served_chat, max_batch=4, batch_wait_ms=50) as generator:
        futures = [generator.submit(HISTORIES[i % 4], GREEDY, pieces[i].append) for i in range(10)]
        answers = [f.result() for f in futures]
        assert generator.stats.largest_batch == 4 and generator.stats.batches >= 3
    for i, answer in enumerate(answers):
        assert "".join(pieces[i]) == answer.text
        assert not any(HUMAN in p or AI in p for p in pieces[i])


def test_requests_from_many_threads_share_a_batch(served_chat):
    with BatchedGenerator(served_chat, max_batch=16, batch_wait_ms=300) as generator:
        barrier = threading.Barrier(8)
        answers = [None] * 8

        def ask(i: int) -> None:
            barrier.wait()
            answers[i] = generator.submit(HISTORIES[i % 4], GREEDY).result()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert generator.stats.largest_batch == 8 and generator.stats.batches == 1
    assert all(answer is not None for answer in answers)


def test_an_abandoned_request_stops_generating(served_chat):
    with BatchedGenerator(served_chat) as generator:
        sampled = [SamplingParams(max_new_tokens=40, temperature=1.0, seed=seed) for seed in range(8)]
        whole = [generator.submit(HISTORIES[0], p) for p in sampled]
        longest = max(range(8), key=lambda i: whole[i].result().completion_tokens)
        assert whole[longest].result().completion_tokens >= 6
        submitted = Future()  # the callback runs on the generation thread, maybe before submit() returns
        answer = generator.submit(HISTORIES[0], sampled[longest], lambda _text: submitted.result().abandon())
        submitted.set_result(answer)
        dropped = answer.result()
    assert dropped.finish_reason == "abandoned"
    assert dropped.completion_tokens < whole[longest].result().completion_tokens


def test_bad_histories_fail_at_submit(served_chat):
    with BatchedGenerator(served_chat) as generator:
        with pytest.raises(ValueError, match="end with a human message"):
            generator.submit([Turn("human", "hi"), Turn("ai", "hello")], GREEDY)
        with pytest.raises(ValueError, match="too long"):
            generator.submit([Turn("human", "word " * 2000)], GREEDY)
    with pytest.raises(RuntimeError, match="closed"):
        generator.submit(HISTORIES[0], GREEDY)
