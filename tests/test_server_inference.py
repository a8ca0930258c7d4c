"""Inference behaviour through the full server over a real model store: models created from real
GGUF files with the ollama client, then tool calls, thinking, Go templates, structured output,
embeddings and fill-in-the-middle, with the official ollama and openai clients."""

from __future__ import annotations

import json

import jsonschema
import ollama
import openai
import pytest
import requests

from tests.answers import unload
from tests.model_server import ServerThread

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
                   "required": ["city"]}}}
GREEDY = {"temperature": 0}

THINKING_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
    "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<|im_end|>\n{{ end -}}"
    "<|im_start|>assistant\n{{ if .Think }}<think>\n{{ end }}"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(tmp_path_factory.mktemp("home"), num_parallel=2, context_length=2048) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server) -> ollama.Client:
    return ollama.Client(host=server.url)


def create_from(client: ollama.Client, name: str, path: str, **extra) -> None:
    digest = client.create_blob(path)
    list(client.create(model=name, files={"model.gguf": digest}, stream=True, **extra))


@pytest.fixture(scope="module")
def models(client, smollm2_path, qwen_path, nomic_path):
    create_from(client, "smollm2", smollm2_path)
    create_from(client, "qwen", qwen_path)
    create_from(client, "nomic-embed-text", nomic_path)
    create_from(client, "smol-thinker", smollm2_path, template=THINKING_TEMPLATE)
    create_from(client, "smol-pirate", smollm2_path, system="You are a pirate. Always answer like a pirate.",
                parameters={"temperature": 0, "stop": ["<|im_end|>"]})
    return True


def test_created_models_are_listed_with_capabilities(client, models):
    names = {m.model for m in client.list().models}
    assert {"smollm2:latest", "qwen:latest", "nomic-embed-text:latest"} <= names
    assert "tools" in client.show("qwen").capabilities
    assert "embedding" in client.show("nomic-embed-text").capabilities
    assert "thinking" in client.show("smol-thinker").capabilities


def raw_answer(server, model: str, body: dict, options: dict) -> str:
    """What the model writes for a chat request, before any parsing: the prompt the server renders
    for it, generated raw with the same options."""
    rendered = requests.post(server.url + "/api/chat", json={**body, "model": model, "stream": False,
                                                             "_debug_render_only": True}).json()
    r = requests.post(server.url + "/api/generate", json={
        "model": model, "prompt": rendered["_debug_info"]["rendered_template"], "raw": True, "stream": False,
        "options": options})
    return r.json()["response"]


@pytest.mark.slow
def test_tool_call_native(client, server, models):
    # Whether this model calls the tool depends on the CPU's arithmetic; what the server must do
    # with its output does not: a call written in the model's markers comes back structured.
    question = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    unload(server.url, "qwen")
    r = client.chat(model="qwen", messages=question, tools=[WEATHER_TOOL], options=GREEDY)
    unload(server.url, "qwen")
    raw = raw_answer(server, "qwen", {"messages": question, "tools": [WEATHER_TOOL]}, GREEDY)
    calls = r.message.tool_calls
    start = raw.find("{")
    if "get_weather" in raw and start >= 0:  # a call, in Qwen's <tool_call> markers or bare
        written, _ = json.JSONDecoder().raw_decode(raw[start:])
        assert calls and calls[0].function.name == written["name"] == "get_weather", raw
        assert calls[0].function.arguments == written["arguments"], raw
    else:
        assert not calls and r.message.content == raw
    # A tool's answer goes back in the history (tool_name) and the model answers from it.
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    follow = client.chat(model="qwen", options=GREEDY, tools=[WEATHER_TOOL], messages=[
        *question, {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": '{"temperature": "22 C", "sky": "sunny"}', "tool_name": "get_weather"}])
    assert follow.done and (follow.message.content.strip() or follow.message.tool_calls)
    rendered = requests.post(server.url + "/api/chat", json={
        "model": "qwen", "tools": [WEATHER_TOOL], "_debug_render_only": True, "messages": [
            *question, {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": '{"temperature": "22 C", "sky": "sunny"}', "tool_name": "get_weather"}]})
    template = rendered.json()["_debug_info"]["rendered_template"]
    assert '"city": "Paris"' in template and "22 C" in template


@pytest.mark.slow
def test_tool_call_openai_streaming(server, models):
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    # tool_choice "required" makes the call a grammar's, not the model's, decision.
    chunks = list(oa.chat.completions.create(model="qwen", temperature=0, stream=True, tools=[WEATHER_TOOL],
                                             tool_choice="required", max_tokens=80,
                                             messages=[{"role": "user", "content": "What is the weather like in Tokyo today?"}]))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(json.loads(calls[0].function.arguments)["city"], str)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.slow
def test_tool_choice_forces_a_named_call(server, models):
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    r = oa.chat.completions.create(model="qwen", temperature=0, tools=[WEATHER_TOOL],
                                   tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                   messages=[{"role": "user", "content": "Tell me about Rome."}], max_tokens=60)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    assert r.choices[0].finish_reason == "tool_calls"
    none = oa.chat.completions.create(model="qwen", temperature=0, tools=[WEATHER_TOOL], tool_choice="none",
                                      messages=[{"role": "user", "content": "Hi"}], max_tokens=10)
    assert not none.choices[0].message.tool_calls


def test_thinking_is_separated(client, server, models):
    options = {**GREEDY, "num_predict": 24}
    question = [{"role": "user", "content": "What is 2+2?"}]
    unload(server.url, "smol-thinker")
    r = client.chat(model="smol-thinker", messages=question, think=True, options=options)
    unload(server.url, "smol-thinker")
    # The template opens <think>: what the model writes up to </think> is reasoning, the rest content.
    raw = raw_answer(server, "smol-thinker", {"messages": question, "think": True}, options)
    thought, _, said = raw.partition("</think>")
    assert r.message.thinking == thought.strip() and r.message.content == said.lstrip()
    assert r.message.thinking
    r = client.chat(model="smol-thinker", messages=[{"role": "user", "content": "What is 2+2?"}], think=False,
                    options={**GREEDY, "num_predict": 24})
    assert r.message.content and not r.message.thinking


def test_tools_on_a_model_without_tools_is_400(server, models):
    r = requests.post(server.url + "/api/chat", json={"model": "smollm2", "tools": [WEATHER_TOOL],
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"] == '"smollm2" does not support tools'


def test_think_on_a_model_that_cannot_think_is_400(server, models):
    r = requests.post(server.url + "/api/chat", json={"model": "smollm2", "think": True,
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"] == '"smollm2" does not support thinking'


def test_modelfile_system_and_parameters_apply(client, models):
    r = client.chat(model="smol-pirate", messages=[{"role": "user", "content": "Hello!"}], options={"num_predict": 40})
    assert r.message.content
    shown = client.show("smol-pirate")
    assert "pirate" in shown.modelfile and "temperature" in shown.parameters


SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
     "required": ["name", "age"]},
    {"type": "object", "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                                                 "minItems": 1, "maxItems": 3}}, "required": ["colors"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "score": {"type": "number"},
                                      "when": {"type": "string", "format": "date"}},
     "required": ["ok", "score", "when"], "additionalProperties": False},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_structured_output_validates(client, models, schema):
    r = client.chat(model="smollm2", format=schema, options={"temperature": 0.7, "seed": 3, "num_predict": 120},
                    messages=[{"role": "user", "content": "Describe a person as JSON."}])
    jsonschema.validate(json.loads(r.message.content), schema)


def test_openai_json_schema_response_format(server, models):
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    schema = SCHEMAS[0]
    r = oa.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "A person, please."}],
                                   response_format={"type": "json_schema",
                                                    "json_schema": {"name": "person", "schema": schema}},
                                   max_tokens=120, seed=1)
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_invalid_schema_is_400(server, models):
    r = requests.post(server.url + "/api/chat", json={"model": "smollm2", "format": {"$ref": "#/$defs/missing"},
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400


def test_long_conversations_are_truncated_to_fit(client, models):
    filler = "Tell me more about the weather, the sea and the mountains. " * 40
    history = []
    for i in range(8):
        history += [{"role": "user", "content": f"{i}: {filler}"}, {"role": "assistant", "content": "Sure."}]
    history.append({"role": "user", "content": "Thanks!"})
    r = client.chat(model="smollm2", messages=history, options={**GREEDY, "num_ctx": 1024, "num_predict": 5})
    assert r.done and r.prompt_eval_count < 1024
    refused = requests.post(client._client.base_url.join("/api/chat").__str__(), json={
        "model": "smollm2", "messages": history, "stream": False, "truncate": False,
        "options": {**GREEDY, "num_ctx": 1024, "num_predict": 5}})
    assert refused.status_code == 400 and "longer than the context" in refused.json()["error"]


@pytest.mark.slow
def test_embeddings_endpoints(client, server, models):
    r = client.embed(model="nomic-embed-text", input=["search_query: cats", "search_query: dogs"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 768
    assert abs(sum(x * x for x in r.embeddings[0]) - 1.0) < 1e-3
    short = client.embed(model="nomic-embed-text", input="hello", dimensions=64)
    assert len(short.embeddings[0]) == 64 and abs(sum(x * x for x in short.embeddings[0]) - 1.0) < 1e-3
    legacy = client.embeddings(model="nomic-embed-text", prompt="hello")
    assert len(legacy.embedding) == 768 and abs(sum(x * x for x in legacy.embedding) - 1.0) > 1e-3
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    e = oa.embeddings.create(model="nomic-embed-text", input=["a", "b"], encoding_format="base64")
    import base64
    import struct

    assert len(e.data) == 2
    vector = struct.unpack("<768f", base64.b64decode(e.data[0].embedding))
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-3
    bad = requests.post(server.url + "/api/embed", json={"model": "nomic-embed-text", "input": [1, 2]})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid input type"


@pytest.mark.slow
def test_fill_in_the_middle(client, server, models):
    options = {**GREEDY, "num_predict": 10}
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    unload(server.url, "qwen")
    r = client.generate(model="qwen", prompt=prefix, suffix=suffix, options=options)
    unload(server.url, "qwen")
    # Qwen's own fill-in-the-middle layout, written by hand, gives the same answer.
    raw = client.generate(model="qwen", prompt=f"<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
                          raw=True, options=options)
    assert r.response == raw.response and r.eval_count == raw.eval_count > 0


CALL_SCHEMA = {"type": "object", "properties": {"name": {"const": "get_weather"}, "arguments": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}},
    "required": ["name", "arguments"]}


@pytest.mark.slow
def test_generate_never_turns_text_into_tool_calls(server, models):
    """Issue 16: LiteLLM's ollama provider asks for a tool call as JSON on /api/generate. The answer
    (forced by the schema, so the same on any machine) is text; no tools were offered, so no
    tool_calls, as in Ollama, which parses generate output only with a model's built-in parser."""
    prompt = 'Call get_weather for Oslo. Answer with {"name": "get_weather", "arguments": {"city": ...}}.'
    r = requests.post(server.url + "/api/generate", timeout=300, json={
        "model": "qwen", "prompt": prompt, "stream": False, "format": CALL_SCHEMA,
        "options": {**GREEDY, "num_predict": 60}}).json()
    assert "tool_calls" not in r
    answer = json.loads(r["response"])
    assert answer["name"] == "get_weather" and isinstance(answer["arguments"]["city"], str)
    streamed = [json.loads(line) for line in requests.post(server.url + "/api/generate", timeout=300, json={
        "model": "qwen", "prompt": prompt, "format": CALL_SCHEMA, "options": {**GREEDY, "num_predict": 60}},
        stream=True).iter_lines() if line]
    assert not any("tool_calls" in part for part in streamed)
    assert "".join(part["response"] for part in streamed) == r["response"]


@pytest.mark.slow
def test_completions_keep_text_that_looks_like_a_tool_call(server, models):
    prompt = ('You can call the function get_weather(city). Reply only with <tool_call>{"name": "get_weather", '
              '"arguments": {"city": "..."}}</tool_call>. What is the weather in Oslo?')
    r = requests.post(server.url + "/v1/completions", timeout=300, json={
        "model": "qwen", "prompt": prompt, "max_tokens": 40, "temperature": 0}).json()
    choice = r["choices"][0]
    assert "tool_calls" not in choice and choice["finish_reason"] in ("stop", "length")
    # Whatever the model wrote is in the text: nothing was taken out of it.
    assert r["usage"]["completion_tokens"] == 0 or choice["text"] != ""


def test_adapter_layer_applies_a_lora_over_the_shared_base(client, server, models, smollm2_path, tmp_path_factory):
    from tests.lora_adapters import write_lora

    adapter = write_lora(tmp_path_factory.mktemp("lora") / "adapter.gguf", smollm2_path, seed=3)
    list(client.create(model="smol-lora", from_="smollm2", adapters={"adapter.gguf": client.create_blob(adapter)},
                       stream=True))
    assert "ADAPTER" in client.show("smol-lora").modelfile
    question = [{"role": "user", "content": "Which city is the capital of France?"}]
    unload(server.url, "smollm2")
    base = client.chat(model="smollm2", messages=question, options={**GREEDY, "num_predict": 12}).message.content
    tuned = client.chat(model="smol-lora", messages=question, options={**GREEDY, "num_predict": 12}).message.content
    assert tuned != base
    broken = write_lora(tmp_path_factory.mktemp("lora") / "broken.gguf", smollm2_path, seed=3)
    broken.write_bytes(broken.read_bytes()[:200])
    with pytest.raises(ollama.ResponseError, match="GGUF"):  # refused at create, nothing written
        list(client.create(model="smol-broken", from_="smollm2", adapters={"b.gguf": client.create_blob(broken)},
                           stream=True))
    # An adapter made for another model's shapes: accepted as a file, refused when loaded.
    from tests.tiny_models import write_tiny_llama

    other = write_tiny_llama(tmp_path_factory.mktemp("lora") / "other.gguf")
    bad = write_lora(tmp_path_factory.mktemp("lora") / "mismatch.gguf", str(other), seed=3)
    list(client.create(model="smol-badlora", from_="smollm2", adapters={"bad.gguf": client.create_blob(bad)},
                       stream=True))
    r = requests.post(client._client.base_url.join("/api/chat").__str__(), json={
        "model": "smol-badlora", "messages": question, "stream": False})
    assert r.status_code == 500 and "adapter" in r.json()["error"]
    unload(server.url, "smollm2")
    again = client.chat(model="smollm2", messages=question, options={**GREEDY, "num_predict": 12})
    assert again.message.content == base  # the base model is still fine
