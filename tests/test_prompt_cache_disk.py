"""The prompt cache's disk tier through the server: a conversation survives a restart and a model
swapped out, and its next turn is restored instead of evaluated again (/metrics says from where)."""

from __future__ import annotations

import re

import requests

from a3s_power.engine.options import parse_options
from a3s_power.store import prompt_cache
from tests.server_harness import RunningServer, resolver, server_config

QUESTION = "Tell me about the history of Paris. " * 8


def chat(url: str, messages: list[dict]) -> dict:
    r = requests.post(url + "/api/chat", json={"model": "smollm2", "messages": messages, "stream": False,
                                               "options": {"temperature": 0, "num_predict": 8}}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def cache_metric(url: str, event: str) -> float:
    text = requests.get(url + "/metrics", timeout=30).text
    m = re.search(r'power_prompt_cache_conversations_total\{event="%s",model="smollm2:latest"\} (\S+)' % event, text)
    return float(m.group(1)) if m else 0.0


def test_a_conversation_survives_a_restart(smollm2_path, tmp_path):
    config = server_config(home=tmp_path, models_dir=tmp_path / "models", num_parallel=1, context_length=2048,
                           prompt_cache_disk_mb=256)
    first = [{"role": "user", "content": QUESTION}]
    server = RunningServer(config, resolver(smollm2=smollm2_path)).start()
    try:
        answer = chat(server.url, first)["message"]
    finally:
        server.stop()  # the engine closes: what its slot holds goes to disk
    folders = list((tmp_path / "models" / prompt_cache.FOLDER).iterdir())
    assert len(folders) == 1 and list(folders[0].glob("*.kv"))

    server = RunningServer(config, resolver(smollm2=smollm2_path)).start()
    try:
        turn2 = first + [answer, {"role": "user", "content": "And of Rome?"}]
        reply = chat(server.url, turn2)
        assert reply["done"] and reply["message"]["content"] is not None
        assert cache_metric(server.url, "from_disk") == 1
    finally:
        server.stop()


def test_a_model_whose_file_is_gone_loses_its_folder(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    folder = prompt_cache.folder_for(tmp_path, model, kv_cache_type="q8_0")
    (folder / "0.kv").write_bytes(b"cells")
    assert prompt_cache.folder_for(tmp_path, model, kv_cache_type="q8_0") == folder  # stable
    assert prompt_cache.folder_for(tmp_path, model, kv_cache_type="f16") != folder  # another KV layout
    assert prompt_cache.prune(tmp_path) == []
    model.unlink()
    assert len(prompt_cache.prune(tmp_path)) == 2
    assert not list((tmp_path / prompt_cache.FOLDER).iterdir())


def test_a_request_cannot_name_the_folder():
    options = parse_options({"prompt_cache_dir": "/etc", "prompt_cache_disk_mb": 1})
    assert options.load.prompt_cache_dir == "" and options.load.prompt_cache_disk_mb == 0
