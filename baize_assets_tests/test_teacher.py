"""The simulated teacher, driven over real HTTP by the real ``openai`` client."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from baize_assets.core.prompts import RAW_AI, RAW_HUMAN, self_chat_prompt
from baize_assets.teacher.server import ALL_FAULT_KINDS, DEFAULT_FAULT_KINDS, DEFAULT_MODEL, OWNER, SimulatedTeacher

API_KEY = "sk-test-simulated-key"
SEED = "How do volcanoes form on the ocean floor?"
TURN_LINE = re.compile(r"^\[(Human|AI)\] \S")


def make_client(teacher: SimulatedTeacher, **kwargs) -> openai.OpenAI:
    kwargs.setdefault("api_key", API_KEY)
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 5.0)
    return openai.OpenAI(base_url=teacher.base_url, **kwargs)


def raw_request(teacher: SimulatedTeacher, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """A request outside the openai client, for what the client never sends."""
    connection = http.client.HTTPConnection(teacher.host, teacher.port, timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def self_chat(client: openai.OpenAI, seed: str = SEED, **kwargs):
    kwargs.setdefault("temperature", 0.7)
    return client.chat.completions.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": self_chat_prompt(seed)}], **kwargs
    )


@pytest.fixture(scope="module")
def teacher():
    with SimulatedTeacher(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def client(teacher):
    with make_client(teacher) as c:
        yield c


def faulty_teacher(kind: str, **kwargs) -> SimulatedTeacher:
    return SimulatedTeacher(fault_rate=1.0, fault_kinds=[kind], **kwargs)


# --------------------------------------------------------------------------- content


def test_self_chat_completion_is_a_deterministic_transcript_about_the_seed(client):
    first = self_chat(client)
    second = self_chat(client)
    text = first.choices[0].message.content

    assert first.object == "chat.completion"
    assert first.model == DEFAULT_MODEL
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].finish_reason == "stop"
    assert text == second.choices[0].message.content
    # It continues after the prompt's example exchange: human first, strictly alternating.
    lines = text.split("\n")
    assert all(TURN_LINE.match(line) for line in lines), text
    roles = [line.split("]")[0] + "]" for line in lines]
    assert roles == [RAW_HUMAN, RAW_AI] * (len(lines) // 2)
    assert 2 <= len(lines) // 2 <= 4
    for word in ("volcanoes", "ocean", "floor"):
        assert word in text
    # Answers are 2-4 sentences and the first one says it is a placeholder.
    answers = [line.removeprefix(f"{RAW_AI} ") for line in lines[1::2]]
    assert all(2 <= answer.count(". ") + 1 <= 4 for answer in answers), answers
    assert "simulated" in answers[0] or "placeholder" in answers[0]
    # Usage follows the documented approximation: ceil(words * 4 / 3).
    usage = first.usage
    assert usage.completion_tokens == math.ceil(len(text.split()) * 4 / 3)
    assert usage.prompt_tokens == math.ceil(len(self_chat_prompt(SEED).split()) * 4 / 3)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_transcripts_vary_with_seed_and_temperature(client):
    seeds = [f"What should I know about topic number {i} and gardening?" for i in range(16)]
    texts = [self_chat(client, seed).choices[0].message.content for seed in seeds]
    assert len(set(texts)) == len(texts)
    exchange_counts = {text.count(RAW_HUMAN) for text in texts}
    assert exchange_counts <= {2, 3, 4} and len(exchange_counts) > 1
    hot = self_chat(client, temperature=1.3).choices[0].message.content
    assert hot != self_chat(client).choices[0].message.content


def test_plain_chat_gets_a_short_placeholder_answer(client):
    response = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Tell me about honeybees please"}]
    )
    text = response.choices[0].message.content
    assert "honeybees" in text and DEFAULT_MODEL in text
    assert RAW_HUMAN not in text and RAW_AI not in text
    assert len(text.split()) < 40


def test_streaming_matches_non_streaming_and_reports_usage(client):
    expected = self_chat(client)
    chunks = list(self_chat(client, stream=True, stream_options={"include_usage": True}))

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 3
    streamed = "".join(c.choices[0].delta.content for c in content_chunks)
    assert streamed == expected.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == expected.usage.model_dump()

    without_usage = list(self_chat(client, stream=True))
    assert all(c.usage is None for c in without_usage)
    assert without_usage[-1].choices[0].finish_reason == "stop"


def test_models_are_listed_as_simulated(client):
    models = client.models.list().data
    assert [m.id for m in models] == [DEFAULT_MODEL]
    assert models[0].owned_by == OWNER == "baize-simulation"
    assert client.models.retrieve(DEFAULT_MODEL).id == DEFAULT_MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_token_limit_cuts_with_finish_reason_length(client, param):
    full = self_chat(client).choices[0].message.content
    response = self_chat(client, **{param: 10})
    text = response.choices[0].message.content
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens <= 10
    assert len(text.split()) == 7  # the most words with ceil(words * 4 / 3) <= 10
    assert full.startswith(text)


def test_stop_cuts_before_the_first_marker(client):
    full = self_chat(client).choices[0].message.content
    for stop in (["[AI]"], "[AI]", ["zzz", "[AI]"]):
        response = self_chat(client, stop=stop)
        text = response.choices[0].message.content
        assert text == full.split(RAW_AI)[0]
        assert text.startswith(RAW_HUMAN) and RAW_AI not in text
        assert response.choices[0].finish_reason == "stop"
    # With several stop sequences present, the earliest one wins.
    earliest = self_chat(client, stop=[RAW_AI, "\n"]).choices[0].message.content
    assert earliest == full.split("\n")[0]


# --------------------------------------------------------------------------- errors


def test_wrong_key_is_rejected_without_echoing_it(teacher):
    with make_client(teacher, api_key="sk-wrong-key") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            self_chat(client)
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "invalid_api_key"
    assert "sk-wrong-key" not in caught.value.response.text
    assert API_KEY not in caught.value.response.text


def test_any_key_is_accepted_without_a_configured_key():
    with SimulatedTeacher() as server, make_client(server, api_key="anything") as client:
        assert RAW_AI in self_chat(client).choices[0].message.content


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "model_not_found"
    assert set(caught.value.response.json()["error"]) == {"message", "type", "param", "code"}


def test_n_other_than_one_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as caught:
        self_chat(client, n=2)
    assert caught.value.body["param"] == "n"


def test_bad_bodies_and_missing_auth_get_openai_errors(teacher):
    path = "/v1/chat/completions"
    auth = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    for body in (b"", b"{not json", b"[1, 2]"):
        status, payload = raw_request(teacher, "POST", path, body, auth)
        assert status == 400
        assert payload["error"]["type"] == "invalid_request_error"
    valid = json.dumps({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    status, payload = raw_request(teacher, "POST", path, valid, {"Content-Type": "application/json"})
    assert status == 401
    assert payload["error"]["code"] == "invalid_api_key"


# --------------------------------------------------------------------------- faults and latency


def test_rate_limit_fault_gives_429_with_retry_after():
    with faulty_teacher("rate_limit", retry_after_s=2) as server, make_client(server) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            self_chat(client)
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.body["code"] == "rate_limit_exceeded"
    assert server.stats()["requests_by_outcome"] == {"rate_limit": 1}


def test_server_error_fault_gives_500():
    with faulty_teacher("server_error") as server, make_client(server) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            self_chat(client)
    assert caught.value.status_code == 500
    assert caught.value.body["type"] == "server_error"


def test_hang_fault_hits_the_client_timeout():
    with faulty_teacher("hang", hang_s=2) as server, make_client(server, timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            self_chat(client)
        assert time.monotonic() - started < 1.5
    assert server.stats()["requests_by_outcome"] == {"hang": 1}


def test_malformed_fault_gives_text_without_markers():
    with faulty_teacher("malformed") as server, make_client(server) as client:
        response = self_chat(client)
    text = response.choices[0].message.content
    assert text and RAW_HUMAN not in text and RAW_AI not in text
    assert response.choices[0].finish_reason == "stop"


def test_fault_schedule_is_reproducible_from_the_seed():
    def outcomes(fault_seed: int) -> list[str]:
        kinds = ["rate_limit", "server_error"]
        with SimulatedTeacher(fault_rate=0.5, fault_kinds=kinds, fault_seed=fault_seed) as server:
            with make_client(server) as client:
                seen = []
                for _ in range(20):
                    try:
                        self_chat(client)
                        seen.append("ok")
                    except openai.RateLimitError:
                        seen.append("rate_limit")
                    except openai.InternalServerError:
                        seen.append("server_error")
        assert server.stats()["requests_by_outcome"] == {o: seen.count(o) for o in set(seen)}
        return seen

    first = outcomes(7)
    assert first == outcomes(7)
    assert set(first) == {"ok", "rate_limit", "server_error"}
    assert first != outcomes(8)


def test_default_fault_kinds_are_the_original_four_and_unknown_kinds_are_refused():
    assert DEFAULT_FAULT_KINDS == ("rate_limit", "server_error", "hang", "malformed")
    assert SimulatedTeacher(fault_rate=0.5).fault_kinds == tuple(sorted(DEFAULT_FAULT_KINDS))
    with pytest.raises(ValueError, match="slow_drip"):  # the message lists every kind
        SimulatedTeacher(fault_rate=0.5, fault_kinds=["nonsense"])


def chat_body() -> bytes:
    messages = [{"role": "user", "content": self_chat_prompt(SEED)}]
    return json.dumps({"model": DEFAULT_MODEL, "messages": messages}).encode()


def raw_answer(server: SimulatedTeacher) -> tuple[int, int, bytes]:
    """Status, declared Content-Length and body of one chat completion, read outside the openai client."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.request("POST", "/v1/chat/completions", chat_body(), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, int(response.getheader("Content-Length")), response.read()
    finally:
        connection.close()


def answer_of(kind: str) -> tuple[int, bytes]:
    with faulty_teacher(kind) as server:
        status, declared, body = raw_answer(server)
    assert status == 200 and declared == len(body)
    return status, body


def test_broken_body_faults_send_what_their_names_say():
    assert json.loads(answer_of("empty_choices")[1])["choices"] == []
    assert "message" not in json.loads(answer_of("no_message")[1])["choices"][0]
    tool_call = json.loads(answer_of("tool_calls")[1])["choices"][0]
    assert tool_call["message"]["content"] is None and tool_call["finish_reason"] == "tool_calls"
    assert tool_call["message"]["tool_calls"][0]["function"]["name"]
    not_a_completion = json.loads(answer_of("not_a_completion")[1])
    assert not isinstance(not_a_completion, dict) or "choices" not in not_a_completion
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer_of("invalid_json")[1])  # cut short, with a Content-Length that matches the cut
    with pytest.raises(UnicodeDecodeError):
        answer_of("non_utf8")[1].decode("utf-8")


def test_short_body_closes_the_connection_before_its_content_length():
    with faulty_teacher("short_body") as server:
        with pytest.raises(http.client.IncompleteRead):
            raw_answer(server)


def test_slow_drip_sends_a_whole_answer_a_few_bytes_at_a_time():
    with faulty_teacher("slow_drip", drip_interval_s=0.01) as server:
        started = time.monotonic()
        _, declared, body = raw_answer(server)
        elapsed = time.monotonic() - started
    assert len(body) == declared and json.loads(body)["choices"][0]["message"]["content"]
    assert elapsed >= (len(body) // 16 - 1) * 0.01


def test_quota_content_filter_and_oversized_faults_over_the_openai_client():
    with faulty_teacher("quota_402") as server, make_client(server) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            self_chat(client)
    assert caught.value.status_code == 402 and caught.value.body["code"] == "insufficient_quota"
    with SimulatedTeacher() as server, make_client(server) as client:
        full = self_chat(client).choices[0].message.content
    with faulty_teacher("content_filter") as server, make_client(server) as client:
        filtered = self_chat(client).choices[0]
    assert filtered.finish_reason == "content_filter" and full.startswith(filtered.message.content)
    assert len(filtered.message.content) < len(full)
    with faulty_teacher("oversized", oversized_chars=1000) as server, make_client(server) as client:
        assert len(self_chat(client).choices[0].message.content) == 1000


def test_scripted_replies_are_cut_like_any_answer_and_raw_bytes_are_sent_verbatim():
    with SimulatedTeacher(scripted_reply=lambda seed: f"[Human] about {seed}\n[AI] scripted") as server, \
            make_client(server) as client:
        assert self_chat(client).choices[0].message.content == f"[Human] about {SEED}\n[AI] scripted"
        assert self_chat(client, stop=[RAW_AI]).choices[0].message.content == f"[Human] about {SEED}\n"
        server.scripted_reply = lambda message: b"caf\xc3\xa9 \\u00e9"
        _, _, body = raw_answer(server)
        assert json.loads(body)["choices"][0]["message"]["content"] == "café é"
        server.scripted_reply = lambda message: b'"]'
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw_answer(server)[2])


def test_latency_is_added_to_each_request():
    with SimulatedTeacher(latency_s=0.3) as server, make_client(server) as client:
        started = time.monotonic()
        self_chat(client)
        assert time.monotonic() - started >= 0.3


def test_success_carries_rate_limit_headers(client):
    raw = client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    for name in ("limit-requests", "remaining-requests", "limit-tokens", "remaining-tokens"):
        assert int(raw.headers[f"x-ratelimit-{name}"]) > 0
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < int(raw.headers["x-ratelimit-limit-tokens"])


# --------------------------------------------------------------------------- counters and connections


def test_counters_are_exact_under_concurrency_and_served_as_stats():
    with SimulatedTeacher(api_key=API_KEY) as server, make_client(server) as client:
        with ThreadPoolExecutor(max_workers=8) as pool:
            texts = list(pool.map(lambda _: self_chat(client).choices[0].message.content, range(24)))
        assert len(set(texts)) == 1
        client.models.list()
        status, stats = raw_request(server, "GET", "/stats", headers={"Authorization": f"Bearer {API_KEY}"})
    assert status == 200
    assert stats["requests_total"] == 26  # 24 completions, 1 model list, this /stats
    assert stats["requests_by_path"] == {"/v1/chat/completions": 24, "/v1/models": 1, "/stats": 1}
    assert stats["requests_by_outcome"] == {"ok": 26}
    assert server.stats()["requests_total"] == 26


def test_keep_alive_reuses_one_connection():
    with SimulatedTeacher() as server, make_client(server) as client:
        for _ in range(3):
            self_chat(client)
            client.models.list()
        assert server.stats()["connections_total"] == 1


def test_streamed_response_is_framed_so_the_connection_stays_usable():
    # The openai client drops a connection after [DONE] without reading the end of the
    # body, so check the chunked framing with a client that reads it all, then reuses it.
    body = json.dumps({"model": DEFAULT_MODEL, "stream": True,
                       "messages": [{"role": "user", "content": self_chat_prompt(SEED)}]}).encode()
    with SimulatedTeacher() as server:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
        try:
            connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.getheader("Content-Type").startswith("text/event-stream")
            assert response.getheader("Transfer-Encoding") == "chunked"
            events = response.read().decode().split("\n\n")
            assert events[-2:] == ["data: [DONE]", ""]
            connection.request("GET", "/v1/models")
            assert json.loads(connection.getresponse().read())["data"][0]["id"] == DEFAULT_MODEL
        finally:
            connection.close()
        assert server.stats()["connections_total"] == 1


def test_stopped_server_refuses_pooled_connections():
    server = SimulatedTeacher().start()
    with make_client(server) as client:
        self_chat(client)
        server.stop()
        with pytest.raises(openai.APIConnectionError):
            self_chat(client)


# --------------------------------------------------------------------------- command line


def test_module_entry_point_serves_and_stops_on_sigterm():
    secret = "sk-cli-secret-key"
    process = subprocess.Popen(
        [sys.executable, "-m", "baize_assets.teacher", "--port", "0", "--api-key", secret,
         "--latency-ms", "1", "--fault-rate", "0", "--faults", ",".join(ALL_FAULT_KINDS),
         "--drip-interval-s", "0.1", "--oversized-chars", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        base_url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url), base_url
        with openai.OpenAI(base_url=base_url, api_key=secret, max_retries=0, timeout=5) as client:
            assert RAW_AI in self_chat(client).choices[0].message.content
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert secret not in base_url + stdout + stderr


# --------------------------------------------------------------------------- turn by turn and enforced limits


def test_turn_prompt_gets_the_next_human_turn_then_the_end_marker(client):
    from baize_assets.core.corpus.parse import parse_transcript
    from baize_assets.core.prompts import RAW_END, self_chat_turn_prompt

    whole = self_chat(client, temperature=1.0).choices[0].message.content
    turns = parse_transcript(whole).turns
    dialogue = []
    for index in range(0, len(turns), 2):
        reply = client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": self_chat_turn_prompt(SEED, dialogue)}],
            stop=[RAW_AI],
        )
        assert reply.choices[0].message.content.strip() == f"{RAW_HUMAN} {turns[index].text}"
        dialogue += turns[index : index + 2]
    done = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": self_chat_turn_prompt(SEED, dialogue)}],
        stop=[RAW_AI],
    )
    assert done.choices[0].message.content == f"{RAW_HUMAN} {RAW_END}"


def test_enforced_request_limit_is_advertised_and_refused_beyond():
    with SimulatedTeacher(requests_per_window=2, rate_window_s=30) as server, make_client(server) as client:
        for remaining in (1, 0):
            raw = client.chat.completions.with_raw_response.create(
                model=DEFAULT_MODEL, messages=[{"role": "user", "content": "hi"}]
            )
            assert raw.headers["x-ratelimit-limit-requests"] == "2"
            assert raw.headers["x-ratelimit-remaining-requests"] == str(remaining)
            assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
        with pytest.raises(openai.RateLimitError) as refused:
            self_chat(client)
        assert 0 < float(refused.value.response.headers["retry-after"]) <= 30
        assert server.stats()["requests_by_outcome"]["rate_limited_by_limit"] == 1


# --------------------------------------------------------------------------- batch API


def batch_input(seeds: list[str], **body) -> bytes:
    return "".join(json.dumps({"custom_id": f"seed-{n}", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": DEFAULT_MODEL, "temperature": 0.7,
                                        "messages": [{"role": "user", "content": self_chat_prompt(seed)}], **body}})
                   + "\n" for n, seed in enumerate(seeds)).encode()


def finished(client: openai.OpenAI, batch_id: str):
    deadline = time.monotonic() + 10
    while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "failed", "expired", "cancelled"):
        assert batch.status in ("validating", "in_progress", "finalizing", "cancelling")
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return batch


def test_files_upload_as_multipart_and_download_byte_for_byte(client):
    data = batch_input([SEED, "Why is the sky blue?"])
    uploaded = client.files.create(file=("requests.jsonl", data), purpose="batch")
    assert (uploaded.object, uploaded.purpose, uploaded.status, uploaded.bytes) == ("file", "batch", "processed",
                                                                                     len(data))
    assert uploaded.id.startswith("file-") and uploaded.filename == "requests.jsonl"
    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).content == data
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-missing")


def test_a_batch_answers_each_line_like_the_chat_endpoint(teacher, client):
    uploaded = client.files.create(file=("requests.jsonl", batch_input([SEED, "Why is the sky blue?"])),
                                   purpose="batch")
    with SimulatedTeacher(api_key=API_KEY, batch_completion_delay_s=0.2) as slow, make_client(slow) as slow_client:
        created = slow_client.batches.create(
            input_file_id=slow_client.files.create(file=("r.jsonl", batch_input([SEED])), purpose="batch").id,
            endpoint="/v1/chat/completions", completion_window="24h", metadata={"purpose": "test"})
        assert created.status in ("validating", "in_progress") and created.request_counts.total == 1
        assert created.metadata == {"purpose": "test"} and created.expires_at - created.created_at == 86400
        assert finished(slow_client, created.id).status == "completed"
    batch = finished(client, client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                   completion_window="24h").id)
    assert batch.status == "completed" and batch.error_file_id is None and batch.completed_at is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (2, 2, 0)
    lines = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert [line["custom_id"] for line in lines] == ["seed-0", "seed-1"]
    first = lines[0]
    assert set(first) == {"id", "custom_id", "response", "error"} and first["error"] is None
    assert first["id"].startswith("batch_req_") and first["response"]["status_code"] == 200
    assert first["response"]["request_id"].startswith("req_")
    body = openai.types.chat.ChatCompletion.model_validate(first["response"]["body"])
    direct = self_chat(client)  # the same request, asked directly
    assert body.choices[0].message.content == direct.choices[0].message.content
    assert body.choices[0].finish_reason == direct.choices[0].finish_reason and body.usage == direct.usage
    assert teacher.stats()["batches_created"] == 1


def test_failed_lines_go_to_the_error_file_and_a_bad_request_line_keeps_its_status():
    with SimulatedTeacher(batch_completion_delay_s=0.05, batch_failure_rate=1.0) as server, \
            make_client(server) as client:
        uploaded = client.files.create(file=("r.jsonl", batch_input([SEED, SEED + " again"])), purpose="batch")
        batch = finished(client, client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                       completion_window="24h").id)
        assert batch.status == "completed" and batch.output_file_id is None
        assert (batch.request_counts.completed, batch.request_counts.failed) == (0, 2)
        errors = [json.loads(line) for line in client.files.content(batch.error_file_id).text.splitlines()]
        assert {e["custom_id"] for e in errors} == {"seed-0", "seed-1"}
        assert all(e["response"] is None and e["error"]["code"] == "server_error" for e in errors)
    with SimulatedTeacher(batch_completion_delay_s=0.05) as server, make_client(server) as client:
        uploaded = client.files.create(file=("r.jsonl", batch_input([SEED], n=3)), purpose="batch")
        batch = finished(client, client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                       completion_window="24h").id)
        (line,) = [json.loads(text) for text in client.files.content(batch.error_file_id).text.splitlines()]
        assert line["response"]["status_code"] == 400 and "n=1" in line["response"]["body"]["error"]["message"]


def test_an_expiring_batch_ends_half_done_and_a_cancelled_one_stops():
    seeds = [f"{SEED} ({n})" for n in range(6)]
    with SimulatedTeacher(batch_completion_delay_s=0.1, batch_expire=1) as server, make_client(server) as client:
        uploaded = client.files.create(file=("r.jsonl", batch_input(seeds)), purpose="batch")
        expired = finished(client, client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                         completion_window="24h").id)
        assert expired.status == "expired" and expired.expired_at is not None
        assert len(client.files.content(expired.output_file_id).text.splitlines()) == 3
        late = [json.loads(line) for line in client.files.content(expired.error_file_id).text.splitlines()]
        assert [line["error"]["code"] for line in late] == ["batch_expired"] * 3
        again = finished(client, client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                       completion_window="24h").id)
        assert again.status == "completed"  # only the first batch expires
    with SimulatedTeacher(batch_completion_delay_s=2.0) as server, make_client(server) as client:
        uploaded = client.files.create(file=("r.jsonl", batch_input(seeds)), purpose="batch")
        created = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
        cancelling = client.batches.cancel(created.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        cancelled = finished(client, created.id)
        assert cancelled.status == "cancelled" and cancelled.request_counts.completed < 6
        with pytest.raises(openai.ConflictError):
            client.batches.cancel(created.id)


def test_bad_batch_requests_get_openai_errors_and_a_bad_input_file_fails_the_batch(client):
    uploaded = client.files.create(file=("r.jsonl", batch_input([SEED])), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="batches only"):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    broken = client.files.create(file=("r.jsonl", batch_input([SEED]) * 2 + b"not json\n"), purpose="batch")
    failed = client.batches.create(input_file_id=broken.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert failed.status == "failed" and failed.failed_at is not None
    assert [(e.code, e.line) for e in failed.errors.data] == [("duplicate_custom_id", 2), ("invalid_json_line", 3)]
