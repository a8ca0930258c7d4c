"""The OpenAI API through real HTTP with the official openai client."""

from __future__ import annotations

import openai
import pytest
import requests

from tests.answers import KEEP_GOING, before, stop_word, unload

QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]
LIMIT = 128  # tokens: a tiny model may repeat itself forever on some CPU, which must fail, not hang


@pytest.fixture(scope="module")
def server(smollm2_server):
    return smollm2_server


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused")


def test_chat_completion(client):
    r = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=LIMIT)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    assert (r.choices[0].finish_reason == "length") == (r.usage.completion_tokens == LIMIT)
    assert r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_completion_stream_with_usage(client, server):
    unload(server.url, "smollm2")
    chunks = list(client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, stream=True,
                                                 max_tokens=LIMIT, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    unload(server.url, "smollm2")
    whole = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=LIMIT)
    assert text == whole.choices[0].message.content  # greedy: streaming changes nothing
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_max_tokens_and_stop(client, server):
    keep_going = {"type": "json_schema", "json_schema": {"name": "long", "schema": KEEP_GOING}}
    r = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=3,
                                       response_format=keep_going)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    unload(server.url, "smollm2")
    full = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0,
                                          max_tokens=LIMIT).choices[0].message.content
    stop = stop_word(full)
    unload(server.url, "smollm2")
    r = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=LIMIT,
                                       stop=[stop])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.content == before(full, stop)


def test_seed_makes_sampling_repeatable(server):
    # Two servers' worth of state would be needed to avoid the prefix cache; instead ask twice
    # for a long completion at temperature 1 with one seed and compare the first tokens, which
    # come from identical logits.
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    msgs = [{"role": "user", "content": "Invent a name for a dragon."}]
    unload(server.url, "smollm2")
    a = client.chat.completions.create(model="smollm2", messages=msgs, seed=7, max_tokens=1)
    unload(server.url, "smollm2")
    b = client.chat.completions.create(model="smollm2", messages=msgs, seed=7, max_tokens=1)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_text_completion(client, server):
    unload(server.url, "smollm2")
    r = client.completions.create(model="smollm2", prompt="Which city is the capital of France?", temperature=0,
                                  max_tokens=20)
    assert r.object == "text_completion" and r.choices[0].text
    assert 0 < r.usage.completion_tokens <= 20
    assert (r.choices[0].finish_reason == "length") == (r.usage.completion_tokens == 20)
    unload(server.url, "smollm2")
    chunks = list(client.completions.create(model="smollm2", prompt="Which city is the capital of France?",
                                            temperature=0, max_tokens=20, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text


def test_logprobs(client):
    r = client.chat.completions.create(model="smollm2", messages=QUESTION, temperature=0, max_tokens=3,
                                       logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == 3 and all(len(c.top_logprobs) == 2 for c in content)


def test_models(client, server):
    r = client.models.retrieve("smollm2")
    assert r.id == "smollm2:latest" and r.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("missing")


def test_errors_are_openai_shaped(client, server):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="missing", messages=QUESTION)
    assert "not found" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smollm2", messages=[])
    r = requests.post(server.url + "/v1/chat/completions", data="{oops")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["message"]
    r = requests.post(server.url + "/v1/chat/completions", json={"model": "smollm2", "messages": QUESTION,
                                                                  "temperature": "hot"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"


def test_responses_api(client):
    r = client.responses.create(model="smollm2", input="Which city is the capital of France?", temperature=0,
                                max_output_tokens=LIMIT)
    assert r.status == "completed" and r.output_text.strip()
    assert r.usage.output_tokens > 0
    follow = client.responses.create(model="smollm2", input="Repeat the name of that city.", temperature=0,
                                     previous_response_id=r.id, max_output_tokens=20)
    assert follow.previous_response_id == r.id and follow.output_text


def test_responses_api_streaming(client, server):
    unload(server.url, "smollm2")
    events = list(client.responses.create(model="smollm2", input="Which city is the capital of France?",
                                          temperature=0, stream=True, max_output_tokens=LIMIT))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and events[-1].response.output_text == text
    unload(server.url, "smollm2")
    whole = client.responses.create(model="smollm2", input="Which city is the capital of France?", temperature=0,
                                    max_output_tokens=LIMIT)
    assert whole.output_text == text


def test_responses_api_instructions_and_unknown_previous(client):
    r = client.responses.create(model="smollm2", instructions="Answer with one word.",
                                input=[{"role": "user", "content": [{"type": "input_text",
                                                                      "text": "Capital of France?"}]}],
                                temperature=0, max_output_tokens=10)
    assert r.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="smollm2", input="hi", previous_response_id="resp_missing")
