"""The real server (``python -m a3s_power serve``, the import order users get) on a GPU: chat,
generate, embeddings and an image request over HTTP with every layer offloaded, /api/ps's VRAM and
/metrics' GPU figures. Runs where this llama.cpp build can offload and NVML sees an NVIDIA GPU; CI
has none (the closing notes of issue 14 report the runs on the lent H200)."""

from __future__ import annotations

import base64
import json

import ollama
import openai
import pytest
import requests

from a3s_power.core import _core
from a3s_power.gpu import gpu_stats
from tests.serve_process import serve
from tests.tiny_models import write_tiny_llama
from tests.tiny_projector import bmp_image, write_tiny_projector


def _nvidia_gpus():
    return [g for g in gpu_stats() if g.kind == "cuda"] if _core.supports_gpu_offload() else []


pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not _nvidia_gpus(), reason="needs a CUDA build of llama.cpp and an NVIDIA GPU")]

N_EMBD = 256


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("gpu-home")
    models = tmp_path_factory.mktemp("gpu-models")
    text = write_tiny_llama(models / "text.gguf", n_embd=N_EMBD, n_layer=4, n_head=4, n_head_kv=2, n_ff=512,
                            n_ctx=2048)
    projector = write_tiny_projector(models / "mmproj.gguf", text_n_embd=N_EMBD)
    with serve(home, OLLAMA_NUM_PARALLEL="4", OLLAMA_CONTEXT_LENGTH="1024", OLLAMA_KEEP_ALIVE="-1") as server:
        url, proc = server.url, server.proc
        client = ollama.Client(host=url, timeout=120)
        text_blob, projector_blob = client.create_blob(text), client.create_blob(projector)
        list(client.create(model="gpu-text", files={"text.gguf": text_blob}, stream=True))
        list(client.create(model="gpu-vision", files={"text.gguf": text_blob, "mmproj.gguf": projector_blob},
                           stream=True))
        yield url, proc
    assert "Traceback" not in server.log and "Segmentation fault" not in server.log, server.log[-4000:]


def _alive(proc) -> None:
    assert proc.poll() is None, f"the server died (exit {proc.returncode})"


def test_chat_and_generate_on_the_gpu(server):
    url, proc = server
    client = ollama.Client(host=url, timeout=120)
    r = client.chat(model="gpu-text", messages=[{"role": "user", "content": "Hello"}],
                    options={"temperature": 0, "num_predict": 16})
    assert r.done and r.eval_count >= 1 and r.prompt_eval_count > 0
    pieces = list(client.generate(model="gpu-text", prompt="Once upon a time", stream=True,
                                  options={"num_predict": 24, "temperature": 0.8, "seed": 7}))
    assert pieces[-1].done and pieces[-1].eval_count >= 1
    oa = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=120)
    chunks = list(oa.chat.completions.create(model="gpu-text", messages=[{"role": "user", "content": "Hi"}],
                                             max_tokens=8, temperature=0, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    _alive(proc)


def test_many_streams_at_once_on_the_gpu(server):
    """More requests than slots, streamed together: each finishes with its own count."""
    url, proc = server

    def one(i: int) -> dict:
        with requests.post(url + "/api/generate", stream=True, timeout=120, json={
                "model": "gpu-text", "prompt": f"Story {i}:", "options": {"num_predict": 32, "temperature": 0}}) as r:
            r.raise_for_status()
            return [json.loads(line) for line in r.iter_lines() if line][-1]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        finals = list(pool.map(one, range(8)))
    assert all(f["done"] and 1 <= f["eval_count"] <= 32 for f in finals)
    _alive(proc)


def test_embeddings_on_the_gpu(server):
    url, proc = server
    r = requests.post(url + "/api/embed", json={"model": "gpu-text", "input": ["one", "two words"]}, timeout=120)
    r.raise_for_status()
    vectors = r.json()["embeddings"]
    assert len(vectors) == 2 and len(vectors[0]) == N_EMBD
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-3  # normalised, as Ollama's /api/embed
    _alive(proc)


def test_an_image_on_the_gpu(server):
    url, proc = server
    client = ollama.Client(host=url, timeout=120)
    assert "vision" in client.show("gpu-vision").capabilities
    r = client.chat(model="gpu-vision", options={"temperature": 0, "num_predict": 8},
                    messages=[{"role": "user", "content": "Describe this.", "images": [bmp_image()]}])
    assert r.done and r.prompt_eval_count > 16
    oa = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=120)
    image = "data:image/bmp;base64," + base64.b64encode(bmp_image(seed=3)).decode()
    out = oa.chat.completions.create(model="gpu-vision", max_tokens=8, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": image}}]}])
    assert out.usage.prompt_tokens > 16
    _alive(proc)


def test_ps_and_metrics_report_the_gpu(server):
    url, proc = server
    requests.post(url + "/api/generate", json={"model": "gpu-text"}, timeout=120).raise_for_status()
    entry = next(m for m in requests.get(url + "/api/ps", timeout=10).json()["models"] if m["name"] == "gpu-text:latest")
    # Every layer offloaded by default: the whole model is in VRAM, as `ollama ps` shows "100% GPU".
    assert entry["size_vram"] == entry["size"] > 0
    assert entry["gpus"] and entry["gpus"][0]["id"].startswith("cuda:")
    assert entry["gpus"][0]["layers"] == 4 + 1
    metrics = requests.get(url + "/metrics", timeout=10).text
    used = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith("power_gpu_memory_bytes{")]
    assert used and max(used) > 0
    assert any(line.startswith("power_gpu_utilization{") for line in metrics.splitlines())
    _alive(proc)
