"""Image URLs and server-side request forgery (issue 16 item 8).

A request's image URL makes the server fetch it. Unless the operator allows it
(A3S_POWER_ALLOW_PRIVATE_IMAGE_URLS), the server must not reach loopback, private, link-local
(cloud metadata) or other non-public addresses, whether written as such, reached through a host
name or through a redirect; it must not fetch anything for a model that does not exist; and its
error must not tell an open port from a closed one. Local HTTP servers record every hit, so each
test can tell whether the fetch happened at all."""

from __future__ import annotations

import base64
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ollama
import pytest
import requests

from a3s_power.config import Config
from a3s_power.server import images
from tests.model_server import ServerThread
from tests.tiny_projector import bmp_image, write_tiny_projector

GENERIC = images.FETCH_FAILED
IMAGE = bmp_image(seed=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_path):
    """A store with "tv", the tiny test model with a projector of its width: a vision model that
    answers in milliseconds."""
    projector = write_tiny_projector(tmp_path_factory.mktemp("mmproj") / "mmproj.gguf", text_n_embd=64)
    with ServerThread(tmp_path_factory.mktemp("home"), context_length=512) as srv:
        client = ollama.Client(host=srv.url)
        client.create(model="tv", files={"model.gguf": client.create_blob(tiny_path),
                                         "mmproj.gguf": client.create_blob(str(projector))})
        yield srv


@pytest.fixture
def allow_private(server, monkeypatch):
    monkeypatch.setattr(server.config, "allow_private_image_urls", True)


class Recorder:
    """An HTTP server that records the paths it is asked for. /cat.bmp is an image, /huge.bmp is
    over the size limit, /redirect?to=URL redirects, anything else is 404."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.hits: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                recorder.hits.append(self.path)
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, status = {"/cat.bmp": (IMAGE, 200), "/huge.bmp": (b"\0" * (21 << 20), 200)}.get(
                    self.path, (b"secret admin page", 404))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.base = f"http://{host}:{self.httpd.server_port}"
        self.port = self.httpd.server_port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


def openai_chat(server, url: str, model: str = "tv") -> requests.Response:
    return requests.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": model, "max_tokens": 2, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]})


def anthropic_messages(server, url: str, model: str = "tv") -> requests.Response:
    return requests.post(server.url + "/v1/messages", timeout=60, json={
        "model": model, "max_tokens": 2, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": url}}, {"type": "text", "text": "What is this?"}]}]})


def responses_create(server, url: str, model: str = "tv") -> requests.Response:
    return requests.post(server.url + "/v1/responses", timeout=60, json={
        "model": model, "max_output_tokens": 2, "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": url}]}]})


def message_of(r: requests.Response) -> str:
    return r.json()["error"]["message"]


CALLS = [openai_chat, anthropic_messages]


# --- refused by default ----------------------------------------------------------------------------

@pytest.mark.parametrize("call", CALLS + [responses_create])
def test_a_loopback_image_url_is_not_fetched(server, recorder, call):
    r = call(server, recorder.base + "/admin")
    assert r.status_code == 400 and message_of(r) == GENERIC
    assert recorder.hits == []


@pytest.mark.parametrize("form", ["http://localhost:{port}/admin",  # a name: checked where it resolves
                                  "http://127.1:{port}/admin", "http://2130706433:{port}/admin",
                                  "http://0.0.0.0:{port}/admin", "http://[::ffff:127.0.0.1]:{port}/admin",
                                  "http://[::1]:{port}/admin", "https://127.0.0.1:{port}/admin"])
def test_other_spellings_of_this_host_are_not_fetched(server, recorder, form):
    r = openai_chat(server, form.format(port=recorder.port))
    assert r.status_code == 400 and message_of(r) == GENERIC
    assert recorder.hits == []


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/",
                                 "http://100.100.100.200/latest/meta-data/", "http://10.0.0.1/", "http://192.168.1.1/",
                                 "http://172.16.0.1/", "http://224.0.0.1/", "http://240.0.0.1/",
                                 "http://192.0.0.192/opc/v2/instance/"])
def test_metadata_private_and_other_addresses_are_refused_at_once(server, url):
    started = time.monotonic()
    r = anthropic_messages(server, url)
    assert r.status_code == 400 and message_of(r) == GENERIC
    assert time.monotonic() - started < images.CONNECT_TIMEOUT_S  # refused, not tried


def test_the_address_policy():
    for address in ["127.0.0.1", "127.9.9.9", "10.1.2.3", "172.31.255.255", "192.168.0.1", "169.254.169.254",
                    "100.64.0.1", "100.100.100.200", "192.0.0.192", "0.0.0.0", "224.0.0.251", "239.255.255.250",
                    "240.0.0.1", "255.255.255.255", "198.18.0.1", "168.63.129.16", "::", "::1", "fe80::1",
                    "fe80::1%eth0", "fc00::1", "fd00:ec2::254", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
                    "::ffff:169.254.169.254", "2002:7f00:1::1", "2002:a9fe:a9fe::1", "64:ff9b::a9fe:a9fe",
                    "64:ff9b::7f00:1", "not an address"]:
        assert not images.address_is_public(address), address
    for address in ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2001:4860:4860::8888"]:
        assert images.address_is_public(address), address


# --- allowed by the operator ---------------------------------------------------------------------------

@pytest.mark.parametrize("call", CALLS)
def test_the_setting_allows_local_image_urls(server, recorder, allow_private, call):
    r = call(server, recorder.base + "/cat.bmp")
    assert r.status_code == 200, r.text
    assert recorder.hits == ["/cat.bmp"]


def test_the_setting_comes_from_the_environment_and_config_toml(tmp_path, monkeypatch):
    monkeypatch.setenv("A3S_POWER_HOME", str(tmp_path))
    assert Config.from_env().allow_private_image_urls is False
    monkeypatch.setenv("A3S_POWER_ALLOW_PRIVATE_IMAGE_URLS", "1")
    assert Config.from_env().allow_private_image_urls is True
    monkeypatch.delenv("A3S_POWER_ALLOW_PRIVATE_IMAGE_URLS")
    (tmp_path / "config.toml").write_text("allow_private_image_urls = true\n")
    assert Config.from_env().allow_private_image_urls is True


def test_limits_still_hold_when_allowed(server, recorder, allow_private, monkeypatch):
    r = openai_chat(server, recorder.base + "/huge.bmp")
    assert r.status_code == 400 and message_of(r) == GENERIC
    # A server that accepts the connection and never answers: the fetch gives up in time.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    monkeypatch.setattr(images, "FETCH_TIMEOUT_S", 1.0)
    try:
        started = time.monotonic()
        r = openai_chat(server, f"http://127.0.0.1:{silent.getsockname()[1]}/slow.bmp")
        assert r.status_code == 400 and message_of(r) == GENERIC
        assert time.monotonic() - started < 5
    finally:
        silent.close()


# --- the model first ---------------------------------------------------------------------------------

@pytest.mark.parametrize("call", CALLS + [responses_create])
def test_an_unknown_model_fetches_nothing(server, recorder, allow_private, call):
    r = call(server, recorder.base + "/cat.bmp", model="no-such-model")
    assert r.status_code == 404
    assert recorder.hits == []


# --- no network map in the errors ---------------------------------------------------------------------

def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("allowed", [False, True])
def test_open_and_closed_ports_answer_alike(server, recorder, monkeypatch, allowed):
    monkeypatch.setattr(server.config, "allow_private_image_urls", allowed)
    for call in CALLS:
        answers = [call(server, url) for url in (recorder.base + "/admin", f"http://127.0.0.1:{closed_port()}/admin",
                                                 recorder.base + "/huge.bmp")]
        assert {r.status_code for r in answers} == {400}
        assert len({r.content for r in answers}) == 1, [r.text for r in answers]
        assert str(recorder.port) not in answers[0].text and "404" not in answers[0].text


# --- redirects --------------------------------------------------------------------------------------

@pytest.fixture
def pretend_public(monkeypatch):
    """127.0.0.1 counts as a public address, so that a local server can stand in for a site on the
    internet; every other address keeps the real policy."""
    real = images.address_is_public
    monkeypatch.setattr(images, "address_is_public", lambda a: str(a) == "127.0.0.1" or real(a))


@pytest.fixture
def inner():
    """A server on 127.0.0.2: a private service that a redirect points at."""
    try:
        r = Recorder("127.0.0.2")
    except OSError:
        pytest.skip("127.0.0.2 is not a local address here")
    yield r
    r.close()


def test_a_redirect_to_a_private_address_is_refused(server, recorder, inner, pretend_public):
    r = openai_chat(server, f"{recorder.base}/redirect?to={inner.base}/admin")
    assert r.status_code == 400 and message_of(r) == GENERIC
    assert recorder.hits == [f"/redirect?to={inner.base}/admin"] and inner.hits == []
    r = openai_chat(server, f"{recorder.base}/redirect?to=http://169.254.169.254/latest/meta-data/")
    assert r.status_code == 400 and message_of(r) == GENERIC


def test_redirects_between_public_addresses_are_followed_a_few_times(server, recorder, pretend_public):
    r = openai_chat(server, f"{recorder.base}/redirect?to=/cat.bmp")
    assert r.status_code == 200 and recorder.hits == ["/redirect?to=/cat.bmp", "/cat.bmp"]
    recorder.hits.clear()
    url = "/cat.bmp"
    for _ in range(images.MAX_REDIRECTS + 1):
        url = f"/redirect?to={url}"
    r = openai_chat(server, recorder.base + url)
    assert r.status_code == 400 and message_of(r) == GENERIC
    assert len(recorder.hits) == images.MAX_REDIRECTS + 1 and "/cat.bmp" not in recorder.hits


def test_a_redirect_with_the_setting_reaches_the_private_address(server, recorder, inner, allow_private):
    r = anthropic_messages(server, f"{recorder.base}/redirect?to={inner.base}/cat.bmp")
    assert r.status_code == 200, r.text
    assert inner.hits == ["/cat.bmp"]


def test_an_image_fetched_by_url_is_the_image(server, recorder, allow_private):
    """The fetched bytes reach the model as the inline image would: the same prompt size."""
    by_url = openai_chat(server, recorder.base + "/cat.bmp").json()
    inline = openai_chat(server, "data:image/bmp;base64," + base64.b64encode(IMAGE).decode()).json()
    assert by_url["usage"]["prompt_tokens"] == inline["usage"]["prompt_tokens"]
