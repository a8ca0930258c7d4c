"""Bounds on JSON request bodies (issue 16 item 1): nesting deeper than MAX_JSON_DEPTH is a 400 and a
body over Config.max_body_mb (A3S_POWER_MAX_BODY_MB) a 413, each in the API's own error shape, on
every route that reads JSON; a 413 comes from Content-Length before the body is read; blob uploads
stream to disk and stay unbounded."""

from __future__ import annotations

import hashlib
import json
import socket

import anthropic
import openai
import pytest
import requests

from a3s_power.config import Config
from a3s_power.server.errors import MAX_JSON_DEPTH, json_too_deep
from tests.model_server import ServerThread

LIMIT_MB = 1
LIMIT = LIMIT_MB * 1024 * 1024

# Every route whose handler reads a JSON body, with the method it answers.
JSON_ROUTES = [
    ("POST", "/api/generate"), ("POST", "/api/chat"), ("POST", "/api/embed"), ("POST", "/api/embeddings"),
    ("POST", "/api/pull"), ("POST", "/api/push"), ("POST", "/api/create"), ("POST", "/api/show"),
    ("POST", "/api/copy"), ("DELETE", "/api/delete"),
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"),
    ("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"),
    ("POST", "/api/rerank"), ("POST", "/v1/rerank"),
    ("POST", "/api/tokenize"), ("POST", "/api/detokenize"), ("POST", "/tokenize"), ("POST", "/detokenize"),
    ("POST", "/v1/tokenize"), ("POST", "/v1/detokenize"), ("POST", "/v1/chat/completions/input_tokens"),
    ("POST", "/v1/responses/input_tokens"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(tmp_path_factory.mktemp("home"), max_body_mb=LIMIT_MB, no_cloud=True) as srv:
        yield srv


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def assert_error_shape(path: str, response: requests.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    if path.startswith("/v1/messages"):
        assert body["type"] == "error"
        assert body["error"]["type"] == ("request_too_large" if status == 413 else "invalid_request_error")
        message = body["error"]["message"]
    elif path.startswith("/v1/"):
        assert set(body["error"]) >= {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
        message = body["error"]["message"]
    else:
        assert set(body) == {"error"} and isinstance(body["error"], str)
        message = body["error"]
    assert words in message


@pytest.mark.parametrize("method,path", JSON_ROUTES)
def test_body_nested_100000_deep_is_400(server, method, path):
    body = '{"model":"x","options":' + nested(100_000) + "}"
    r = requests.request(method, server.url + path, data=body, headers={"Content-Type": "application/json"},
                         timeout=60)
    assert_error_shape(path, r, 400, "levels deep")


@pytest.mark.parametrize("method,path", JSON_ROUTES)
def test_body_over_the_limit_is_413(server, method, path):
    body = json.dumps({"model": "x", "prompt": "a" * (LIMIT + 10)})
    r = requests.request(method, server.url + path, data=body, headers={"Content-Type": "application/json"},
                         timeout=60)
    assert_error_shape(path, r, 413, "too large")


def test_nesting_up_to_the_limit_is_accepted(server):
    # The body's own object is one level: MAX_JSON_DEPTH levels in all reach the route (an unknown model).
    inside = MAX_JSON_DEPTH - 1
    r = requests.post(server.url + "/api/show", data='{"model":"nope","pad":' + nested(inside) + "}", timeout=30)
    assert r.status_code == 404, r.text
    r = requests.post(server.url + "/api/show", data='{"model":"nope","pad":' + nested(inside + 1) + "}", timeout=30)
    assert r.status_code == 400 and "levels deep" in r.json()["error"]


def test_brackets_inside_strings_do_not_count(server):
    text = '"\\\\\\"' + "[" * 5000 + '{"'  # escaped backslash, escaped quote, then brackets, all in one string
    r = requests.post(server.url + "/api/show", data='{"model":"nope","pad":' + text + "}", timeout=30)
    assert r.status_code == 404, r.text


def test_json_too_deep_measures_exactly():
    assert not json_too_deep(nested(100).encode(), 100)
    assert json_too_deep(nested(101).encode(), 100)
    assert not json_too_deep(("[" + "[],[[]]," * 100_000 + "[]]").encode(), 3)
    assert json_too_deep(("[" + "[[[[]]]]," * 100_000 + "[]]").encode(), 4)
    assert not json_too_deep(('{"a":"' + "{" * 300 + '","b":"\\"[[[["}').encode(), 2)
    assert json_too_deep(('{"a":"\\\\",' + '"b":' + nested(300) + "}").encode(), 100)
    assert json_too_deep(("[" * 3_000_000 + "]" * 3_000_000).encode(), 100)  # past one scan chunk


def test_body_just_under_the_limit_is_read(server):
    body = json.dumps({"model": "nope", "pad": "a" * (LIMIT - 100)})
    assert len(body) <= LIMIT
    r = requests.post(server.url + "/api/show", data=body, timeout=60)
    assert r.status_code == 404, r.text[:300]


def _raw_request(server, head: str, first: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as s:
        s.sendall(head.encode() + first)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_413_comes_from_content_length_before_the_body_is_read(server):
    # 50 MiB announced and 64 KiB sent: the answer comes without waiting for the rest.
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {50 * 1024 * 1024}\r\n\r\n")
    answer = _raw_request(server, head, b'{"model":"x","messages":"' + b"a" * 65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_chunked_body_over_the_limit_is_413_while_reading(server):
    head = ("POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    piece = b"a" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(LIMIT // len(piece) + 2))
    start = b'{"model":"x","a":"'
    answer = _raw_request(server, head, b"%x\r\n%s\r\n" % (len(start), start) + chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_raw_body_routes_are_bounded_too(server):
    # The web search proxy forwards its body unparsed: aiohttp's own limit stops it, answered in shape.
    r = requests.post(server.url + "/api/experimental/web_search", data=b"x" * (LIMIT + 10), timeout=60)
    assert r.status_code == 413
    assert "too large" in r.json()["error"]


def test_blob_uploads_are_exempt(server):
    data = b"\x01" * (3 * LIMIT)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{server.url}/api/blobs/{digest}", data=data, timeout=120)
    assert r.status_code == 201, r.text
    assert requests.head(f"{server.url}/api/blobs/{digest}", timeout=30).status_code == 200


def test_openai_client_sees_400_and_413(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as deep:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"pad": json.loads(nested(200))})
    assert "levels deep" in deep.value.message
    with pytest.raises(openai.APIStatusError) as big:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "a" * (LIMIT + 10)}])
    assert big.value.status_code == 413
    assert big.value.body["type"] == "invalid_request_error"


def test_anthropic_client_sees_400_and_413(server):
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as deep:
        client.messages.create(model="x", max_tokens=8, messages=[{"role": "user", "content": "hi"}],
                               extra_body={"pad": json.loads(nested(200))})
    assert "levels deep" in deep.value.message
    with pytest.raises(anthropic.APIStatusError) as big:
        client.messages.create(model="x", max_tokens=8, messages=[{"role": "user", "content": "a" * (LIMIT + 10)}])
    assert big.value.status_code == 413
    assert big.value.body["error"]["type"] == "request_too_large"


def test_max_body_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("A3S_POWER_HOME", str(tmp_path))
    monkeypatch.delenv("A3S_POWER_MAX_BODY_MB", raising=False)
    assert Config.from_env().max_body_mb == 100
    (tmp_path / "config.toml").write_text("max_body_mb = 3\n")
    assert Config.from_env().max_body_mb == 3
    monkeypatch.setenv("A3S_POWER_MAX_BODY_MB", "7")
    assert Config.from_env().max_body_mb == 7
