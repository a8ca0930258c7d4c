"""The Anthropic Messages API through real HTTP with the official anthropic client."""

from __future__ import annotations

import anthropic
import pytest
import requests

from tests.answers import before, stop_word, unload

QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]


@pytest.fixture(scope="module")
def server(smollm2_server):
    return smollm2_server


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.url, api_key="unused")


def test_message(client):
    r = client.messages.create(model="smollm2", max_tokens=64, messages=QUESTION, extra_body={"temperature": 0})
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_")
    assert r.content[0].type == "text" and r.content[0].text.strip()
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert (r.stop_reason == "max_tokens") == (r.usage.output_tokens == 64)
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0


def test_system_and_multi_turn(client):
    r = client.messages.create(model="smollm2", max_tokens=64, extra_body={"temperature": 0}, system="You answer briefly.",
                               messages=QUESTION + [{"role": "assistant", "content": "Paris."},
                                                    {"role": "user", "content": "And of Germany?"}])
    assert r.content[0].text


def test_max_tokens_and_stop_sequences(client, server):
    r = client.messages.create(model="smollm2", max_tokens=2, messages=QUESTION, extra_body={"temperature": 0})
    assert r.stop_reason == "max_tokens" and r.usage.output_tokens == 2
    unload(server.url, "smollm2")
    full = client.messages.create(model="smollm2", max_tokens=64, messages=QUESTION,
                                  extra_body={"temperature": 0}).content[0].text
    stop = stop_word(full)
    unload(server.url, "smollm2")
    r = client.messages.create(model="smollm2", max_tokens=64, messages=QUESTION, extra_body={"temperature": 0},
                               stop_sequences=["never said", stop])
    assert r.stop_reason == "stop_sequence" and r.stop_sequence == stop
    assert r.content[0].text == before(full, stop)


def test_streaming_event_sequence(client, server):
    unload(server.url, "smollm2")
    with client.messages.stream(model="smollm2", max_tokens=64, messages=QUESTION, extra_body={"temperature": 0}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    # message_start already counts the prompt, as the final usage does (issue 16, item 6).
    assert events[0].message.usage.input_tokens == final.usage.input_tokens > 0
    assert kinds[1] == "content_block_start"
    assert "content_block_delta" in kinds or "text" in kinds
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    unload(server.url, "smollm2")
    whole = client.messages.create(model="smollm2", max_tokens=64, messages=QUESTION, extra_body={"temperature": 0})
    assert final.content[0].text == whole.content[0].text and final.stop_reason == whole.stop_reason


def test_raw_stream_framing(server):
    r = requests.post(server.url + "/v1/messages", json={"model": "smollm2", "max_tokens": 5, "stream": True,
                                                         "messages": QUESTION}, stream=True)
    lines = [line for line in r.iter_lines(decode_unicode=True) if line]
    events = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "data: [DONE]" not in lines


def test_count_tokens(client):
    r = client.messages.count_tokens(model="smollm2", messages=QUESTION)
    assert 5 < r.input_tokens < 100


def test_errors_are_anthropic_shaped(client, server):
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="missing", max_tokens=5, messages=QUESTION)
    r = requests.post(server.url + "/v1/messages", json={"model": "smollm2", "messages": QUESTION})
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
