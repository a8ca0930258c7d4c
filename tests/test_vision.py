"""Images through the whole path: a random-weight projector matched to SmolLM2's width.

These tests prove the plumbing (decoding, encoding, batching, caching, the APIs), not the answers:
the projector's weights are random, so what the model says about an image is noise."""

from __future__ import annotations

import base64

import anthropic
import ollama
import openai
import pytest
import requests

from a3s_power.core import _core
from a3s_power.errors import InvalidOptionError, ModelLoadError
from tests.answers import assert_same_greedy
from tests.conftest import collect, context_params, greedy
from tests.model_server import ServerThread
from tests.tiny_projector import bmp_image, image_token_count, write_tiny_projector

CHAT = "<|im_start|>user\n{marker}What is in this picture?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def projector_path(tmp_path_factory):
    return str(write_tiny_projector(tmp_path_factory.mktemp("mmproj") / "mmproj.gguf", text_n_embd=576))


@pytest.fixture(scope="module")
def projector(smollm2, projector_path):
    return _core.Projector(smollm2, projector_path, 2, False)


def test_plumbing_image_becomes_embeddings_in_the_prompt(smollm2, projector):
    prompt = projector.tokenize(CHAT.format(marker=projector.marker), [bmp_image()], True)
    assert prompt.n_images == 1 and prompt.image_tokens == [image_token_count()]
    assert sum(1 for t in prompt.tokens if t < 0) == image_token_count()
    engine = _core.Engine(smollm2, context_params(n_ctx=512), [], projector)
    try:
        rid = engine.submit_multimodal(
            prompt, _core.GenerateParams(sampling=greedy(), num_predict=8, logprobs=True, top_logprobs=2))
        result = collect(engine, [rid])[rid]
        assert result.done_reason in ("stop", "length") and result.error == ""
        assert result.timings["prompt_eval_count"] == len(prompt.tokens)
        # The same image again: its embeddings come from the cache, nothing is encoded again.
        rid = engine.submit_multimodal(
            prompt, _core.GenerateParams(sampling=greedy(), num_predict=8, logprobs=True, top_logprobs=2))
        again = collect(engine, [rid])[rid]
        assert again.timings["cached_tokens"] == len(prompt.tokens) - 1
        assert_same_greedy(again, result)
        # Another image at the same place: the cache stops where the images differ.
        other = projector.tokenize(CHAT.format(marker=projector.marker), [bmp_image(seed=9)], True)
        rid = engine.submit_multimodal(other, _core.GenerateParams(sampling=greedy(), num_predict=8))
        third = collect(engine, [rid])[rid]
        first_image = next(i for i, t in enumerate(prompt.tokens) if t < 0)
        assert third.timings["cached_tokens"] == first_image
    finally:
        engine.close()


def test_plumbing_bad_images_and_markers(smollm2, projector):
    with pytest.raises(InvalidOptionError, match="could not be decoded"):
        projector.tokenize(CHAT.format(marker=projector.marker), [b"this is not an image"], True)
    with pytest.raises(InvalidOptionError, match="number of images"):
        projector.tokenize(CHAT.format(marker=""), [bmp_image()], True)
    engine = _core.Engine(smollm2, context_params(n_ctx=512))
    try:
        prompt = projector.tokenize(CHAT.format(marker=projector.marker), [bmp_image()], True)
        with pytest.raises(InvalidOptionError, match="no vision projector"):
            engine.submit_multimodal(prompt, _core.GenerateParams(sampling=greedy(), num_predict=4))
    finally:
        engine.close()


def test_projector_for_another_width_is_refused(smollm2, tmp_path):
    wrong = write_tiny_projector(tmp_path / "wrong.gguf", text_n_embd=100)
    with pytest.raises(ModelLoadError, match="wrong.gguf"):
        _core.Projector(smollm2, str(wrong), 2, False)


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_path, projector_path):
    with ServerThread(tmp_path_factory.mktemp("home"), num_parallel=2, context_length=1024) as srv:
        client = ollama.Client(host=srv.url)
        files = {"model.gguf": client.create_blob(smollm2_path), "mmproj.gguf": client.create_blob(projector_path)}
        list(client.create(model="smol-vision", files=files, stream=True))
        list(client.create(model="smol-text", files={"model.gguf": files["model.gguf"]}, stream=True))
        yield srv


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_plumbing_native_chat_with_an_image(server):
    client = ollama.Client(host=server.url)
    assert "vision" in client.show("smol-vision").capabilities
    shown = requests.post(server.url + "/api/show", json={"model": "smol-vision"}).json()
    assert shown["projector_info"]["general.architecture"] == "clip"
    r = client.chat(model="smol-vision", options={"temperature": 0, "num_predict": 8},
                    messages=[{"role": "user", "content": "Describe this.", "images": [bmp_image()]}])
    assert r.done and r.prompt_eval_count > image_token_count()
    g = client.generate(model="smol-vision", prompt="Describe this.", images=[bmp_image(seed=2)],
                        options={"temperature": 0, "num_predict": 8})
    assert g.done


def test_plumbing_openai_and_anthropic_images(server):
    url = "data:image/bmp;base64," + b64(bmp_image())
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
    r = oa.chat.completions.create(model="smol-vision", max_tokens=8, temperature=0, messages=[
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": url}}]}])
    assert r.choices[0].finish_reason in ("stop", "length")
    an = anthropic.Anthropic(base_url=server.url, api_key="x")
    m = an.messages.create(model="smol-vision", max_tokens=8, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": b64(bmp_image())}},
        {"type": "text", "text": "What is this?"}]}])
    assert m.stop_reason in ("end_turn", "max_tokens")


def test_bad_image_input_gets_clear_errors_and_the_model_stays_usable(server):
    chat = server.url + "/api/chat"
    not_image = requests.post(chat, json={"model": "smol-vision", "messages": [
        {"role": "user", "content": "x", "images": [b64(b"plain text, not pixels")]}]})
    assert not_image.status_code == 400 and "could not be decoded" in not_image.json()["error"]
    not_base64 = requests.post(chat, json={"model": "smol-vision", "messages": [
        {"role": "user", "content": "x", "images": ["%%%"]}]})
    assert not_base64.status_code == 400 and "base64" in not_base64.json()["error"]
    huge = requests.post(chat, json={"model": "smol-vision", "messages": [
        {"role": "user", "content": "x", "images": [b64(b"\0" * (21 << 20))]}]})
    assert huge.status_code == 400 and "larger than" in huge.json()["error"]
    no_projector = requests.post(chat, json={"model": "smol-text", "messages": [
        {"role": "user", "content": "x", "images": [b64(bmp_image())]}]})
    assert no_projector.status_code == 400
    assert no_projector.json()["error"] == "this model is missing data required for image input"
    ok = requests.post(chat, json={"model": "smol-vision", "stream": False, "options": {"num_predict": 3},
                                   "messages": [{"role": "user", "content": "x", "images": [b64(bmp_image())]}]})
    assert ok.status_code == 200 and ok.json()["done"]


def test_plumbing_image_urls_are_fetched_with_limits(server, monkeypatch):
    """An image server on 127.0.0.1 serves a real image, a huge one and a missing one. Local
    addresses are fetched only with the operator's leave; every failure reads the same
    (tests/test_image_fetch.py)."""
    monkeypatch.setattr(server.config, "allow_private_image_urls", True)
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    image = bmp_image(seed=4)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/cat.bmp":
                body, status = image, 200
            elif self.path == "/huge.bmp":
                body, status = b"\0" * (21 << 20), 200
            else:
                body, status = b"missing", 404
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key="x")

    def ask(url):
        return oa.chat.completions.create(model="smol-vision", max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}])

    try:
        assert ask(base + "/cat.bmp").choices[0].finish_reason in ("stop", "length")
        with pytest.raises(openai.BadRequestError, match="failed to fetch image URL"):
            ask(base + "/huge.bmp")
        with pytest.raises(openai.BadRequestError, match="failed to fetch image URL"):
            ask(base + "/nope.bmp")
        with pytest.raises(openai.BadRequestError, match="failed to fetch image URL"):
            ask("http://127.0.0.1:1/unreachable.bmp")
    finally:
        httpd.shutdown()
