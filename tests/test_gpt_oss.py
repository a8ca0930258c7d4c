"""gpt-oss through real HTTP: tiny gpt-oss models (llama.cpp's architecture) whose crafted weights
make greedy decoding write a harmony answer on any CPU (tests/tiny_gptoss.py), created in a store
once with the Jinja template llama.cpp's GGUFs embed and once with Ollama's Go TEMPLATE. Reasoning
comes back as thinking (native), reasoning (OpenAI) and thinking blocks (Anthropic), the call as
each API's tool call, streamed or not, and no harmony marker is ever shown."""

from __future__ import annotations

import hashlib
import json

import anthropic
import openai
import pytest
import requests

from a3s_power.prompt.harmony import MARKERS
from tests.gpt_oss_templates import OLLAMA
from tests.model_server import ServerThread
from tests.registry_server import FakeRegistry
from tests.tiny_gptoss import THINK_THEN_ANSWER, THINK_THEN_CALL, as_ollama_dialect, tiny_gptoss, write_tiny_gptoss

THOUGHT, ANSWER = "Let me think about France.", "Paris is the capital of France."
CALL_THOUGHT = "Need the weather."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "A city"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The time",
                                         "parameters": {"type": "object", "properties": {}}}}
# The same models with Ollama's gpt-oss TEMPLATE layer instead of the GGUF's Jinja template.
ANSWERING = ("oss-answer", "oss-answer-go")
CALLING = ("oss-call", "oss-call-go")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt-oss")
    answer = write_tiny_gptoss(folder / "answer.gguf", THINK_THEN_ANSWER, THOUGHT)
    call = write_tiny_gptoss(folder / "call.gguf", THINK_THEN_CALL, CALL_THOUGHT)
    with ServerThread(tmp_path_factory.mktemp("home"), num_parallel=1, context_length=2048) as srv:
        for name, path in (("oss-answer", answer), ("oss-call", call)):
            data = path.read_bytes()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            assert requests.post(f"{srv.url}/api/blobs/{digest}", data=data).status_code in (200, 201)
            for model, extra in ((name, {}), (name + "-go", {"template": OLLAMA})):
                r = requests.post(f"{srv.url}/api/create", json={"model": model, "files": {"m.gguf": digest},
                                                                  "stream": False, **extra})
                assert r.status_code == 200, r.text
        yield srv


def post(server, path: str, body: dict) -> requests.Response:
    r = requests.post(server.url + path, json=body)
    assert r.status_code == 200, r.text
    assert not any(m in r.text for m in MARKERS), r.text  # nothing of harmony on the wire, ever
    return r


def ndjson(r: requests.Response) -> list[dict]:
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


# --- native


@pytest.mark.parametrize("model", ANSWERING)
def test_native_chat_thinking_and_answer(server, model):
    body = {"model": model, "messages": QUESTION, "stream": False}
    message = post(server, "/api/chat", body).json()["message"]
    assert (message["thinking"], message["content"]) == (THOUGHT, ANSWER)
    assert "tool_calls" not in message
    chunks = ndjson(post(server, "/api/chat", {**body, "stream": True}))
    assert "".join(c["message"].get("thinking", "") for c in chunks) == THOUGHT
    assert "".join(c["message"]["content"] for c in chunks) == ANSWER
    assert chunks[-1]["done"] and chunks[-1]["done_reason"] == "stop"


@pytest.mark.parametrize("model", CALLING)
def test_native_chat_tool_call(server, model):
    body = {"model": model, "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER],
            "stream": False}
    message = post(server, "/api/chat", body).json()["message"]
    assert message["thinking"] == CALL_THOUGHT and message["content"] == ""
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "get_weather" and call["function"]["arguments"] == {"city": "Paris"}
    assert call["id"].startswith("call_")
    chunks = ndjson(post(server, "/api/chat", {**body, "stream": True}))
    calls = [c for chunk in chunks for c in chunk["message"].get("tool_calls", [])]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert "".join(c["message"].get("thinking", "") for c in chunks) == CALL_THOUGHT
    assert "".join(c["message"]["content"] for c in chunks) == ""


@pytest.mark.parametrize("model", CALLING)
def test_a_call_to_a_tool_not_offered_is_content(server, model):
    for tools in ([TIME], None):
        body = {"model": model, "messages": [{"role": "user", "content": "Weather?"}], "stream": False}
        message = post(server, "/api/chat", {**body, "tools": tools} if tools else body).json()["message"]
        assert "tool_calls" not in message
        assert message["thinking"] == CALL_THOUGHT and message["content"] == '{"city":"Paris"}'


def test_tool_names_harmony_cannot_declare_are_renamed_and_restored(server):
    # Harmony declares functions as TypeScript names: get-weather is shown to the model as
    # get_weather, and the model's call to get_weather comes back under the name offered.
    dashed = {"type": "function", "function": {**WEATHER["function"], "name": "get-weather"}}
    body = {"model": "oss-call-go", "messages": QUESTION, "tools": [dashed], "stream": False}
    (call,) = post(server, "/api/chat", body).json()["message"]["tool_calls"]
    assert call["function"]["name"] == "get-weather"
    prompt = render(server, "/api/chat", {"model": "oss-call-go", "messages": QUESTION, "tools": [dashed]})
    assert "type get_weather = (_: {" in prompt and "get-weather" not in prompt


@pytest.mark.parametrize("model", ANSWERING + CALLING)
def test_generate_parses_harmony_without_calls(server, model):
    body = {"model": model, "prompt": "What is the capital of France?", "stream": False}
    r = post(server, "/api/generate", body).json()
    expected = (THOUGHT, ANSWER) if model in ANSWERING else (CALL_THOUGHT, '{"city":"Paris"}')
    assert (r["thinking"], r["response"]) == expected
    assert "tool_calls" not in r  # generate offers no tools
    chunks = ndjson(post(server, "/api/generate", {**body, "stream": True}))
    assert ("".join(c.get("thinking", "") for c in chunks), "".join(c["response"] for c in chunks)) == expected


def test_think_false_still_shows_the_reasoning(server):
    # gpt-oss cannot stop reasoning (Ollama: true/false is ignored for it); what the model
    # writes in the analysis channel is still thinking, never content.
    for model in ANSWERING:
        message = post(server, "/api/chat", {"model": model, "messages": QUESTION, "think": False,
                                             "stream": False}).json()["message"]
        assert (message["thinking"], message["content"]) == (THOUGHT, ANSWER)


# --- think levels in the prompt


def render(server, path: str, body: dict) -> str:
    r = requests.post(server.url + path, json={**body, "_debug_render_only": True})
    assert r.status_code == 200, r.text
    return r.json()["_debug_info"]["rendered_template"]


def reasoning_line(prompt: str) -> str | None:
    lines = [line for line in prompt.splitlines() if line.startswith("Reasoning:")]
    assert len(lines) <= 1
    return lines[0] if lines else None


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_think_levels_reach_ollamas_template(server, path):
    base = {"model": "oss-answer-go"}
    base.update({"messages": QUESTION} if path == "/api/chat" else {"prompt": "Hi"})
    cases = {None: "Reasoning: medium", True: "Reasoning: medium", "low": "Reasoning: low",
             "medium": "Reasoning: medium", "high": "Reasoning: high", "max": "Reasoning: high", False: None}
    for think, line in cases.items():
        body = base if think is None else {**base, "think": think}
        assert reasoning_line(render(server, path, body)) == line, think


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_think_levels_reach_the_gguf_template(server, path):
    # Through the Jinja template a level is its reasoning_effort, as Ollama passes it to
    # llama.cpp; true, false and nothing leave the template's own default, medium.
    base = {"model": "oss-answer"}
    base.update({"messages": QUESTION} if path == "/api/chat" else {"prompt": "Hi"})
    cases = {None: "medium", True: "medium", False: "medium", "low": "low", "high": "high", "max": "high"}
    for think, level in cases.items():
        body = base if think is None else {**base, "think": think}
        assert reasoning_line(render(server, path, body)) == f"Reasoning: {level}", think


def test_reasoning_effort_reaches_the_prompt(server):
    # The prompt spells its characters out one token each (tests/tiny_gptoss.py), so the prompt's
    # token count shows which Reasoning line it carries.
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")

    def prompt_tokens(model: str, **extra) -> int:
        return client.chat.completions.create(model=model, messages=QUESTION, **extra).usage.prompt_tokens

    for model in ANSWERING:
        medium = prompt_tokens(model)
        assert prompt_tokens(model, reasoning_effort="low") == medium - len("medium") + len("low")
        assert prompt_tokens(model, reasoning_effort="high") == medium - len("medium") + len("high")
        assert prompt_tokens(model, reasoning_effort="minimal") == medium - len("medium") + len("low")
    # "none" is think:false: Ollama's template then drops the Reasoning line.
    assert prompt_tokens("oss-answer-go", reasoning_effort="none") == prompt_tokens("oss-answer-go") - len(
        "\n\nReasoning: medium")


# --- OpenAI


@pytest.mark.parametrize("model", ANSWERING)
def test_openai_reasoning_and_content(server, model):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    r = client.chat.completions.create(model=model, messages=QUESTION)
    message = r.choices[0].message
    assert message.content == ANSWER and message.model_extra["reasoning"] == THOUGHT
    assert r.choices[0].finish_reason == "stop" and not message.tool_calls
    reasoning, content = [], []
    for chunk in client.chat.completions.create(model=model, messages=QUESTION, stream=True):
        for choice in chunk.choices:
            reasoning.append((choice.delta.model_extra or {}).get("reasoning") or "")
            content.append(choice.delta.content or "")
    assert ("".join(reasoning), "".join(content)) == (THOUGHT, ANSWER)


@pytest.mark.parametrize("model", CALLING)
def test_openai_tool_call(server, model):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    r = client.chat.completions.create(model=model, messages=QUESTION, tools=[WEATHER])
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert message.model_extra["reasoning"] == CALL_THOUGHT and not message.content
    (call,) = message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    reasoning, calls, finish = [], [], None
    for chunk in client.chat.completions.create(model=model, messages=QUESTION, tools=[WEATHER], stream=True):
        for choice in chunk.choices:
            reasoning.append((choice.delta.model_extra or {}).get("reasoning") or "")
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert "".join(reasoning) == CALL_THOUGHT and finish == "tool_calls"
    assert [(c.index, c.function.name, json.loads(c.function.arguments)) for c in calls] == \
        [(0, "get_weather", {"city": "Paris"})]


def test_openai_raw_streams_show_no_marker(server):
    for model, tools in (("oss-answer", None), ("oss-call", [WEATHER])):
        body = {"model": model, "messages": QUESTION, "stream": True}
        post(server, "/v1/chat/completions", {**body, "tools": tools} if tools else body)


# --- Anthropic


def anthropic_tool() -> dict:
    f = WEATHER["function"]
    return {"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}


@pytest.mark.parametrize("model", ANSWERING)
def test_anthropic_thinking_block_and_text(server, model):
    client = anthropic.Anthropic(base_url=server.url, api_key="unused")
    r = client.messages.create(model=model, max_tokens=64, messages=QUESTION)
    assert [b.type for b in r.content] == ["thinking", "text"]
    assert r.content[0].thinking == THOUGHT and r.content[1].text == ANSWER and r.stop_reason == "end_turn"
    with client.messages.stream(model=model, max_tokens=64, messages=QUESTION) as stream:
        events = list(stream)
        final = stream.get_final_message()
    deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
    assert "thinking_delta" in deltas and "text_delta" in deltas
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == THOUGHT and final.content[1].text == ANSWER


@pytest.mark.parametrize("model", CALLING)
def test_anthropic_thinking_and_tool_use(server, model):
    client = anthropic.Anthropic(base_url=server.url, api_key="unused")
    r = client.messages.create(model=model, max_tokens=64, messages=QUESTION, tools=[anthropic_tool()])
    assert [b.type for b in r.content] == ["thinking", "tool_use"] and r.stop_reason == "tool_use"
    assert r.content[0].thinking == CALL_THOUGHT
    assert (r.content[1].name, r.content[1].input) == ("get_weather", {"city": "Paris"})
    with client.messages.stream(model=model, max_tokens=64, messages=QUESTION, tools=[anthropic_tool()]) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert "thinking_delta" in [e.delta.type for e in events if e.type == "content_block_delta"]
    assert [b.type for b in final.content] == ["thinking", "tool_use"] and final.stop_reason == "tool_use"
    assert (final.content[1].name, final.content[1].input) == ("get_weather", {"city": "Paris"})
    body = {"model": model, "max_tokens": 64, "messages": QUESTION, "tools": [anthropic_tool()], "stream": True}
    post(server, "/v1/messages", body)


# --- pulled from a registry, in Ollama's own GGUF dialect


def test_pulled_in_ollamas_dialect_thinks_and_calls_in_every_api(server, tmp_path):
    """As Ollama's library serves gpt-oss: the blob in Ollama's ``gptoss`` dialect with the Go
    TEMPLATE layer beside it; pulled, translated (store/dialect), and read as harmony."""
    blob = as_ollama_dialect(tiny_gptoss(THINK_THEN_CALL, CALL_THOUGHT)).write(tmp_path / "blob.gguf").read_bytes()
    with FakeRegistry() as reg:
        reg.add_model("library/gpt-oss", "tiny", [("application/vnd.ollama.image.model", blob),
                                                  ("application/vnd.ollama.image.template", OLLAMA.encode())])
        name = f"{reg.host}/library/gpt-oss:tiny"
        r = requests.post(server.url + "/api/pull", json={"model": name, "insecure": True, "stream": False})
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
    shown = requests.post(server.url + "/api/show", json={"model": name}).json()
    assert {"completion", "tools", "thinking"} <= set(shown["capabilities"])

    body = {"model": name, "messages": QUESTION, "tools": [WEATHER], "stream": False}
    message = post(server, "/api/chat", body).json()["message"]
    assert message["thinking"] == CALL_THOUGHT and message["content"] == ""
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]] == \
        [("get_weather", {"city": "Paris"})]
    chunks = ndjson(post(server, "/api/chat", {**body, "stream": True}))
    assert [c["function"]["name"] for chunk in chunks for c in chunk["message"].get("tool_calls", [])] == \
        ["get_weather"]

    completion = openai.OpenAI(base_url=server.url + "/v1", api_key="unused").chat.completions.create(
        model=name, messages=QUESTION, tools=[WEATHER])
    message = completion.choices[0].message
    assert message.model_extra["reasoning"] == CALL_THOUGHT
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == \
        [("get_weather", {"city": "Paris"})]

    reply = anthropic.Anthropic(base_url=server.url, api_key="unused").messages.create(
        model=name, max_tokens=64, messages=QUESTION, tools=[anthropic_tool()])
    assert [b.type for b in reply.content] == ["thinking", "tool_use"]
    assert reply.content[0].thinking == CALL_THOUGHT and reply.content[1].input == {"city": "Paris"}


@pytest.mark.parametrize("model", ANSWERING)
def test_a_format_applies_after_the_reasoning(server, model):
    """With ``format`` gpt-oss reasons first and answers in the format (the grammar waits for the
    final channel), as Ollama and llama-server let it: thinking stays, and content is the JSON."""
    schema = {"type": "object", "properties": {"capital": {"enum": ["Paris"]}}, "required": ["capital"]}
    body = {"model": model, "messages": QUESTION, "stream": False, "format": schema}
    message = post(server, "/api/chat", body).json()["message"]
    assert message["thinking"] == THOUGHT
    assert json.loads(message["content"]) == {"capital": "Paris"}
    r = openai.OpenAI(base_url=server.url + "/v1", api_key="x").chat.completions.create(
        model=model, messages=QUESTION, response_format={"type": "json_schema", "json_schema": {
            "name": "answer", "schema": schema}})
    assert json.loads(r.choices[0].message.content) == {"capital": "Paris"}
