"""API keys (issue 18 item 1): with A3S_POWER_API_KEY (several, or a file of them) every route but
``/`` needs ``Authorization: Bearer KEY`` (``x-api-key`` too on the Anthropic routes), and a missing
or wrong key is a 401 in each API's own error shape, seen through the official ollama, openai and
anthropic clients and through the CLI. Without keys nothing changes. TLS is in test_tls.py."""

from __future__ import annotations

import asyncio
import http.client
import logging
import os
import subprocess
import sys

import anthropic
import ollama
import openai
import pytest
import requests

from a3s_power.client import Client, KeyRefused
from a3s_power.config import Config
from a3s_power.errors import InvalidOptionError
from a3s_power.server.access import KeyCheck
from a3s_power.server.serve import warn_if_open
from tests.model_server import ServerThread

KEYS = ("first-key-0123456789", "second-key-abcdefghij")
FILE_KEY = "third-key-from-the-file"
CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_path):
    home = tmp_path_factory.mktemp("home")
    key_file = home / "api-keys"
    key_file.write_text(f"# the team's keys\n\n  {FILE_KEY}  \n")
    with ServerThread(home, api_keys=KEYS, api_key_file=key_file) as srv:
        client = ollama.Client(host=srv.url, headers={"Authorization": f"Bearer {KEYS[0]}"})
        client.create(model="tiny", files={"model.gguf": client.create_blob(tiny_path)})
        yield srv


def bearer(key: str = KEYS[0]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def names(server) -> set[str]:
    return {m["name"] for m in requests.get(server.url + "/api/tags", headers=bearer()).json()["models"]}


def test_root_answers_without_a_key(server):
    assert requests.get(server.url + "/").status_code == 200
    assert requests.head(server.url + "/").status_code == 200


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/api/tags", None),
    ("GET", "/api/version", None),
    ("GET", "/health", None),
    ("GET", "/metrics", None),
    ("GET", "/api/ps", None),
    ("POST", "/api/show", {"model": "tiny"}),
    ("POST", "/api/generate", {"model": "tiny", "prompt": "hi", "stream": False}),
    ("POST", "/api/copy", {"source": "tiny", "destination": "stolen"}),
    ("DELETE", "/api/delete", {"model": "tiny"}),
    ("POST", "/api/pull", {"model": "registry.invalid/x/y"}),
    ("POST", "/api/signout", {}),
    ("POST", "/api/rerank", {"model": "tiny", "query": "q", "documents": ["d"]}),
    ("GET", "/no/such/route", None),
])
@pytest.mark.parametrize("headers", [{}, bearer("wrong-key"), {"Authorization": KEYS[0]},
                                     {"x-api-key": KEYS[0]}, {"Authorization": f"Basic {KEYS[0]}"}],
                         ids=["none", "wrong", "no-scheme", "x-api-key", "basic"])
def test_native_routes_refuse_a_missing_or_wrong_key(server, method, path, body, headers):
    r = requests.request(method, server.url + path, json=body, headers=headers, timeout=60)
    assert r.status_code == 401
    assert set(r.json()) == {"error"} and "API key" in r.json()["error"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert {"tiny:latest"} <= names(server) and "stolen:latest" not in names(server)


@pytest.mark.parametrize("key", [*KEYS, FILE_KEY])
def test_each_key_is_accepted(server, key):
    assert requests.get(server.url + "/api/tags", headers=bearer(key)).status_code == 200
    assert requests.get(server.url + "/api/version", headers={"Authorization": f"bearer  {key}"}).status_code == 200


def test_a_prefix_or_an_extension_of_a_key_is_refused(server):
    for key in (KEYS[0][:-1], KEYS[0] + "x", KEYS[0].upper(), f"{KEYS[0]},{KEYS[1]}"):
        assert requests.get(server.url + "/api/tags", headers=bearer(key)).status_code == 401


def test_the_ollama_client(server, monkeypatch):
    client = ollama.Client(host=server.url, headers=bearer(KEYS[1]))
    assert "tiny:latest" in {m.model for m in client.list().models}
    assert client.generate(model="tiny", prompt="hi", options={"num_predict": 2}).done
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.url).list()
    assert refused.value.status_code == 401 and "API key" in refused.value.error
    with pytest.raises(ollama.ResponseError) as wrong:
        ollama.Client(host=server.url, headers=bearer("wrong")).chat(model="tiny", messages=CHAT)
    assert wrong.value.status_code == 401 and wrong.value.error == "invalid API key"
    # ollama-python sends OLLAMA_API_KEY as a Bearer token where no Authorization header is given.
    monkeypatch.setenv("OLLAMA_API_KEY", KEYS[0])
    assert "tiny:latest" in {m.model for m in ollama.Client(host=server.url).list().models}


def test_the_openai_client(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEYS[1], max_retries=0)
    assert "tiny:latest" in {m.id for m in client.models.list()}
    answer = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert client.responses.create(model="tiny", input="hi", max_output_tokens=2).status in ("completed", "incomplete")
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    for call in (lambda: wrong.models.list(), lambda: wrong.chat.completions.create(model="tiny", messages=CHAT),
                 lambda: wrong.embeddings.create(model="tiny", input="hi"),
                 lambda: wrong.responses.create(model="tiny", input="hi")):
        with pytest.raises(openai.AuthenticationError) as refused:
            call()
        assert refused.value.status_code == 401
        assert refused.value.response.json() == {"error": {"message": "invalid API key", "type": "invalid_request_error",
                                                           "param": None, "code": "invalid_api_key"}}
    missing = requests.post(server.url + "/v1/chat/completions", json={"model": "tiny", "messages": CHAT})
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error" and missing.json()["error"]["code"] is None


def test_the_anthropic_client(server):
    for client in (anthropic.Anthropic(base_url=server.url, api_key=KEYS[0], max_retries=0),  # x-api-key
                   anthropic.Anthropic(base_url=server.url, auth_token=KEYS[1], max_retries=0)):  # Bearer
        message = client.messages.create(model="tiny", max_tokens=2, messages=CHAT)
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert client.messages.count_tokens(model="tiny", messages=CHAT).input_tokens > 0
    wrong = anthropic.Anthropic(base_url=server.url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        wrong.messages.create(model="tiny", max_tokens=2, messages=CHAT)
    assert refused.value.status_code == 401
    assert refused.value.response.json() == {"type": "error", "error": {"type": "authentication_error",
                                                                        "message": "invalid x-api-key"}}
    missing = requests.post(server.url + "/v1/messages", json={"model": "tiny", "max_tokens": 2, "messages": CHAT})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"


def test_a_preflight_needs_no_key(server):
    """Browsers send no Authorization header on a preflight: the edge answers it before any key check."""
    r = requests.options(server.url + "/api/chat", headers={"Origin": "http://localhost:3000",
                                                            "Access-Control-Request-Method": "POST",
                                                            "Access-Control-Request-Headers": "authorization"})
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()


def test_keys_are_never_logged(server, caplog):
    caplog.set_level(logging.DEBUG)
    requests.get(server.url + "/api/tags", headers=bearer(KEYS[0]))
    requests.get(server.url + "/api/tags", headers=bearer("wrong-" + KEYS[1]))
    requests.post(server.url + "/v1/messages", json={}, headers={"x-api-key": KEYS[1]})
    text = caplog.text + repr(server.config) + str(server.config)
    assert not any(key in text for key in (*KEYS, FILE_KEY))


def test_the_in_process_client_sends_the_key(server):
    async def tags(key: str | None):
        async with Client(server.url, api_key=key) as client:
            return await client.request("GET", "/api/tags")

    assert "tiny:latest" in {m["name"] for m in asyncio.run(tags(KEYS[0]))["models"]}
    with pytest.raises(KeyRefused, match="wants an API key"):
        asyncio.run(tags(None))
    with pytest.raises(KeyRefused, match="refused the API key"):
        asyncio.run(tags("wrong"))


def cli(server, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("A3S_POWER_API_KEY", "A3S_POWER_API_KEY_FILE")}
    return subprocess.run([sys.executable, "-m", "a3s_power", *args], capture_output=True, text=True, timeout=300,
                          env={**environ, "OLLAMA_HOST": server.url, **env})


def test_the_cli_sends_the_key_from_the_same_variable(server, tmp_path):
    listed = cli(server, "list", A3S_POWER_API_KEY=f"{KEYS[1]},{KEYS[0]}")
    assert listed.returncode == 0, listed.stderr
    assert "tiny:latest" in listed.stdout
    key_file = tmp_path / "keys"
    key_file.write_text(f"{FILE_KEY}\n")
    assert cli(server, "show", "tiny", A3S_POWER_API_KEY_FILE=str(key_file)).returncode == 0
    ran = cli(server, "run", "tiny", "hi", A3S_POWER_API_KEY=KEYS[0])
    assert ran.returncode == 0, ran.stderr


def test_the_cli_without_the_key_says_so(server):
    missing = cli(server, "list")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: the server wants an API key: set A3S_POWER_API_KEY to one of its keys"
    wrong = cli(server, "run", "tiny", "hi", A3S_POWER_API_KEY="wrong")
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == "Error: the server refused the API key in A3S_POWER_API_KEY"
    assert "signed in" not in wrong.stdout + wrong.stderr  # not ollama.com's sign-in


def test_without_keys_nothing_is_asked(tmp_path):
    """Ollama's behaviour: an Authorization header (an Ollama CLI's signature, say) is ignored."""
    with ServerThread(tmp_path) as srv:
        for headers in ({}, bearer("anything"), {"Authorization": "pubkey:signature"}):
            r = requests.get(srv.url + "/api/tags", headers=headers)
            assert r.status_code == 200 and "WWW-Authenticate" not in r.headers


def test_key_check():
    check = KeyCheck(["a-key", "another-key"])
    assert check.accepts("a-key") and check.accepts("another-key")
    assert not any(check.accepts(k) for k in ("", "a-ke", "a-key ", "A-KEY", "another-key-and-more", "\udcff"))
    with pytest.raises(ValueError):
        KeyCheck([])


def test_the_key_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# comment\n\nk1\n  k2\t\n")
    assert Config(home=tmp_path, api_keys=("k0",), api_key_file=keys).api_key_list() == ("k0", "k1", "k2")
    assert Config(home=tmp_path, api_key_file=keys).client_api_key() == "k1"
    assert Config(home=tmp_path).api_key_list() == () and Config(home=tmp_path).client_api_key() is None
    keys.write_text("# only a comment\n\n")
    with pytest.raises(InvalidOptionError, match="no key in it"):  # never an open server by mistake
        Config(home=tmp_path, api_key_file=keys).api_key_list()
    with pytest.raises(InvalidOptionError, match="cannot read it"):
        Config(home=tmp_path, api_key_file=tmp_path / "missing").api_key_list()
    keys.write_text("good\nwith space-secret-text\n")
    with pytest.raises(InvalidOptionError, match="key 2 holds") as bad:
        Config(home=tmp_path, api_key_file=keys).api_key_list()
    assert "secret" not in str(bad.value)


def test_a_malformed_key_variable_names_itself_not_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("A3S_POWER_HOME", str(tmp_path))
    monkeypatch.setenv("A3S_POWER_API_KEY", "ok,s\u00e9cret")
    with pytest.raises(InvalidOptionError, match="A3S_POWER_API_KEY: key 2 holds") as bad:
        Config.from_env()
    assert "cret" not in str(bad.value)


@pytest.mark.parametrize("host, keys, warned", [
    ("0.0.0.0", (), True), ("", (), True), ("192.168.1.20", (), True), ("::", (), True),
    ("0.0.0.0", ("k",), False), ("127.0.0.1", (), False), ("::1", (), False), ("localhost", (), False),
])
def test_listening_beyond_loopback_without_a_key_warns(caplog, host, keys, warned):
    with caplog.at_level(logging.WARNING, logger="a3s_power.server.serve"):
        warn_if_open(host, keys)
    assert bool(caplog.records) == warned
    if warned:
        assert "without an API key" in caplog.text and "A3S_POWER_API_KEY" in caplog.text


@pytest.mark.parametrize("path", ["/ui/../api/tags", "/ui/..%2Fapi/tags", "/ui/%2e%2e/api/tags",
                                  "/ui/%2E%2E%2Fapi%2Ftags", "/ui//../api/version", "/ui/./../api/ps"])
def test_the_open_page_prefix_reaches_no_api_route(server, path):
    """The web page's files under /ui need no key: no path through that prefix may reach an API route."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", path)  # as written: requests would resolve the dots itself
    answer = connection.getresponse()
    body = answer.read()
    assert answer.status in (401, 404), (answer.status, body[:200])
    assert b"models" not in body and b"version" not in body
