"""Issue 18, items 3, 4, 6 and 7: tokens through a model's vocabulary, the cached prompt tokens every
API reports, Ollama's ``options`` on the /v1 routes, and what each model's slots are doing; with the
official openai and anthropic clients where they have the call, raw HTTP where they do not (the
ollama client keeps no field it does not know, and has no tokenize)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import uuid

import anthropic
import openai
import pytest
import requests

from a3s_power.engine.scheduler import Scheduler
from a3s_power.server.slots import summary
from tests import server_harness
from tests.answers import KEEP_GOING, unload

LIMIT = 16  # answer tokens: what is counted here is the prompt
TEXT = "The quick brown fox jumps over the lazy dog, 42 times."


@pytest.fixture(scope="module")
def server(smollm2_server):
    return smollm2_server


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused")


@pytest.fixture(scope="module")
def claude(server):
    return anthropic.Anthropic(base_url=server.url, api_key="unused")


def post(server, path: str, body: dict) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=120)


def question() -> list[dict]:
    """A conversation no other test has sent (its end is new to every cache)."""
    return [{"role": "user", "content": f"Say one word about the number {uuid.uuid4().int % 10**9}."}]


# --- item 3: tokenize, detokenize and counts --------------------------------------------------------

def test_api_tokenize_goes_through_the_models_vocabulary(server, smollm2):
    r = post(server, "/api/tokenize", {"model": "smollm2", "text": TEXT, "add_special": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "smollm2" and body["tokens"] == smollm2.tokenize(TEXT, False, True)
    # "content" is taken too; by default special tokens are added as the model adds them.
    default = post(server, "/api/tokenize", {"model": "smollm2", "content": TEXT}).json()["tokens"]
    assert default == smollm2.tokenize(TEXT, True, True)
    back = post(server, "/api/detokenize", {"model": "smollm2", "tokens": body["tokens"]})
    assert back.status_code == 200 and back.json() == {"model": "smollm2", "text": TEXT}


def test_llama_server_shapes(server, smollm2):
    expected = smollm2.tokenize(TEXT, False, True)  # llama-server adds no special tokens unless asked
    for prefix in ("", "/v1"):
        r = post(server, prefix + "/tokenize", {"model": "smollm2", "content": TEXT})
        assert r.status_code == 200 and r.json() == {"tokens": expected}
        pieces = post(server, prefix + "/tokenize", {"model": "smollm2", "content": TEXT, "with_pieces": True}).json()
        assert [p["id"] for p in pieces["tokens"]] == expected
        assert "".join(p["piece"] for p in pieces["tokens"]) == TEXT
        r = post(server, prefix + "/detokenize", {"model": "smollm2", "tokens": expected})
        assert r.status_code == 200 and r.json() == {"content": TEXT}
    # A special token written as text is that token; a piece that is part of a character is bytes.
    marked = post(server, "/tokenize", {"model": "smollm2", "content": "<|im_start|>é", "with_pieces": True}).json()
    assert marked["tokens"][0]["piece"] == "<|im_start|>"
    assert all(isinstance(p["piece"], (str, list)) for p in marked["tokens"])


def test_llama_server_clients_may_leave_out_the_model(server, smollm2):
    # llama-server serves one model: its clients send none. The one loaded model answers.
    post(server, "/api/tokenize", {"model": "smollm2", "text": "x"})  # loaded
    r = post(server, "/tokenize", {"content": TEXT})
    assert r.status_code == 200 and r.json()["tokens"] == smollm2.tokenize(TEXT, False, True)
    assert post(server, "/v1/detokenize", {"tokens": r.json()["tokens"]}).json() == {"content": TEXT}
    # Ollama's routes name the model, as Ollama's do.
    r = post(server, "/api/tokenize", {"text": TEXT})
    assert r.status_code == 400 and r.json() == {"error": "model is required"}


def test_tokenize_an_unknown_model_is_404(server):
    for path, body in (("/api/tokenize", {"text": "hi"}), ("/api/detokenize", {"tokens": [1]}),
                       ("/tokenize", {"content": "hi"}), ("/v1/detokenize", {"tokens": [1]})):
        r = post(server, path, {"model": "no-such-model", **body})
        assert r.status_code == 404, (path, r.text)
        error = r.json()["error"]
        assert "no-such-model" in (error if isinstance(error, str) else error["message"])


def test_bad_tokens_and_text_are_400(server):
    for tokens in ([-1], [10**9], [True], "1 2", [1.5]):
        r = post(server, "/api/detokenize", {"model": "smollm2", "tokens": tokens})
        assert r.status_code == 400 and "tokens" in r.json()["error"], (tokens, r.text)
    assert "not a token of this model" in post(server, "/api/detokenize", {"model": "smollm2", "tokens": [5, 10**9]}
                                               ).json()["error"]
    r = post(server, "/v1/tokenize", {"model": "smollm2", "content": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "content"
    r = post(server, "/api/tokenize", {"model": "smollm2", "text": "x", "add_special": "yes"})
    assert r.status_code == 400 and "add_special" in r.json()["error"]


def test_chat_input_tokens_is_what_the_completion_then_counts(server, oai):
    messages = question()
    r = post(server, "/v1/chat/completions/input_tokens", {"model": "smollm2", "messages": messages})
    assert r.status_code == 200, r.text
    counted = r.json()
    assert counted["object"] == "response.input_tokens" and counted["input_tokens"] > 5
    answer = oai.chat.completions.create(model="smollm2", messages=messages, max_tokens=LIMIT, temperature=0)
    assert answer.usage.prompt_tokens == counted["input_tokens"]
    r = post(server, "/v1/chat/completions/input_tokens", {"model": "nope", "messages": messages})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_responses_input_tokens_with_the_openai_client(oai):
    text = question()[0]["content"]
    counted = oai.responses.input_tokens.count(model="smollm2", input=text, instructions="Answer briefly.")
    assert counted.object == "response.input_tokens" and counted.input_tokens > 5
    answer = oai.responses.create(model="smollm2", input=text, instructions="Answer briefly.", max_output_tokens=LIMIT,
                                  temperature=0)
    assert answer.usage.input_tokens == counted.input_tokens
    # A conversation continued by its id counts what it continues.
    more = oai.responses.input_tokens.count(model="smollm2", input="And another?", previous_response_id=answer.id)
    assert more.input_tokens > counted.input_tokens + answer.usage.output_tokens - 1


# --- item 4: cached prompt tokens everywhere -----------------------------------------------------------

def test_openai_chat_and_completions_report_cached_tokens(oai):
    messages = question()
    first = oai.chat.completions.create(model="smollm2", messages=messages, max_tokens=LIMIT, temperature=0)
    again = oai.chat.completions.create(model="smollm2", messages=messages, max_tokens=LIMIT, temperature=0)
    assert first.usage.prompt_tokens == again.usage.prompt_tokens
    cold, warm = first.usage.prompt_tokens_details.cached_tokens, again.usage.prompt_tokens_details.cached_tokens
    # The repeated prompt comes from the cache but for its last token, whose logits are needed.
    assert 0 <= cold < warm == again.usage.prompt_tokens - 1
    chunks = list(oai.chat.completions.create(model="smollm2", messages=messages, max_tokens=LIMIT, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == warm
    prompt = f"Number {uuid.uuid4().int % 10**9}, then"
    oai.completions.create(model="smollm2", prompt=prompt, max_tokens=LIMIT, temperature=0)
    text = oai.completions.create(model="smollm2", prompt=prompt, max_tokens=LIMIT, temperature=0)
    assert text.usage.prompt_tokens_details.cached_tokens == text.usage.prompt_tokens - 1


def test_responses_report_cached_tokens(oai):
    text = question()[0]["content"]
    oai.responses.create(model="smollm2", input=text, max_output_tokens=LIMIT, temperature=0)
    again = oai.responses.create(model="smollm2", input=text, max_output_tokens=LIMIT, temperature=0)
    assert again.usage.input_tokens_details.cached_tokens == again.usage.input_tokens - 1
    events = list(oai.responses.create(model="smollm2", input=text, max_output_tokens=LIMIT, temperature=0,
                                       stream=True))
    assert events[-1].type in ("response.completed", "response.incomplete")  # incomplete: it ran into the limit
    final = events[-1].response
    assert final.usage.input_tokens_details.cached_tokens == final.usage.input_tokens - 1


def test_anthropic_reports_cache_reads(claude):
    messages = question()
    total = claude.messages.count_tokens(model="smollm2", messages=messages).input_tokens
    claude.messages.create(model="smollm2", max_tokens=LIMIT, messages=messages)
    again = claude.messages.create(model="smollm2", max_tokens=LIMIT, messages=messages)
    # Anthropic counts input_tokens apart from what was read from the cache.
    assert again.usage.cache_read_input_tokens == total - 1 and again.usage.input_tokens == 1
    assert again.usage.cache_creation_input_tokens == 0
    with claude.messages.stream(model="smollm2", max_tokens=LIMIT, messages=messages) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = events[0].message.usage  # before the prompt's end it is all input
    assert start.input_tokens == total and start.cache_read_input_tokens == 0
    assert final.usage.cache_read_input_tokens == total - 1 and final.usage.input_tokens == 1


def test_native_answers_report_prompt_eval_cached_count(server):
    messages = question()
    body = {"model": "smollm2", "messages": messages, "stream": False, "options": {"temperature": 0, "num_predict": 8}}
    post(server, "/api/chat", body)
    again = post(server, "/api/chat", body).json()
    assert again["prompt_eval_cached_count"] == again["prompt_eval_count"] - 1
    lines = [json.loads(line) for line in post(server, "/api/chat", {**body, "stream": True}).iter_lines() if line]
    assert lines[-1]["done"] and lines[-1]["prompt_eval_cached_count"] == again["prompt_eval_cached_count"]
    assert all("prompt_eval_cached_count" not in line for line in lines[:-1])
    generate = {"model": "smollm2", "prompt": messages[0]["content"], "stream": False,
                "options": {"temperature": 0, "num_predict": 8}}
    post(server, "/api/generate", generate)
    final = post(server, "/api/generate", generate).json()
    assert final["prompt_eval_cached_count"] == final["prompt_eval_count"] - 1


# --- item 7: slots ------------------------------------------------------------------------------------

def test_ps_and_slots_show_each_slot(server, oai):
    oai.chat.completions.create(model="smollm2", messages=question(), max_tokens=LIMIT, temperature=0)
    model = next(m for m in requests.get(server.url + "/api/ps", timeout=30).json()["models"]
                 if m["name"] == "smollm2:latest")
    slots = model["slots"]
    assert slots["total"] == 2 and slots["busy"] + slots["free"] == 2 and slots["queued"] == 0
    assert len(slots["cached_tokens"]) == 2 and max(slots["cached_tokens"]) > 5
    detail = requests.get(server.url + "/api/slots", params={"model": "smollm2"}, timeout=30).json()["models"]
    generation = next(r for r in detail if r["kind"] == "generation")
    assert generation["name"] == "smollm2:latest" and generation["context_length"] == 2048
    assert [s["id"] for s in generation["slots"]] == [0, 1]
    assert sorted(s["cached_tokens"] for s in generation["slots"]) == sorted(slots["cached_tokens"])
    assert requests.get(server.url + "/api/slots", params={"model": "other"}, timeout=30).json() == {"models": []}


def test_a_generating_slot_is_busy(server):
    body = {"model": "smollm2", "prompt": "Write a long story.", "format": KEEP_GOING,
            "options": {"num_predict": 400, "temperature": 0}}
    with requests.post(server.url + "/api/generate", json=body, stream=True, timeout=120) as r:
        lines = r.iter_lines()
        next(lines)  # the first token is out: the slot is generating
        slots = next(m for m in requests.get(server.url + "/api/ps", timeout=30).json()["models"]
                     if m["name"] == "smollm2:latest")["slots"]
        detail = requests.get(server.url + "/api/slots", timeout=30).json()["models"][0]
        metrics = requests.get(server.url + "/metrics", timeout=30).text
    assert slots["busy"] == 1 and slots["free"] == 1
    busy = [s for s in detail["slots"] if s["busy"]]
    assert len(busy) == 1 and busy[0]["generated"] >= 1
    assert 'power_slots_free{model="smollm2:latest"} 1.0' in metrics
    assert 'power_model_queue_depth{model="smollm2:latest"} 0.0' in metrics
    assert 'power_slot_cached_tokens{kind="generation",model="smollm2:latest",slot="0"}' in metrics


def test_cli_ps_slots(server):
    requests.post(server.url + "/api/generate", json={"model": "smollm2"}, timeout=120)  # loaded
    env = {**os.environ, "OLLAMA_HOST": server.url}
    r = subprocess.run([sys.executable, "-m", "a3s_power", "ps", "--slots"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split() == ["NAME", "KIND", "SLOT", "STATE", "CACHED", "GENERATED"]
    mine = [row.split() for row in rows if row.startswith("smollm2:latest")]
    assert [row[2] for row in mine if row[1] == "generation"] == ["0", "1"]


def test_summary_without_slots_one_by_one():
    # A core without Engine.slots(): the counts per runner, and no cached tokens per slot.
    gen = {"kind": "generation", "total": 4, "busy": 1, "free": 3, "queued": 2, "slots": None}
    emb = {"kind": "embedding", "total": 2, "busy": 0, "free": 2, "queued": 0,
           "slots": [{"id": 0, "busy": False, "cached_tokens": 0, "generated": 0}] * 2}
    assert summary([emb, gen]) == {"total": 6, "busy": 1, "free": 5, "queued": 2}
    with_slots = {**gen, "slots": [{"id": i, "busy": i == 0, "cached_tokens": 10 * i, "generated": 0} for i in range(4)]}
    assert summary([emb, with_slots])["cached_tokens"] == [0, 10, 20, 30, 0, 0]


def test_through_a_model_worker(monkeypatch, smollm2_path, smollm2):
    """`serve` runs each model in a worker process: tokens come from the server's vocabulary-only
    copy, cached tokens and slots from the worker's engine."""
    monkeypatch.setattr(server_harness, "Scheduler", functools.partial(Scheduler, isolate=True))
    srv = server_harness.RunningServer(server_harness.server_config(num_parallel=2, context_length=1024),
                                       server_harness.resolver(smollm2=smollm2_path)).start()
    try:
        r = post(srv, "/api/tokenize", {"model": "smollm2", "text": TEXT, "add_special": False})
        assert r.json()["tokens"] == smollm2.tokenize(TEXT, False, True)
        assert post(srv, "/detokenize", {"tokens": r.json()["tokens"]}).json() == {"content": TEXT}
        runners = srv.state.scheduler.running()
        assert runners and all(hasattr(r.model, "worker") for r in runners)  # the model is in a worker
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused")
        messages = question()
        client.chat.completions.create(model="smollm2", messages=messages, max_tokens=LIMIT, temperature=0)
        again = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=LIMIT, temperature=0)
        assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
        generation = requests.get(srv.url + "/api/slots", timeout=30).json()["models"][0]
        assert generation["kind"] == "generation" and len(generation["slots"]) == 2
        assert max(s["cached_tokens"] for s in generation["slots"]) >= again.usage.prompt_tokens - 1
    finally:
        srv.stop()


# --- item 6: Ollama's options on /v1 ------------------------------------------------------------------

def context_length(server) -> int:
    return next(m for m in requests.get(server.url + "/api/ps", timeout=30).json()["models"]
                if m["name"] == "smollm2:latest")["context_length"]


def test_options_on_the_v1_routes(server, oai, claude):
    messages = question()
    oai.chat.completions.create(model="smollm2", messages=messages, max_tokens=LIMIT,
                                extra_body={"options": {"num_ctx": 1024}})
    assert context_length(server) == 1024
    # Options carry any Ollama option; the API's own fields win over them.
    r = oai.chat.completions.create(model="smollm2", messages=messages, max_tokens=3,
                                    extra_body={"options": {"num_ctx": 1024, "num_predict": 50, "temperature": 0}})
    assert r.usage.completion_tokens <= 3
    r = oai.completions.create(model="smollm2", prompt="Once", extra_body={"options": {"num_ctx": 1024, "num_predict": 2}})
    assert r.usage.completion_tokens <= 2
    oai.responses.create(model="smollm2", input="Hi", max_output_tokens=LIMIT, extra_body={"options": {"num_ctx": 1536}})
    assert context_length(server) == 1536
    claude.messages.create(model="smollm2", max_tokens=LIMIT, messages=messages,
                           extra_body={"options": {"num_ctx": 1280}})
    assert context_length(server) == 1280
    # Counting uses the loaded model as it is, and reloads nothing.
    assert claude.messages.count_tokens(model="smollm2", messages=messages).input_tokens > 5
    assert post(server, "/v1/chat/completions/input_tokens", {"model": "smollm2", "messages": messages}).ok
    assert context_length(server) == 1280
    unload(server.url, "smollm2")


def test_bad_options_are_400_in_each_apis_shape(server):
    messages = [{"role": "user", "content": "Hi"}]
    r = post(server, "/v1/chat/completions", {"model": "smollm2", "messages": messages, "options": [1]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "options"
    r = post(server, "/v1/chat/completions", {"model": "smollm2", "messages": messages,
                                              "options": {"num_ctx": "big"}})
    assert r.status_code == 400 and "num_ctx" in r.json()["error"]["message"]
    r = post(server, "/v1/messages", {"model": "smollm2", "max_tokens": 8, "messages": messages, "options": "x"})
    assert r.status_code == 400 and r.json()["type"] == "error" and "options" in r.json()["error"]["message"]
    r = post(server, "/v1/responses", {"model": "smollm2", "input": "Hi", "options": {"temperature": True}})
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
