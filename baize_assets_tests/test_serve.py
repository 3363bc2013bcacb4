"""``baize serve`` over real HTTP, with the ``openai`` client as the caller."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from baize_assets.cli import main
from baize_assets.core.chat.server import AdapterServer
from baize_assets.core.prompts import AI, HUMAN, Turn

from .serving_support import (  # noqa: F401
    a_stop_string_inside,
    served_adapter_dir,
    served_chat,
    served_on_each_tokenizer,
)

QUESTION = [{"role": "user", "content": "Tell me about the river."}]


@pytest.fixture(scope="module")
def server(served_adapter_dir, served_chat):
    # A long gathering window, so that concurrent test requests surely meet in one batch.
    with AdapterServer(served_adapter_dir, batch_wait_ms=300, chat=served_chat) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)


def post(server, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def stats(server) -> dict:
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/stats") as response:
        return json.loads(response.read())


def test_models_lists_the_adapter(client, server):
    assert server.model_name == "baize_served"
    assert [m.id for m in client.models.list().data] == ["baize_served"]
    assert client.models.retrieve("baize_served").owned_by == "baize"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_completion_with_n_choices_and_usage(client, server):
    reply = client.chat.completions.create(model=server.model_name, messages=QUESTION, temperature=0, max_tokens=20,
                                           n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    texts = {c.message.content for c in reply.choices}
    assert len(texts) == 1 and texts.pop()  # greedy: the same answer three times
    assert all(c.finish_reason in ("stop", "length") and c.message.role == "assistant" for c in reply.choices)
    usage = reply.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 60
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    answer = reply.choices[0].message.content
    assert HUMAN not in answer and AI not in answer


def test_a_system_message_replaces_the_baize_system_prompt(client, server):
    def prompt_tokens(system: str | None) -> int:
        messages = QUESTION if system is None else [{"role": "system", "content": system}, *QUESTION]
        reply = client.chat.completions.create(model=server.model_name, messages=messages, temperature=0, max_tokens=1)
        return reply.usage.prompt_tokens

    baize = prompt_tokens(None)
    # Shorter than the Baize system prompt: it replaced it rather than being added to it.
    assert prompt_tokens("Be brief.") < baize < prompt_tokens("You are a patient tutor. " * 12)


def test_short_limit_and_stop_string(client, server):
    # Seeds 0-7 (choice i has seed + i): the longest answer, whatever the tiny model says.
    samples = client.chat.completions.create(model=server.model_name, messages=QUESTION, max_tokens=30, n=8, seed=0)
    longest = max(samples.choices, key=lambda choice: len(choice.message.content))
    text, settings = longest.message.content, dict(model=server.model_name, messages=QUESTION, seed=longest.index)
    short = client.chat.completions.create(max_tokens=1, **settings)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 1
    stop = a_stop_string_inside(text)
    cut = client.chat.completions.create(max_tokens=30, stop=[stop], **settings)
    assert cut.choices[0].finish_reason == "stop" and text.startswith(cut.choices[0].message.content)
    assert len(cut.choices[0].message.content) < len(text) and stop not in cut.choices[0].message.content


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "top_p": 0.9, "seed": 7}])
def test_stream_reassembles_into_the_plain_answer(client, server, sampling):
    settings = dict(model=server.model_name, messages=QUESTION, max_tokens=24, **sampling)
    plain = client.chat.completions.create(**settings)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **settings))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert len({c.id for c in chunks}) == 1


def test_stream_wire_format_ends_with_done(server):
    body = json.dumps({"model": server.model_name, "messages": QUESTION, "max_tokens": 8, "stream": True, "n": 2})
    request = urllib.request.Request(f"{server.base_url}/chat/completions", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.read().decode().split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    finished = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(finished) == [0, 1]


def test_concurrent_requests_are_generated_in_one_batch(client, server):
    before = stats(server)
    barrier = threading.Barrier(8)
    answers = [None] * 8

    def ask(i: int) -> None:
        barrier.wait()
        answers[i] = client.chat.completions.create(
            model=server.model_name, messages=[{"role": "user", "content": f"Tell me about the {i}."}],
            temperature=0, max_tokens=12,
        ).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = stats(server)
    assert all(answer is not None for answer in answers)
    assert after["largest_batch"] == 8
    assert after["rows"] - before["rows"] == 8 and after["batches"] - before["batches"] < 8


def test_a_client_that_goes_away_stops_its_generation(client, server):
    # Near-uniform sampling: the longest of eight seeds runs on for a while.
    settings = {"model": server.model_name, "messages": QUESTION, "max_tokens": 600, "temperature": 2.0}
    samples = client.chat.completions.create(n=8, seed=0, **settings)
    longest = max(samples.choices, key=lambda choice: len(choice.message.content))
    # Generated to its end, that answer takes one step per token.
    answer_steps = client.chat.completions.create(seed=longest.index, **settings).usage.completion_tokens
    assert answer_steps >= 40
    body = json.dumps({**settings, "seed": longest.index, "stream": True}).encode()
    before = stats(server)
    with socket.create_connection((server.host, server.port)) as connection:
        # The client leaves abruptly (a reset, as a killed process's socket does), not by a
        # polite close the server would only notice on its next writes.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert connection.recv(100).startswith(b"HTTP/1.1 200")
    # The request is dropped either while it waits for its batch (never started) or at the
    # next step of the batch running it (abandoned); once the server is idle, it has not
    # taken anywhere near the answer's steps.
    after = _when_idle(server)
    started = after["rows"] - before["rows"]
    assert (started == 0) or (after["abandoned"] == before["abandoned"] + 1), (before, after)
    assert after["steps"] - before["steps"] < answer_steps // 2, "the answer was generated for nobody"


def _when_idle(server, quiet_s: float = 1.0, timeout_s: float = 30) -> dict:
    """The server's stats once its forward passes have stopped for ``quiet_s`` (over its 0.3 s gathering window)."""
    deadline = time.monotonic() + timeout_s
    last = stats(server)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = stats(server)
        if now["steps"] == last["steps"]:
            return now
        last = now
    raise AssertionError(f"the server was still generating after {timeout_s} s: {last}")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        ({"model": None}, "model"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0]"),
        ({"messages": [*QUESTION, {"role": "assistant", "content": "hi"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "word " * 2000}]}, "messages"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 0}, "n"),
        ({"n": True}, "n"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"seed": "one"}, "seed"),
        ({"stop": [1]}, "stop"),
        ({"stream": "yes"}, "stream"),
        ({"messages": [*QUESTION, {"role": "system", "content": "Be brief."}]}, f"messages[{len(QUESTION)}]"),
    ],
)
def test_bad_requests_get_an_openai_error_naming_the_field(server, body, param):
    if isinstance(body, dict):
        body = json.dumps({"model": server.model_name, "messages": QUESTION, **body}).encode()
    status, error = post(server, body)
    assert status == 400
    assert error["error"]["type"] == "invalid_request_error" and error["error"]["param"] == param
    assert error["error"]["message"]


def test_the_client_sees_bad_requests_and_unknown_models(client, server):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=server.model_name, messages=QUESTION, temperature=5)
    with pytest.raises(openai.NotFoundError, match="gpt-4"):
        client.chat.completions.create(model="gpt-4", messages=QUESTION)


def test_cli_rejects_what_is_not_an_adapter(tmp_path, capsys):
    assert main(["serve", "--adapter", str(tmp_path / "missing"), "--port", "0"]) == 1
    assert str(tmp_path / "missing") in capsys.readouterr().err
    (tmp_path / "adapter_config.json").write_text("{broken", encoding="utf-8")
    assert main(["serve", "--adapter", str(tmp_path), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "Traceback" not in err


def test_cli_names_a_taken_port(served_adapter_dir, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--adapter", str(served_adapter_dir), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port}" in err and "already in use" in err and "Traceback" not in err


def test_every_tokenizer_layout_serves_the_template_ids_and_clean_answers(served_on_each_tokenizer):
    """The ids vLLM would render from the saved template are the ones served, and answers decode cleanly."""
    from transformers import AutoTokenizer

    adapter_dir, chat = served_on_each_tokenizer
    question = Turn("human", QUESTION[0]["content"])
    template_ids = AutoTokenizer.from_pretrained(adapter_dir).apply_chat_template(
        QUESTION, add_generation_prompt=True, return_dict=False
    )
    assert template_ids == chat.prompt_ids([question])
    with AdapterServer(adapter_dir, chat=chat) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)
        settings = dict(model=server.model_name, messages=QUESTION, temperature=0, max_tokens=24)
        plain = client.chat.completions.create(**settings)
        answer = plain.choices[0].message.content
        assert plain.usage.prompt_tokens == len(template_ids)
        streamed = []  # baize chat's answer, as it prints it
        assert answer == chat.reply([question], max_new_tokens=24, temperature=0, stream=streamed.append)
        assert "".join(streamed) == answer
        assert answer and HUMAN not in answer and AI not in answer and "\ufffd" not in answer
        chunks = list(client.chat.completions.create(stream=True, **settings))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
        stop = a_stop_string_inside(answer)
        cut = client.chat.completions.create(stop=[stop], **settings).choices[0]
        assert cut.finish_reason == "stop" and answer.startswith(cut.message.content)
        assert stop not in cut.message.content


@pytest.mark.slow
def test_baize_serve_process_answers_and_stops(served_adapter_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    baize = Path(sys.executable).with_name("baize")
    process = subprocess.Popen([str(baize), "serve", "--adapter", str(served_adapter_dir), "--port", str(port)],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed", max_retries=0)
        deadline = time.monotonic() + 60
        while True:
            try:
                models = client.models.list()
                break
            except openai.APIConnectionError:
                assert process.poll() is None and time.monotonic() < deadline, "baize serve did not start"
                time.sleep(0.2)
        assert [m.id for m in models.data] == ["baize_served"]
        reply = client.chat.completions.create(model="baize_served", messages=QUESTION, max_tokens=8, temperature=0)
        assert reply.choices[0].message.content
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode in (0, -15)
    assert f"on http://127.0.0.1:{port}/v1" in err
