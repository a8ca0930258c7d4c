"""OLLAMA_HOST as Ollama's envconfig.Host reads it, for the server and for every client."""

from __future__ import annotations

import pytest

from a3s_power.client import base_url
from a3s_power.hosts import parse_host
from a3s_power.server.serve import bind_address


@pytest.mark.parametrize("value, url", [
    ("", "http://127.0.0.1:11434"),
    ("   ", "http://127.0.0.1:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"),
    ("example.com", "http://example.com:11434"),
    (":1234", "http://:1234"),  # Go's SplitHostPort: an empty host, as Ollama keeps it
    ("1.2.3.4:56789", "http://1.2.3.4:56789"),
    ("http://1.2.3.4", "http://1.2.3.4:80"),
    ("https://1.2.3.4", "https://1.2.3.4:443"),
    ("https://1.2.3.4:1234", "https://1.2.3.4:1234"),
    ("ollama.com", "https://ollama.com:443"),
    ("[0::1]", "http://[::1]:11434"),
    ("[0::1]:56789", "http://[0::1]:56789"),  # with a port, Go keeps the address as written
    ("http://[0::1]", "http://[::1]:80"),
    ("example.com:99999", "http://example.com:11434"),  # a bad port: the default
    ("example.com:abc", "http://example.com:11434"),
    ("https://example.com/path/", "https://example.com:443/path"),
    # Ollama's own cases (envconfig/config_test.go)
    (":0", "http://:0"), (":66000", "http://:11434"), (":-1", "http://:11434"), ("[::]", "http://[::]:11434"),
    ("::1", "http://[::1]:11434"), ("[::1]:1337", "http://[::1]:1337"), (" 1.2.3.4 ", "http://1.2.3.4:11434"),
    ('"1.2.3.4"', "http://1.2.3.4:11434"), (' " 1.2.3.4 " ', "http://1.2.3.4:11434"),
    ("'1.2.3.4'", "http://1.2.3.4:11434"), ("http://1.2.3.4:4321", "http://1.2.3.4:4321"),
    ("https://example.com/ollama", "https://example.com:443/ollama"),
])
def test_ollama_host_reads_as_ollama_reads_it(value, url):
    assert parse_host(value).url() == url


def test_the_server_listens_and_clients_connect_where_it_says():
    assert bind_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert bind_address("") == ("127.0.0.1", 11434)
    assert base_url("0.0.0.0:8080") == "http://127.0.0.1:8080"  # every address: connect to this machine
    assert base_url("http://localhost") == "http://localhost:80"
    assert base_url(":1234") == "http://127.0.0.1:1234" and bind_address(":1234") == ("", 1234)
