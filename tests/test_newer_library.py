"""What Ollama's newer library needs from the store and the API (issue 15, item 3), through real HTTP
on 127.0.0.1 with the official ``ollama`` client where it reads the fields and raw requests where it
drops them:

- manifests with the newer layer types (``image.tensor``, ``image.json`` with a ``name``,
  ``image.draft``) pull, list, show, copy and delete; a safetensors model (Ollama's MLX format) is
  refused at run time with a 400 in each API's shape, and reports no capabilities;
- the config blob's ``renderer``, ``parser``, ``requires``, ``context_length``, ``embedding_length``
  are read and reported; ``/api/tags`` entries carry ``capabilities`` and the two lengths;
- tool calls carry ``id`` and ``function.index``; messages' ``tool_name`` and ``tool_call_id``
  reach Go and Jinja templates.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct

import ollama
import pytest
import requests

from a3s_power.cli.models import render_show
from a3s_power.registry import TransferSettings
from tests.model_server import ServerThread
from tests.registry_server import FakeRegistry
from tests.tiny_models import write_tiny_llama

FAST = TransferSettings(backoff_s=0.01, progress_interval_s=0.0, max_retries=1)
P = "application/vnd.ollama.image."
GREEDY = {"temperature": 0, "num_predict": 2, "num_thread": 2}

# A Hugging Face config.json as Ollama's MLX import stores it (an image.json layer named config.json).
HF_CONFIG = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64,
             "num_hidden_layers": 2, "max_position_embeddings": 40960, "num_attention_heads": 2,
             "num_key_value_heads": 1, "intermediate_size": 128, "vocab_size": 300, "torch_dtype": "bfloat16"}
TENSORS = {"model.embed_tokens.weight": [300, 64], "model.layers.0.self_attn.q_proj.weight": [64, 64],
           "model.norm.weight": [64]}
# The config blob Ollama writes for such a model: it says what the MLX engine could do with it.
MLX_CONFIG = {"model_format": "safetensors", "model_family": "", "model_families": None, "model_type": "",
              "file_type": "bf16", "renderer": "qwen3", "parser": "qwen3", "requires": "0.19.0",
              "capabilities": ["completion", "tools", "thinking"], "architecture": "amd64", "os": "linux"}


def safetensors_blob(name: str, shape: list[int]) -> bytes:
    """One tensor as a safetensors file, the way Ollama stores each image.tensor layer."""
    nbytes = math.prod(shape) * 2
    header = json.dumps({name: {"dtype": "BF16", "shape": shape, "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(nbytes)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(tmp_path_factory.mktemp("home"), FAST) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server) -> ollama.Client:
    return ollama.Client(host=server.url)


@pytest.fixture(scope="module")
def registry():
    with FakeRegistry() as reg:
        yield reg


@pytest.fixture(scope="module")
def draft_bytes(tmp_path_factory) -> bytes:
    return write_tiny_llama(tmp_path_factory.mktemp("draft") / "draft.gguf", seed=7).read_bytes()


def post(server, path: str, body: dict) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=120)


def tags_entry(server, name: str) -> dict:
    models = requests.get(server.url + "/api/tags", timeout=30).json()["models"]
    return next(m for m in models if m["name"] == name)


def blob_files(server) -> set[str]:
    folder = server.store.blobs.dir
    return {p.name for p in folder.iterdir() if p.name.startswith("sha256-")} if folder.is_dir() else set()


def test_a_safetensors_model_pulls_lists_shows_and_deletes_but_does_not_run(server, client, registry):
    layers = [(P + "tensor", safetensors_blob(n, s), n) for n, s in TENSORS.items()]
    layers += [(P + "json", json.dumps(HF_CONFIG).encode(), "config.json"),
               (P + "json", b'{"model": {"type": "BPE"}}', "tokenizer.json")]
    registry.add_model("library/qwen-mlx", "4b", layers, config=json.dumps(MLX_CONFIG).encode())
    name = f"{registry.host}/library/qwen-mlx:4b"
    before = blob_files(server)

    lines = list(client.pull(name, insecure=True, stream=True))
    assert lines[-1].status == "success"
    assert len(blob_files(server) - before) == len(layers) + 1  # every layer and the config

    listed = [m.model for m in client.list().models]
    assert name in listed
    entry = tags_entry(server, name)
    assert "capabilities" not in entry  # nothing it can do here; Ollama omits an empty list
    assert entry["details"] == {"parent_model": "", "format": "safetensors", "family": "qwen3", "families": None,
                                "parameter_size": "", "quantization_level": "bf16", "context_length": 40960,
                                "embedding_length": 64}

    shown = client.show(name)
    assert shown.details.format == "safetensors" and shown.details.family == "qwen3"
    n_params = sum(math.prod(s) for s in TENSORS.values())
    assert shown.modelinfo == {"general.architecture": "qwen3", "general.parameter_count": n_params,
                               "qwen3.attention.head_count": 2, "qwen3.attention.head_count_kv": 1,
                               "qwen3.block_count": 2, "qwen3.context_length": 40960, "qwen3.embedding_length": 64,
                               "qwen3.feed_forward_length": 128, "qwen3.vocab_size": 300}
    raw = post(server, "/api/show", {"model": name, "verbose": True}).json()
    assert "capabilities" not in raw  # the config's completion/tools/thinking are the MLX engine's, not ours
    assert (raw["requires"], raw["renderer"], raw["parser"]) == ("0.19.0", "qwen3", "qwen3")
    assert raw["details"]["parameter_size"] == "23K"  # Ollama's HumanNumber of the tensors' 23,168
    assert raw["tensors"] == sorted(({"name": n, "type": "BF16", "shape": s} for n, s in TENSORS.items()),
                                    key=lambda t: t["name"])
    assert f"\nFROM {name}\n" in raw["modelfile"]  # no single file holds the weights: the model is named
    summary = render_show(raw)  # `a3s-power show`, as `ollama show` prints it
    assert re.search(r"requires\s+0\.19\.0", summary) and "Capabilities" not in summary

    # Running it: a 400 that says why, in each API's own shape.
    why = "cannot run here: its weights are safetensors tensors for Ollama's MLX engine"
    for call in (lambda: client.chat(model=name, messages=[{"role": "user", "content": "hi"}]),
                 lambda: client.generate(model=name, prompt="hi"),
                 lambda: client.embed(model=name, input="hi")):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 400 and why in err.value.error
    r = post(server, "/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert why in r.json()["error"]["message"]
    r = post(server, "/v1/messages", {"model": name, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["type"] == "error" and why in r.json()["error"]["message"]

    client.copy(name, "mlx-copy")
    assert client.show("mlx-copy").details.family == "qwen3"
    client.delete(name)
    assert blob_files(server) != before  # the copy still holds the blobs
    client.delete("mlx-copy")
    assert blob_files(server) == before
    assert name not in [m.model for m in client.list().models]


def test_a_gguf_model_with_draft_and_json_layers_runs_and_reports_its_config(server, client, registry, tiny_path,
                                                                            draft_bytes):
    config = {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"], "model_type": "1.2M",
              "file_type": "F32", "renderer": "qwen3-coder", "parser": "qwen3-coder", "requires": "99.0.0",
              "context_length": 2048, "embedding_length": 64, "architecture": "amd64", "os": "linux"}
    model = open(tiny_path, "rb").read()
    layers = [(P + "model", model), (P + "draft", draft_bytes), (P + "json", b'{"eos_token_id": 2}', "config.json"),
              (P + "license", b"MIT")]
    registry.add_model("library/drafted", "1b", layers, config=json.dumps(config).encode())
    name = f"{registry.host}/library/drafted:1b"
    before = blob_files(server)
    assert client.pull(name, insecure=True, stream=False).status == "success"

    entry = tags_entry(server, name)
    assert entry["capabilities"] == ["completion"]
    assert entry["details"]["context_length"] == 2048 and entry["details"]["embedding_length"] == 64
    raw = post(server, "/api/show", {"model": name}).json()
    # A `requires` newer than the Ollama API we report (0.32.15) is reported, not enforced: Ollama's
    # own server does the same (only ollama.com refuses old clients, at pull).
    assert (raw["requires"], raw["renderer"], raw["parser"]) == ("99.0.0", "qwen3-coder", "qwen3-coder")
    assert raw["capabilities"] == ["completion"] and raw["license"] == "MIT"
    assert "context_length" not in raw["details"]  # /api/show's details never carried them in Ollama

    # The draft and json layers are kept; the model layer is what runs.
    reply = client.generate(model=name, prompt="hi", options=GREEDY)
    assert reply.done and reply.eval_count >= 1
    client.delete(name)
    assert blob_files(server) == before


def test_tags_carry_capabilities_and_lengths_from_the_weights(server, client, tiny_path, tmp_path):
    embed_path = write_tiny_llama(tmp_path / "emb.gguf", n_ctx=512)
    digest = {}
    for key, path in (("chat", tiny_path), ("emb", embed_path)):
        data = open(path, "rb").read()
        digest[key] = "sha256:" + hashlib.sha256(data).hexdigest()
        assert requests.post(f"{server.url}/api/blobs/{digest[key]}", data=data, timeout=30).status_code in (200, 201)
    tools_template = "{{ if .Tools }}tools: {{ .Tools }}{{ end }}{{ .Prompt }}"
    list(client.create(model="tiny-tools", files={"tiny.gguf": digest["chat"]}, template=tools_template))
    list(client.create(model="tiny-512", files={"e.gguf": digest["emb"]}))

    entry = tags_entry(server, "tiny-tools:latest")
    assert entry["capabilities"] == client.show("tiny-tools").capabilities == ["completion", "tools"]
    assert (entry["details"]["context_length"], entry["details"]["embedding_length"]) == (1024, 64)
    assert tags_entry(server, "tiny-512:latest")["details"]["context_length"] == 512
    # The client reads the entry it knows; the new fields ride along.
    assert {"tiny-tools:latest", "tiny-512:latest"} <= {m.model for m in client.list().models}

    # /api/ps keeps Ollama's shape: details without the lengths, the loaded context beside them.
    client.generate(model="tiny-tools", prompt="hi", options=GREEDY)
    running = next(m for m in requests.get(server.url + "/api/ps", timeout=30).json()["models"]
                   if m["name"] == "tiny-tools:latest")
    assert "context_length" not in running["details"] and running["context_length"] > 0
    for name in ("tiny-tools", "tiny-512"):
        client.delete(name)


# --- tool calls: id and index out, tool_name and tool_call_id in ---------------------------------

WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                             "parameters": {"type": "object", "required": ["city"],
                                                            "properties": {"city": {"type": "string"}}}}}]
CALL = {"type": "object", "required": ["name", "arguments"],
        "properties": {"name": {"const": "get_weather"},
                       "arguments": {"type": "object", "required": ["city"], "properties": {"city": {"const": "Paris"}}}}}
HISTORY = [{"role": "user", "content": "Weather in Paris?"},
           {"role": "assistant", "content": "",
            "tool_calls": [{"id": "call_abc", "function": {"index": 0, "name": "get_weather",
                                                           "arguments": {"city": "Paris"}}}]},
           {"role": "tool", "content": "22 C", "tool_name": "get_weather", "tool_call_id": "call_abc"}]
# Ollama's template data: a message's .ToolName and .ToolCallID, a call's .ID and .Function.Index.
GO_TEMPLATE = ('{{ if .Tools }}[tools]{{ end }}{{ range .Messages }}{{ if eq .Role "tool" }}'
               '<{{ .ToolName }}|{{ .ToolCallID }}>{{ .Content }}{{ else }}{{ .Role }}:{{ .Content }}'
               '{{ range .ToolCalls }}[{{ .ID }} {{ .Function.Index }} {{ .Function.Name }} {{ .Function.Arguments }}]'
               '{{ end }}{{ end }}\n{{ end }}')
# A Hugging Face template reads OpenAI's shape: a tool message's tool_call_id (and name), a call's id.
JINJA_TEMPLATE = ("{% for m in messages %}{% if m.role == 'tool' %}<{{ m.name }}|{{ m.tool_call_id }}>{{ m.content }}"
                  "{% else %}{{ m.role }}:{{ m.content }}{% for c in m.tool_calls or [] %}"
                  "[{{ c.id }} {{ c.function.name }} {{ c.function.arguments.city }}]{% endfor %}{% endif %}{{ '\\n' }}"
                  "{% endfor %}{% if tools %}[tools]{% endif %}")


@pytest.fixture(scope="module")
def tool_models(server, client, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("tools")
    for name, path, template in (("go-tools", write_tiny_llama(folder / "go.gguf"), GO_TEMPLATE),
                                 ("jinja-tools", write_tiny_llama(folder / "j.gguf", chat_template=JINJA_TEMPLATE), None)):
        data = path.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert requests.post(f"{server.url}/api/blobs/{digest}", data=data, timeout=30).status_code in (200, 201)
        extra = {"template": template} if template else {}
        list(client.create(model=name, files={"m.gguf": digest}, **extra))


def rendered(server, model: str) -> str:
    r = post(server, "/api/chat", {"model": model, "messages": HISTORY, "tools": WEATHER, "_debug_render_only": True})
    assert r.status_code == 200, r.text
    return r.json()["_debug_info"]["rendered_template"]


def test_tool_name_and_tool_call_id_reach_go_and_jinja_templates(server, client, tool_models):
    assert rendered(server, "go-tools") == ('[tools]user:Weather in Paris?\nassistant:[call_abc 0 get_weather '
                                            '{"city":"Paris"}]\n<get_weather|call_abc>22 C\n')
    assert rendered(server, "jinja-tools") == ("user:Weather in Paris?\nassistant:[call_abc get_weather Paris]\n"
                                               "<get_weather|call_abc>22 C\n[tools]")
    # The official client sends tool_name as it is (it has no tool_call_id field); the chat runs.
    reply = client.chat(model="go-tools", messages=HISTORY, tools=WEATHER, options=GREEDY)
    assert reply.done


def test_tool_calls_carry_an_id_and_their_index(server, client, tool_models):
    # A grammar makes the random-weight model write the calls; the parser turns them into tool calls.
    options = {"temperature": 0, "num_thread": 2, "num_predict": 4000}
    body = {"model": "go-tools", "messages": HISTORY[:1], "tools": WEATHER, "format": CALL, "options": options}
    reply = post(server, "/api/chat", {**body, "stream": False}).json()
    assert reply["done_reason"] == "stop" and reply["message"]["content"] == ""
    [call] = reply["message"]["tool_calls"]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    parsed = client.chat(**{**body, "stream": False})  # the client reads the call (it drops id and index)
    assert parsed.message.tool_calls[0].function.name == "get_weather"

    two = {**body, "format": {"type": "array", "items": CALL, "minItems": 2, "maxItems": 2}, "stream": True}
    r = requests.post(server.url + "/api/chat", json=two, timeout=120)
    calls = [c for line in r.text.splitlines() for c in json.loads(line)["message"].get("tool_calls", [])]
    assert [c["function"]["index"] for c in calls] == [0, 1]  # counted across the whole answer
    assert len({c["id"] for c in calls}) == 2

    # The OpenAI route gives the same calls their ids (its own index is the delta's).
    r = post(server, "/v1/chat/completions", {"model": "go-tools", "messages": HISTORY[:1], "tools": WEATHER,
                                              "tool_choice": "required", "max_tokens": 4000, "temperature": 0})
    [call] = r.json()["choices"][0]["message"]["tool_calls"]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"]) and call["function"]["name"] == "get_weather"
