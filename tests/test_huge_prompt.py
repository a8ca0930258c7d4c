"""A prompt of megabytes (issue 16, item 10): tokenizing text costs about 130 times its size in
memory, so what cannot fit the context is cut before it is tokenized, and truncation keeps the very
tokens it kept before."""

from __future__ import annotations

import random
import sys

import ollama
import pytest
import requests

from a3s_power.engine.options import LoadOptions
from a3s_power.engine.runner import LoadedModel
from tests.serve_process import proc_status_bytes, serve

WORDS = ("the of and to in is was for on are with as it his they be at one have this from or had by hot word "  # noqa: SIM905 - a sentence reads better than a list
         "but what some we can out other were all there when up use your how said an each she which do their "
         "über naïve café 東京 ☃ 🙂").split()


def _text(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    parts, size = [], 0
    while size < n_chars:
        w = rng.choice(WORDS) + rng.choice((" ", " ", " ", ", ", ".\n"))
        parts.append(w)
        size += len(w)
    return "".join(parts)


def test_cutting_before_tokenizing_keeps_what_truncation_keeps(smollm2_path):
    n_ctx = 256
    with LoadedModel(smollm2_path, LoadOptions(num_ctx=n_ctx, num_parallel=1)) as model:
        for seed in range(3):
            text = _text(60 * n_ctx * model.longest_piece // 10, seed)
            cut = model.text_for_context(text, n_ctx)
            assert len(cut) < len(text)
            full, short = model.tokenize_prompt(text), model.tokenize_prompt(cut)
            assert len(short) > n_ctx
            # _fit_prompt keeps 4 tokens from the start and less than n_ctx from the end.
            assert short[:4] == full[:4] and short[-n_ctx:] == full[-n_ctx:]
            head = model.text_for_context(text, n_ctx, keep_end=False)
            assert model.tokenize(head, True, True)[:n_ctx] == model.tokenize(text, True, True)[:n_ctx]
        short_text = _text(10 * n_ctx)
        assert model.text_for_context(short_text, n_ctx) is short_text


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
def test_an_8_mb_prompt_neither_blows_up_memory_nor_fails(tmp_path, smollm2_path):
    with serve(tmp_path, OLLAMA_NUM_PARALLEL="1", OLLAMA_CONTEXT_LENGTH="1024") as server:
        url = server.url
        client = ollama.Client(host=url, timeout=300)
        list(client.create(model="smol", files={"m.gguf": client.create_blob(smollm2_path)}, stream=True))
        # Both models loaded and a full context computed once each (the compute buffers' pages are
        # touched at the first large batch), so what follows measures the prompt alone.
        warm = _text(3000, seed=9)
        assert client.generate(model="smol", prompt=warm, options={"num_predict": 1}).done
        assert client.embed(model="smol", input=warm).embeddings
        before = proc_status_bytes(server.proc.pid, "VmHWM")
        prompt = _text(8 << 20)
        r = requests.post(url + "/api/generate", timeout=300, json={
            "model": "smol", "prompt": prompt, "stream": False, "options": {"num_predict": 2, "temperature": 0}})
        assert r.status_code == 200, r.text[:300]
        assert 0 < r.json()["prompt_eval_count"] < 1024
        e = requests.post(url + "/api/embed", timeout=300, json={"model": "smol", "input": prompt})
        assert e.status_code == 200 and 0 < e.json()["prompt_eval_count"] <= 1024
        refused = requests.post(url + "/api/embed", timeout=300, json={"model": "smol", "input": prompt,
                                                                        "truncate": False})
        assert refused.status_code == 400
        # The body itself (8 MB, decoded and copied a few times) is all that grows; tokenizing it
        # whole took about 130 times its size (over 1 GB).
        assert proc_status_bytes(server.proc.pid, "VmHWM") - before < 200 << 20
