"""Model names and digests parse and check as Ollama's do; nothing can point outside the store."""

from __future__ import annotations

import pytest

from a3s_power.store import digests
from a3s_power.store.names import ModelName
from a3s_power.store.types import InvalidModelName


@pytest.mark.parametrize("text, full, display", [
    ("llama3.2", "registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest"),
    ("llama3.2:3b", "registry.ollama.ai/library/llama3.2:3b", "llama3.2:3b"),
    ("user/model:q4", "registry.ollama.ai/user/model:q4", "user/model:q4"),
    ("example.com/ns/m", "example.com/ns/m:latest", "example.com/ns/m:latest"),
    ("127.0.0.1:5000/library/smollm2:135m", "127.0.0.1:5000/library/smollm2:135m",
     "127.0.0.1:5000/library/smollm2:135m"),
    ("localhost:5000/ns/m", "localhost:5000/ns/m:latest", "localhost:5000/ns/m:latest"),
    ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
     "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
    ("https://registry.ollama.ai/library/x:1", "registry.ollama.ai/library/x:1", "x:1"),
])
def test_parse(text, full, display):
    name = ModelName.parse(text)
    assert (name.full, name.display) == (full, display)


def test_parts_and_scheme():
    name = ModelName.parse("http://127.0.0.1:5000/library/smollm2:135m")
    assert (name.host, name.namespace, name.model, name.tag) == ("127.0.0.1:5000", "library", "smollm2", "135m")
    assert name.base_url() == "http://127.0.0.1:5000"
    assert ModelName.parse("hf.co/u/r").is_huggingface
    assert ModelName.parse("x").base_url(insecure=True) == "http://registry.ollama.ai"
    assert ModelName.parse("LLAMA:Latest").key() == ModelName.parse("llama").key()


@pytest.mark.parametrize("bad", [
    "", " ", "..", "../x", "x/../y", "a/b/c/d", "/etc/passwd", "a//b", "x:", "x:a/b", "-x", ".hidden",
    "ns/..:tag", "x:..", "x:a..b", "h/n/m:t/", "user name/x", "x:" + "t" * 81, "ns.with.dot/m",
])
def test_invalid_names(bad):
    with pytest.raises(InvalidModelName):
        ModelName.parse(bad)


def test_manifest_path_never_escapes():
    for text in ("a", "ns/m:t", "h.example:80/n/m:t"):
        rel = ModelName.parse(text).manifest_relpath
        assert not rel.is_absolute() and ".." not in rel.parts and len(rel.parts) == 4


def test_digests():
    hexdigest = "A" * 64
    assert digests.normalize(f"sha256:{hexdigest}") == "sha256:" + "a" * 64
    assert digests.normalize(f"sha256-{hexdigest}") == "sha256:" + "a" * 64
    assert digests.filename(f"sha256:{hexdigest}") == "sha256-" + "a" * 64
    assert digests.short("sha256:" + "0123456789ab" + "c" * 52) == "0123456789ab"
    for bad in ("sha256:abc", "sha512:" + "a" * 64, "../" + "a" * 64, "sha256:" + "a" * 63 + "/", None):
        with pytest.raises(digests.InvalidDigest):
            digests.normalize(bad)
