"""``run``, ``ps`` and ``stop`` by model name, through a real server, as a user types them."""

from __future__ import annotations

import os
import subprocess
import sys

import ollama
import pytest

from tests.answers import unload
from tests.model_server import ServerThread


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_path, nomic_path):
    with ServerThread(tmp_path_factory.mktemp("home"), num_parallel=1, context_length=1024) as srv:
        client = ollama.Client(host=srv.url)
        list(client.create(model="smol", files={"model.gguf": client.create_blob(smollm2_path)},
                           parameters={"temperature": 0, "num_predict": 128}, stream=True))
        list(client.create(model="nomic", files={"model.gguf": client.create_blob(nomic_path)}, stream=True))
        yield srv


def cli(server, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OLLAMA_HOST": server.url}
    return subprocess.run([sys.executable, "-m", "a3s_power", *args], capture_output=True, text=True, input=input,
                          timeout=300, env=env)


def test_run_by_name_then_ps_and_stop(server):
    question = "Which city is the capital of France?"
    unload(server.url, "smol")
    r = cli(server, "run", "smol", question)
    assert r.returncode == 0, r.stderr
    # The model's parameters make it greedy: the CLI prints exactly what the API answers.
    unload(server.url, "smol")
    answer = ollama.Client(host=server.url).chat(model="smol", messages=[{"role": "user", "content": question}])
    assert r.stdout.strip() == answer.message.content.strip() != ""
    ps = cli(server, "ps")
    assert ps.returncode == 0, ps.stderr
    header, *rows = ps.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    row = next(line for line in rows if line.startswith("smol:latest"))
    assert "100% CPU" in row and "1024" in row and "from now" in row
    assert cli(server, "stop", "smol").returncode == 0
    assert "smol:latest" not in cli(server, "ps").stdout
    missing = cli(server, "stop", "nothing-here")
    assert missing.returncode == 1 and 'couldn\'t find model "nothing-here" to stop' in missing.stderr


def test_run_reads_a_piped_prompt_and_shows_timings(server):
    # The model answers greedily (temperature 0), so the answer ends: a small model sampled at
    # Ollama's default temperature sometimes repeats itself until the context shifts forever.
    r = cli(server, "run", "smol", "--verbose", input="What is the capital of France? Answer in one word.\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    for line in ("total duration:", "load duration:", "prompt eval count:", "eval rate:"):
        assert line in r.stderr


def test_run_with_format_json(server):
    r = cli(server, "run", "smol", "--format", "json", "Return a JSON object for a cat named Tom who is 3 years old, with keys name and age.")
    assert r.returncode == 0, r.stderr
    import json

    assert isinstance(json.loads(r.stdout), dict)  # the format's grammar forces an object; its keys vary


@pytest.mark.slow
def test_run_on_an_embedding_model_prints_the_vector(server):
    r = cli(server, "run", "nomic", "hello world", "--dimensions", "8")
    assert r.returncode == 0, r.stderr
    import json

    vector = json.loads(r.stdout)
    assert len(vector) == 8 and all(isinstance(x, float) for x in vector)


def test_interactive_show_and_save(server):
    import pexpect

    env = {**os.environ, "OLLAMA_HOST": server.url, "OLLAMA_NOHISTORY": "1"}
    child = pexpect.spawn(sys.executable, ["-m", "a3s_power", "run", "smol"], encoding="utf-8", timeout=120, env=env)
    try:
        child.expect_exact(">>> ")
        child.sendline("/show parameters")
        child.expect("temperature")
        child.expect_exact(">>> ")
        child.sendline("/set system You answer in one word.")
        child.expect_exact("Set system message.")
        child.sendline("Which city is the capital of France?")
        child.expect_exact("France?\r\n")
        child.expect(r"\w")  # the answer, whatever this CPU makes the model say
        child.expect_exact(">>> ")
        child.sendline("/save smol-saved")
        child.expect_exact("Created new model 'smol-saved'")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    shown = ollama.Client(host=server.url).show("smol-saved")
    assert "MESSAGE user Which city is the capital of France?" in shown.modelfile
    assert "MESSAGE assistant" in shown.modelfile
