"""Ollama's native API through real HTTP, with the official ollama client and raw requests."""

from __future__ import annotations

import json

import pytest
import requests

from tests.answers import CITY, KEEP_GOING, before, forced_city, stop_word, unload
from tests.server_harness import RunningServer, resolver, server_config


@pytest.fixture(scope="module")
def server(smollm2_path, tiny_path):
    srv = RunningServer(server_config(num_parallel=2, context_length=2048, keep_alive=300.0),
                        resolver(smollm2=smollm2_path, tiny=tiny_path)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    import ollama

    return ollama.Client(host=server.url)


QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]
# Greedy, and bounded: a tiny model may repeat itself forever on some CPU, which must fail, not hang.
LIMIT = 128
GREEDY = {"temperature": 0, "num_thread": 2, "num_predict": LIMIT}


def test_root_and_version(server):
    r = requests.get(server.url + "/")
    assert r.status_code == 200 and r.text == "Ollama is running"
    assert requests.head(server.url + "/").status_code == 200
    # /api/version is the Ollama API we implement (clients gate features on it); ours is in /health.
    from a3s_power.version import OLLAMA_API_VERSION, __version__

    reported = requests.get(server.url + "/api/version").json()["version"]
    assert reported == OLLAMA_API_VERSION and tuple(map(int, reported.split("."))) >= (0, 3, 0)
    health = requests.get(server.url + "/health").json()
    assert health["version"] == __version__ and health["ollama_api_version"] == OLLAMA_API_VERSION


def test_chat_streams_with_the_ollama_client(client, server):
    unload(server.url, "smollm2")
    parts = list(client.chat(model="smollm2", messages=QUESTION, stream=True, options=GREEDY))
    assert parts[-1].done and parts[-1].done_reason in ("stop", "length")
    assert (parts[-1].done_reason == "length") == (parts[-1].eval_count == LIMIT)
    assert not any(p.done for p in parts[:-1])
    text = "".join(p.message.content for p in parts)
    assert text.strip()
    assert parts[-1].eval_count >= len(parts) - 1 and parts[-1].prompt_eval_count > 0
    assert parts[-1].total_duration >= parts[-1].eval_duration > 0
    # Greedy decoding is deterministic: the same request without streaming, cold as the first was,
    # gives the same text.
    unload(server.url, "smollm2")
    whole = client.chat(model="smollm2", messages=QUESTION, stream=False, options=GREEDY)
    assert whole.done and whole.message.content == text and whole.eval_count == parts[-1].eval_count


def test_chat_with_a_schema_gives_the_forced_answer(client):
    r = client.chat(model="smollm2", messages=QUESTION, stream=False, options=GREEDY, format=CITY)
    assert r.done and r.done_reason == "stop" and forced_city(r.message.content)


def test_generate_returns_context_for_continuation(client):
    r = client.generate(model="smollm2", prompt="Which city is the capital of France?", stream=False, options=GREEDY)
    assert r.response.strip() and r.done_reason in ("stop", "length")
    assert r.context and len(r.context) > r.prompt_eval_count
    follow = client.generate(model="smollm2", prompt="And of Italy?", context=r.context, stream=False,
                             options={**GREEDY, "num_predict": 20})
    assert follow.done and follow.response


def test_raw_generate_and_stop(client, server):
    options = {**GREEDY, "num_predict": 30}
    unload(server.url, "smollm2")
    full = client.generate(model="smollm2", prompt="1, 2, 3, 4,", raw=True, stream=False, options=options).response
    stop = stop_word(full)
    unload(server.url, "smollm2")
    r = client.generate(model="smollm2", prompt="1, 2, 3, 4,", raw=True, stream=False,
                        options={**options, "stop": [stop]})
    assert r.done_reason == "stop"
    assert r.response == before(full, stop) and stop not in r.response


def test_num_predict_gives_length(client):
    r = client.generate(model="smollm2", prompt="Tell me a story.", stream=False, format=KEEP_GOING,
                        options={**GREEDY, "num_predict": 5})
    assert r.done_reason == "length" and r.eval_count == 5


def test_json_format_output_parses(server):
    r = requests.post(server.url + "/api/generate", json={
        "model": "smollm2", "prompt": "Describe a cat as JSON with name and age.", "format": "json", "stream": False,
        "options": {**GREEDY, "num_predict": 80}})
    assert r.status_code == 200, r.text
    assert isinstance(json.loads(r.json()["response"]), dict)


def test_logprobs(server):
    r = requests.post(server.url + "/api/generate", json={
        "model": "smollm2", "prompt": "Hi", "stream": False, "logprobs": True, "top_logprobs": 2,
        "options": {**GREEDY, "num_predict": 3}}).json()
    assert len(r["logprobs"]) == 3
    assert all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in r["logprobs"])


def test_empty_prompt_loads_and_keep_alive_zero_unloads(server):
    r = requests.post(server.url + "/api/generate", json={"model": "tiny"}).json()
    assert r["done"] and r["done_reason"] == "load"
    assert any(m["name"] == "tiny:latest" for m in requests.get(server.url + "/api/ps").json()["models"])
    r = requests.post(server.url + "/api/generate", json={"model": "tiny", "keep_alive": 0}).json()
    assert r["done_reason"] == "unload"
    assert not any(m["name"] == "tiny:latest" for m in requests.get(server.url + "/api/ps").json()["models"])


def test_ps_reports_loaded_models(server, client):
    client.generate(model="smollm2", prompt="hi", options={**GREEDY, "num_predict": 1})
    models = requests.get(server.url + "/api/ps").json()["models"]
    entry = next(m for m in models if m["name"] == "smollm2:latest")
    assert entry["size"] > 0 and entry["context_length"] == 2048 and entry["expires_at"]


def test_unknown_model_is_404(server):
    r = requests.post(server.url + "/api/chat", json={"model": "nope", "messages": QUESTION})
    assert r.status_code == 404 and r.json() == {"error": "model 'nope' not found"}


def test_bad_requests(server):
    assert requests.post(server.url + "/api/chat", data="").json() == {"error": "missing request body"}
    r = requests.post(server.url + "/api/chat", data="{not json")
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]
    r = requests.post(server.url + "/api/chat", json={"messages": QUESTION})
    assert r.status_code == 400 and r.json()["error"] == "model is required"
    r = requests.post(server.url + "/api/generate", json={"model": "smollm2", "prompt": "x",
                                                          "options": {"temperature": "hot"}})
    assert r.status_code == 400 and "temperature" in r.json()["error"]
    r = requests.post(server.url + "/api/generate", json={"model": "smollm2", "prompt": "x", "raw": True,
                                                          "system": "s"})
    assert r.status_code == 400 and "raw mode" in r.json()["error"]
    r = requests.post(server.url + "/api/generate", json={"model": "smollm2", "prompt": "x", "top_logprobs": 50})
    assert r.status_code == 400 and "top_logprobs" in r.json()["error"]
    r = requests.get(server.url + "/api/chat")
    assert r.status_code == 405


def test_host_header_guard(server):
    r = requests.get(server.url + "/api/version", headers={"Host": "evil.example.com"})
    assert r.status_code == 403
    assert requests.get(server.url + "/api/version", headers={"Host": "localhost:11434"}).status_code == 200


def test_cors_for_allowed_origins(server):
    r = requests.options(server.url + "/api/chat", headers={"Origin": "http://localhost:3000",
                                                            "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    r = requests.get(server.url + "/api/version", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_client_disconnect_frees_the_slot(server):
    import time

    with requests.post(server.url + "/api/generate", json={
            "model": "smollm2", "prompt": "Write a very long story.",
            "options": {**GREEDY, "num_predict": 2000}}, stream=True) as r:
        next(r.iter_lines())
    for _ in range(100):
        runner = next(x for x in server.state.scheduler.running() if x.name == "smollm2:latest")
        if runner.model.engine.stats()["slots_busy"] == 0 and runner.active == 0:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the slot was not freed after the client went away")


def test_queue_limit_answers_503_and_nothing_else_breaks(smollm2_path):
    import concurrent.futures

    srv = RunningServer(server_config(num_parallel=1, max_queue=1, max_loaded_models=1, context_length=1024),
                        resolver(smollm2=smollm2_path)).start()
    try:
        body = {"model": "smollm2", "prompt": "Write a long story.", "stream": False, "format": KEEP_GOING,
                "options": {**GREEDY, "num_predict": 150}}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: requests.post(srv.url + "/api/generate", json=body), range(4)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) == 2 and codes.count(503) == 2
        busy = next(r for r in results if r.status_code == 503).json()
        assert busy == {"error": "server busy, please try again.  maximum pending requests exceeded"}
        after = requests.post(srv.url + "/api/generate", json={**body, "options": {**GREEDY, "num_predict": 2}})
        assert after.status_code == 200
    finally:
        srv.stop()


def test_shift_on_and_off(server):
    # The schema forbids the end of generation, so only num_predict or the full context ends it.
    body = {"model": "smollm2", "prompt": "Write a long essay about the sea.", "raw": True, "stream": False,
            "format": KEEP_GOING, "options": {**GREEDY, "num_ctx": 64, "num_predict": 120}}
    shifted = requests.post(server.url + "/api/generate", json=body).json()
    assert shifted["done_reason"] == "length" and shifted["eval_count"] == 120
    stopped = requests.post(server.url + "/api/generate", json={**body, "shift": False}).json()
    assert stopped["done_reason"] == "length" and stopped["eval_count"] < 64


def test_a_template_that_fails_is_400(server):
    r = requests.post(server.url + "/api/generate", json={"model": "smollm2", "prompt": "hi",
                                                          "template": "{{ .Prompt"})
    assert r.status_code == 400 and "template" in r.json()["error"]


def test_cancelled_requests_never_leak_slots(server):
    import concurrent.futures

    def abandon(i: int) -> None:
        with requests.post(server.url + "/api/generate", stream=True, json={
                "model": "smollm2", "prompt": f"Story {i}", "options": {**GREEDY, "num_predict": 5000}}) as r:
            next(r.iter_lines())

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(abandon, range(16)))

    def quick(i: int) -> int:
        r = requests.post(server.url + "/api/generate", json={
            "model": "smollm2", "prompt": f"Say {i}.", "stream": False, "options": {**GREEDY, "num_predict": 1}})
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(quick, range(100)))
    assert codes == [200] * 100
    runner = next(x for x in server.state.scheduler.running() if x.name == "smollm2:latest")
    assert runner.model.engine.stats()["slots_busy"] == 0


def test_debug_render_only_returns_the_prompt_without_running_the_model(server):
    body = {"model": "smollm2", "messages": [{"role": "system", "content": "Be brief."}, *QUESTION],
            "_debug_render_only": True, "stream": True}
    r = requests.post(server.url + "/api/chat", json=body)
    assert r.status_code == 200
    out = r.json()  # one object, even with stream set, as in Ollama
    assert out["done"] is False and out["message"] == {"role": "", "content": ""}
    assert out["_debug_info"] == {"rendered_template": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
                                  "Which city is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
                                  "image_count": 0}
    runner = next(r for r in server.state.scheduler.running() if r.name.startswith("smollm2"))
    steps = runner.model.engine.stats()["steps"]

    r = requests.post(server.url + "/api/generate", json={"model": "smollm2", "prompt": "Hi", "system": "S",
                                                          "_debug_render_only": True})
    info = r.json()["_debug_info"]
    assert r.json()["response"] == "" and info["image_count"] == 0
    assert info["rendered_template"] == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" \
                                        "<|im_start|>assistant\n"
    raw = requests.post(server.url + "/api/generate", json={"model": "smollm2", "prompt": "Hi", "raw": True,
                                                            "_debug_render_only": True}).json()
    assert raw["_debug_info"]["rendered_template"] == "Hi"
    assert runner.model.engine.stats()["steps"] == steps  # nothing was decoded
    r = requests.post(server.url + "/api/chat", json={**body, "_debug_render_only": "yes"})
    assert r.status_code == 400 and "_debug_render_only" in r.json()["error"]
