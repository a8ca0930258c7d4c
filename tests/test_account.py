"""This machine's ed25519 identity (auth.py) and what uses it: signed registry token requests,
/api/me and /api/signout against a stand-in for ollama.com, and the signin / signout commands."""

from __future__ import annotations

import base64
import http.server
import socket
import stat
import threading

import ollama
import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from a3s_power import auth
from a3s_power.cli import main as cli
from a3s_power.config import get_config
from a3s_power.registry import TransferSettings
from tests.model_server import ServerThread
from tests.registry_server import FakeRegistry


def connected(reg: FakeRegistry, name: str) -> None:
    """What signing in on ollama.com does: this machine's key joins the account ``name``."""
    reg.accounts[auth.public_key_line().split(" ")[1]] = name


def test_the_key_is_made_once_as_openssh_ed25519_and_its_signatures_verify(machine_key):
    first = auth.public_key_line()
    assert machine_key.exists() and auth.public_key_line() == first  # made once, then read
    assert stat.S_IMODE(machine_key.stat().st_mode) == 0o600
    assert machine_key.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert machine_key.with_name("id_ed25519.pub").read_text().strip() == first
    load_ssh_private_key(machine_key.read_bytes(), password=None)

    blob, _, signature = auth.sign(b"GET,/x?ts=1").partition(":")
    assert first == "ssh-ed25519 " + blob
    public = load_ssh_public_key(first.encode())
    public.verify(base64.b64decode(signature), b"GET,/x?ts=1")
    with pytest.raises(Exception):
        public.verify(base64.b64decode(signature), b"GET,/y?ts=1")
    assert base64.urlsafe_b64decode(auth.encoded_public_key() + "==").decode() == first


@pytest.fixture
def cloud():
    with FakeRegistry(require_auth=True, verify_keys=True) as reg:
        yield reg


@pytest.fixture
def server(tmp_path, cloud):
    with ServerThread(tmp_path / "home", TransferSettings(backoff_s=0.01, max_retries=1),
                      cloud_url=cloud.url) as srv:
        yield srv


def test_a_push_gets_its_token_only_with_the_key_connected_to_the_account(server, cloud, tiny_path):
    client = ollama.Client(host=server.url)
    client.create("mine", files={"model.gguf": client.create_blob(tiny_path)})
    name = f"{cloud.host}/alice/mine:1"
    client.copy("mine", name)
    with pytest.raises(ollama.ResponseError, match="registry authentication failed"):
        list(client.push(name, insecure=True, stream=True))
    assert cloud.tokens_issued == 0 and not any(k[0] == "alice/mine" for k in cloud.manifests)

    connected(cloud, "alice")
    assert [p.status for p in client.push(name, insecure=True, stream=True)][-1] == "success"
    assert cloud.tokens_issued == 1 and ("alice/mine", "1") in cloud.manifests
    token_request = next(r for r in cloud.log if r.path.startswith("/token"))
    assert "nonce=" in token_request.path and "ts=" in token_request.path


def test_me_and_signout_speak_to_the_account_api_with_the_key(server, cloud):
    r = requests.post(server.url + "/api/me")
    assert r.status_code == 401
    body = r.json()
    assert body["error"] == "unauthorized"
    assert body["signin_url"] == (f"{cloud.url}/connect?name={socket.gethostname()}"
                                  f"&key={auth.encoded_public_key()}")

    connected(cloud, "alice")
    r = requests.post(server.url + "/api/me")
    assert r.status_code == 200 and r.json()["name"] == "alice"

    r = requests.post(server.url + "/api/signout")
    assert r.status_code == 200 and r.json() is None
    assert cloud.accounts == {}
    assert requests.post(server.url + "/api/me").status_code == 401
    r = requests.post(server.url + "/api/signout")
    assert (r.status_code, r.json()) == (401, {"error": "you are not currently signed in"})

    connected(cloud, "alice")  # the deprecated route does the same
    r = requests.delete(f"{server.url}/api/user/keys/{auth.encoded_public_key()}")
    assert r.status_code == 200 and cloud.accounts == {}


def test_an_unreachable_account_api_is_a_clear_error(tmp_path):
    with ServerThread(tmp_path / "home", cloud_url="http://127.0.0.1:9") as srv:
        r = requests.post(srv.url + "/api/me")
    assert r.status_code == 502 and r.json() == {"error": "could not reach http://127.0.0.1:9"}


@pytest.fixture
def run(server, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    get_config.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(cli, list(args), catch_exceptions=False)
    get_config.cache_clear()


def test_signin_and_signout_commands_say_what_ollamas_say(run, cloud):
    url = f"{cloud.url}/connect?name={socket.gethostname()}&key={auth.encoded_public_key()}"
    result = run("signin")
    assert result.exit_code == 0
    assert result.output == ("You need to be signed in to Ollama to run Cloud models.\n\n"
                             f"To sign in, navigate to:\n    {url}\n\n")
    assert run("signout").output == "You are not signed in to ollama.com\n\n"

    connected(cloud, "alice")
    assert run("signin").output == "You are already signed in as user 'alice'\n\n"
    assert run("logout").output == "You have signed out of ollama.com\n\n"  # the hidden alias
    assert run("login").output.startswith("You need to be signed in")


def test_with_ollama_auth_the_cli_signs_its_requests(monkeypatch):
    seen: list[tuple[str, str | None]] = []

    class Spy(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            body = b'{"models": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    spy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Spy)
    threading.Thread(target=spy.serve_forever, daemon=True).start()
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{spy.server_address[1]}")
    try:
        for auth_env in ("0", "1"):
            monkeypatch.setenv("OLLAMA_AUTH", auth_env)
            get_config.cache_clear()
            assert CliRunner().invoke(cli, ["ls"], catch_exceptions=False).exit_code == 0
    finally:
        spy.shutdown()
        get_config.cache_clear()
    assert seen[0] == ("/api/tags", None)
    path, authorization = seen[1]
    assert path.startswith("/api/tags?ts=")
    blob, _, signature = authorization.partition(":")
    load_ssh_public_key(b"ssh-ed25519 " + blob.encode()).verify(base64.b64decode(signature), f"GET,{path}".encode())


def test_cloud_status_reports_who_switched_it_off(tmp_path, machine_key):
    settings = machine_key.parent / "server.json"
    settings.unlink(missing_ok=True)
    with ServerThread(tmp_path / "a") as on, ServerThread(tmp_path / "b", no_cloud=True) as off:
        assert requests.get(on.url + "/api/status").json() == {"cloud": {"disabled": False, "source": "none"}}
        assert requests.get(off.url + "/api/status").json() == {"cloud": {"disabled": True, "source": "env"}}
        machine_key.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text('{"disable_ollama_cloud": true}')
        try:
            assert requests.get(on.url + "/api/status").json()["cloud"] == {"disabled": True, "source": "config"}
            assert requests.get(off.url + "/api/status").json()["cloud"] == {"disabled": True, "source": "both"}
        finally:
            settings.unlink()


def test_web_search_goes_to_ollama_com_signed(server, cloud):
    url = server.url + "/api/experimental/web_search"
    r = requests.post(url, json={"query": "llamas"})
    assert r.status_code == 401 and r.json()["signin_url"] == auth.signin_url(cloud.url)
    connected(cloud, "alice")
    r = requests.post(url, json={"query": "llamas"})
    assert r.status_code == 200 and r.json()["results"][0]["title"] == "About llamas"
    r = requests.post(url, data=b"")
    assert (r.status_code, r.json()) == (400, {"error": "missing request body"})


def test_web_search_and_cloud_models_are_refused_when_the_cloud_is_off(tmp_path):
    with FakeRegistry() as cloud, ServerThread(tmp_path / "home", no_cloud=True, cloud_url=cloud.url,
                                               remotes=("127.0.0.1",)) as srv:
        r = requests.post(srv.url + "/api/experimental/web_fetch", json={"url": "https://ollama.com"})
        assert (r.status_code, r.json()) == (403, {"error": "ollama cloud is disabled: web fetch is unavailable"})
        r = requests.post(srv.url + "/api/chat", json={"model": "gpt-oss:120b-cloud",
                                                       "messages": [{"role": "user", "content": "hi"}]})
        assert (r.status_code, r.json()) == (403, {"error": "ollama cloud is disabled: remote model is unavailable"})


def test_a_cloud_name_without_a_manifest_goes_to_ollama_com(tmp_path):
    with FakeRegistry() as cloud, ServerThread(tmp_path / "home", cloud_url=cloud.url,
                                               remotes=("127.0.0.1",)) as srv:
        connected(cloud, "alice")
        for name, remote in (("gpt-oss:120b-cloud", "gpt-oss:120b"), ("qwen3-coder:cloud", "qwen3-coder")):
            r = requests.post(srv.url + "/api/chat", json={"model": name, "stream": False,
                                                           "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["model"] == name and out["remote_model"] == remote
            assert out["message"]["content"] == "Hello from the cloud."
        r = requests.post(srv.url + "/api/chat", json={"model": "nothere:latest", "messages": []})
        assert r.status_code == 404


def test_show_for_a_cloud_name_asks_ollama_com(tmp_path):
    with FakeRegistry() as cloud, ServerThread(tmp_path / "home", cloud_url=cloud.url) as srv:
        r = requests.post(srv.url + "/api/show", json={"model": "gpt-oss:120b-cloud"})
        assert r.status_code == 401 and r.json()["signin_url"] == auth.signin_url(cloud.url)
        connected(cloud, "alice")
        info = requests.post(srv.url + "/api/show", json={"model": "gpt-oss:120b-cloud"}).json()
        assert info["capabilities"] == ["completion", "tools", "thinking"]
        assert info["details"]["family"] == "gptoss" and info["remote_model"] == "gpt-oss:120b"
        r = requests.post(srv.url + "/api/show", json={"model": "nothing-like-it:cloud"})
        assert r.status_code == 404
        assert requests.post(srv.url + "/api/show", json={"model": "plain:latest"}).status_code == 404


def test_run_a_cloud_model_from_the_cli(tmp_path, monkeypatch):
    with FakeRegistry() as cloud, ServerThread(tmp_path / "home", cloud_url=cloud.url,
                                               remotes=("127.0.0.1",)) as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        get_config.cache_clear()
        try:
            result = CliRunner().invoke(cli, ["run", "gpt-oss:120b-cloud", "hi"], catch_exceptions=False)
            assert result.exit_code == 0
            assert result.output == ("You need to be signed in to Ollama to run Cloud models.\n\n"
                                     f"To sign in, navigate to:\n    {auth.signin_url(cloud.url)}\n\n")
            connected(cloud, "alice")
            result = CliRunner().invoke(cli, ["run", "gpt-oss:120b-cloud", "hi"], catch_exceptions=False)
            assert (result.exit_code, result.output) == (0, "Hello from the cloud.\n")
        finally:
            get_config.cache_clear()
