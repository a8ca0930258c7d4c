"""Requests from web pages (issue 16 item 7): an Origin that is not allowed is answered 403 on every
route before its handler runs, as Ollama (gin-contrib/cors) does. Withholding only the
Access-Control-Allow-Origin header is not enough: a page can send "simple" requests (a text/plain
POST, say) without any preflight, and the server would act on them even though the page cannot read
the answer."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import ollama
import pytest
import requests

from tests.model_server import ServerThread

EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_path):
    with ServerThread(tmp_path_factory.mktemp("home")) as srv:
        client = ollama.Client(host=srv.url)
        client.create(model="tiny", files={"model.gguf": client.create_blob(tiny_path)})
        yield srv


def names(server) -> set[str]:
    return {m["name"] for m in requests.get(server.url + "/api/tags").json()["models"]}


def simple_post(server, path: str, body: dict, origin: str | None = EVIL) -> requests.Response:
    """What a page's fetch(url, {method: "POST", mode: "no-cors", body: text}) sends: no preflight."""
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    if origin is not None:
        headers["Origin"] = origin
    return requests.post(server.url + path, data=json.dumps(body), headers=headers, timeout=60)


def test_a_simple_post_from_a_foreign_page_is_refused_and_nothing_happens(server):
    r = simple_post(server, "/api/copy", {"source": "tiny", "destination": "pwned"})
    assert r.status_code == 403
    assert "Access-Control-Allow-Origin" not in r.headers
    assert "pwned:latest" not in names(server)


@pytest.fixture
def hits():
    """An HTTP server on 127.0.0.1 that records every request it gets."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", seen
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/generate", {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}),
    ("POST", "/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": False}),
    ("POST", "/api/pull", {"model": "registry.invalid/x/y"}),
    ("DELETE", "/api/delete", {"model": "tiny"}),
    ("POST", "/api/create", {"model": "evil", "from": "tiny"}),
    ("POST", "/api/signout", {}),
    ("POST", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/v1/messages", {"model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/api/tags", None),
    ("GET", "/api/version", None),
    ("GET", "/no/such/route", None),
])
def test_every_route_refuses_a_foreign_origin(server, method, path, body):
    r = requests.request(method, server.url + path, data=None if body is None else json.dumps(body),
                         headers={"Origin": EVIL, "Content-Type": "text/plain"}, timeout=60)
    assert r.status_code == 403 and r.content == b""
    assert "Access-Control-Allow-Origin" not in r.headers
    assert {"tiny:latest"} <= names(server) and "evil:latest" not in names(server)


def test_an_image_url_from_a_foreign_page_is_not_fetched(server, hits, monkeypatch):
    monkeypatch.setattr(server.config, "allow_private_image_urls", True)
    base, seen = hits
    r = simple_post(server, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": base + "/probe"}}]}]})
    assert r.status_code == 403 and seen == []


def test_preflight_from_a_foreign_origin_is_refused(server):
    r = requests.options(server.url + "/api/chat", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST",
                                                            "Access-Control-Request-Headers": "content-type"})
    assert r.status_code == 403
    assert not any(h.lower().startswith("access-control-") for h in r.headers)


def test_preflight_from_an_allowed_origin(server):
    r = requests.options(server.url + "/api/chat", headers={"Origin": "http://localhost:3000",
                                                            "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "content-type" in r.headers["Access-Control-Allow-Headers"].lower()


def test_requests_without_origin_are_served(server):
    """curl, the SDKs and the CLI send no Origin: no CORS request, nothing to check."""
    assert simple_post(server, "/api/copy", {"source": "tiny", "destination": "copied"}, origin=None).status_code == 200
    assert "copied:latest" in names(server)
    r = requests.get(server.url + "/api/version")
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("origin", ["http://localhost", "http://localhost:3000", "https://127.0.0.1:8080",
                                    "http://0.0.0.0:5173", "app://obsidian.md", "file://", "tauri://localhost",
                                    "vscode-webview://abc123", "vscode-file://vscode-app"])
def test_local_origins_are_always_allowed(server, origin):
    r = simple_post(server, "/api/show", {"model": "tiny"}, origin=origin)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == origin
    assert r.headers["Vary"] == "Origin"


@pytest.mark.parametrize("origin", ["http://localhost.evil.example", "https://evil.example:3000", "null",
                                    "http://127.0.0.1.evil.example", "chrome-extension://abcdef",
                                    "HTTP://LOCALHOST:3000"])
def test_lookalike_origins_are_refused(server, origin):
    assert requests.get(server.url + "/api/version", headers={"Origin": origin}).status_code == 403


def test_ollama_origins_adds_origins(server, monkeypatch):
    """OLLAMA_ORIGINS (Config.origins): exact origins and * patterns."""
    monkeypatch.setattr(server.config, "origins", ("https://chat.example", "https://*.tools.example"))
    for origin in ("https://chat.example", "https://a.tools.example"):
        r = simple_post(server, "/api/show", {"model": "tiny"}, origin=origin)
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == origin
    assert simple_post(server, "/api/show", {"model": "tiny"}, origin="https://chat.example.net").status_code == 403
    assert simple_post(server, "/api/show", {"model": "tiny"}, origin=EVIL).status_code == 403


def test_a_page_of_the_servers_own_origin_is_no_cors_request(server):
    """Origin equal to the scheme and Host (a same-origin fetch) passes, as with gin-contrib/cors."""
    host = f"power.local:{server.port}"
    r = requests.get(server.url + "/api/version", headers={"Host": host, "Origin": f"http://{host}"})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(server.url + "/api/version", headers={"Host": host, "Origin": f"http://other.local:{server.port}"})
    assert r.status_code == 403



@pytest.mark.parametrize("path, body", [
    ("/api/generate", {"model": "tiny", "prompt": "Hi", "options": {"num_predict": 4}}),
    ("/v1/chat/completions", {"model": "tiny", "stream": True, "max_tokens": 4,
                              "messages": [{"role": "user", "content": "Hi"}]}),
])
def test_streamed_answers_carry_the_allow_origin_header(server, path, body):
    """A page of an allowed origin reads a streamed answer: the header goes out with the stream's."""
    origin = "http://localhost:3000"
    with requests.post(server.url + path, json=body, headers={"Origin": origin}, stream=True, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers.get("Access-Control-Allow-Origin") == origin and r.headers.get("Vary") == "Origin"
        assert list(r.iter_lines())


def test_every_answer_names_the_server(server):
    from a3s_power.version import __version__

    for r in (requests.get(server.url + "/api/version"), requests.get(server.url + "/api/nothing-here"),
              requests.post(server.url + "/api/generate", json={"model": "tiny", "prompt": "Hi",
                                                                "options": {"num_predict": 2}}, timeout=60)):
        assert r.headers["Server"] == f"a3s-power/{__version__}"
