"""SIGTERM on a running server: it stops accepting, ends in-flight streams cleanly and exits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import ollama
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_streams_and_exits(tmp_path, smollm2_path):
    port = free_port()
    env = {**os.environ, "A3S_POWER_HOME": str(tmp_path), "OLLAMA_HOST": f"127.0.0.1:{port}",
           "OLLAMA_NUM_PARALLEL": "1", "OLLAMA_CONTEXT_LENGTH": "2048"}
    env.pop("OLLAMA_MODELS", None)
    server = subprocess.Popen([sys.executable, "-m", "a3s_power", "serve"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if requests.get(url + "/api/version", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        client = ollama.Client(host=url)
        list(client.create(model="tiny", files={"m.gguf": client.create_blob(smollm2_path)}, stream=True))
        with requests.post(url + "/api/generate", stream=True, json={
                "model": "tiny", "prompt": "Write a very long story about a dragon.", "options": {"num_predict": 100000, "temperature": 1}}) as r:
            lines = r.iter_lines()
            first = json.loads(next(lines))
            assert first["done"] is False
            server.send_signal(signal.SIGTERM)
            last = first
            for line in lines:
                if line:
                    last = json.loads(line)
        assert last["done"] is True  # the stream ended with a final object, not a broken connection
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
    output = server.stdout.read()
    assert "Traceback" not in output
