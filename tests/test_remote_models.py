"""Remote models: a manifest that names a host and a model there instead of weights. Another real
A3S Power server plays the remote host; the fake registry plays ollama.com where a signed-in key
is needed."""

from __future__ import annotations

import ollama
import openai
import pytest
import requests

from a3s_power import auth
from tests.answers import unload
from tests.model_server import ServerThread
from tests.registry_server import FakeRegistry
from tests.server_harness import RunningServer, resolver, server_config

QUESTION = [{"role": "user", "content": "Which city is the capital of France?"}]


@pytest.fixture(scope="module")
def remote(smollm2_path):
    srv = RunningServer(server_config(num_parallel=1, context_length=1024), resolver(smollm2=smollm2_path)).start()
    yield srv
    srv.stop()


def create_remote(server, name: str, remote_host: str, **extra) -> requests.Response:
    return requests.post(server.url + "/api/create", json={"model": name, "from": "smollm2",
                                                           "remote_host": remote_host, "stream": False, **extra})


def test_a_remote_model_answers_through_every_api(tmp_path, remote):
    with ServerThread(tmp_path / "home", remotes=("127.0.0.1",)) as server:
        r = create_remote(server, "faraway", remote.url, system="Answer in one short sentence.")
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        host = f"http://127.0.0.1:{remote.port}"

        show = requests.post(server.url + "/api/show", json={"model": "faraway"}).json()
        assert (show["remote_model"], show["remote_host"]) == ("smollm2", host)
        tags = {m["name"]: m for m in requests.get(server.url + "/api/tags").json()["models"]}
        assert tags["faraway:latest"]["remote_host"] == host

        unload(remote.url, "smollm2")
        lines = [line for line in requests.post(server.url + "/api/chat", json={
            "model": "faraway", "messages": QUESTION, "options": {"temperature": 0}}).iter_lines() if line]
        chunks = [requests.models.complexjson.loads(line) for line in lines]
        assert all(c["model"] == "faraway" and c["remote_model"] == "smollm2" and c["remote_host"] == host
                   for c in chunks)
        assert chunks[-1]["done"] and chunks[-1]["eval_count"] > 0
        text = "".join(c["message"]["content"] for c in chunks)
        # The remote host's own answer to the same conversation, system prompt included.
        unload(remote.url, "smollm2")
        direct = ollama.Client(host=remote.url).chat(model="smollm2", options={"temperature": 0}, messages=[
            {"role": "system", "content": "Answer in one short sentence."}, *QUESTION])
        assert text == direct.message.content != ""

        client = ollama.Client(host=server.url)
        generated = client.generate(model="faraway", prompt="Which city is the capital of France?",
                                    options={"temperature": 0}, stream=False)
        assert generated.response.strip() and generated.done
        oa = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
        unload(remote.url, "smollm2")
        answer = oa.chat.completions.create(model="faraway", messages=QUESTION, temperature=0)
        assert answer.choices[0].message.content == text
        assert server.store.resolve("faraway").system == "Answer in one short sentence."

        r = requests.post(server.url + "/api/embed", json={"model": "faraway", "input": "hi"})
        assert r.status_code == 400 and "remote model" in r.json()["error"]


def test_a_host_outside_ollama_remotes_is_refused(tmp_path, remote):
    with ServerThread(tmp_path / "home") as server:  # OLLAMA_REMOTES: ollama.com alone
        assert create_remote(server, "faraway", remote.url).status_code == 200
        r = requests.post(server.url + "/api/chat", json={"model": "faraway", "messages": QUESTION})
        assert (r.status_code, r.json()) == (400, {"error": "this server cannot run this remote model"})
        assert create_remote(server, "bad", "ftp://nowhere").json() == {"error": "bad remote"}


def test_a_cloud_model_needs_a_signed_in_key(tmp_path):
    with FakeRegistry() as cloud, ServerThread(tmp_path / "home", remotes=("127.0.0.1",), auth=True,
                                               cloud_url=cloud.url) as server:
        assert create_remote(server, "cloudy", cloud.url).status_code == 200
        r = requests.post(server.url + "/api/chat", json={"model": "cloudy", "messages": QUESTION, "stream": False})
        assert r.status_code == 401
        assert r.json() == {"error": "unauthorized", "signin_url": auth.signin_url(cloud.url)}
        r = requests.post(server.url + "/v1/chat/completions", json={"model": "cloudy", "messages": QUESTION})
        assert r.status_code == 401 and r.json()["error"]["message"] == "unauthorized"

        cloud.accounts[auth.public_key_line().split(" ")[1]] = "alice"
        r = requests.post(server.url + "/api/chat", json={"model": "cloudy", "messages": QUESTION, "stream": False})
        assert r.status_code == 200
        out = r.json()
        assert out["message"]["content"] == "Hello from the cloud." and out["eval_count"] == 5


def test_a_cloud_model_pulled_from_a_registry_is_a_remote_model(tmp_path):
    import json

    with FakeRegistry() as reg, ServerThread(tmp_path / "home") as server:
        config = {"model_format": "", "remote_host": "https://ollama.com:443", "remote_model": "gpt-oss:20b",
                  "capabilities": ["completion", "tools", "thinking"]}
        reg.add_model("library/gpt-oss", "20b-cloud", [], config=json.dumps(config).encode())
        name = f"{reg.host}/library/gpt-oss:20b-cloud"
        r = requests.post(server.url + "/api/pull", json={"model": name, "insecure": True, "stream": False})
        assert r.json() == {"status": "success"}
        show = requests.post(server.url + "/api/show", json={"model": name}).json()
        assert show["remote_model"] == "gpt-oss:20b" and show["remote_host"] == "https://ollama.com:443"
        assert show["capabilities"] == ["completion", "tools", "thinking"] and show["details"]["format"] == ""
