"""_core against llama-cpp-python's Llama: the same model, prompt and greedy sampling must give
exactly the same tokens, and embeddings must agree to within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest

from a3s_power.core import _core
from tests.conftest import THREADS, collect, context_params, greedy

PROMPTS = [
    "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "The history of the Roman Empire",
    "def fibonacci(n):",
]
N_TOKENS = 64


def reference_tokens(path: str, prompts: list[str], flash_attn: bool) -> list[tuple[list[int], list[int]]]:
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(path, n_ctx=1024, n_threads=THREADS, n_batch=512, n_ubatch=512, flash_attn=flash_attn,
                verbose=False, seed=1)
    out = []
    try:
        for prompt in prompts:
            tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
            generated: list[int] = []
            for token in llm.generate(tokens, temp=0.0, repeat_penalty=1.0, reset=True):
                if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                    break
                generated.append(token)
                if len(generated) >= N_TOKENS:
                    break
            out.append((tokens, generated))
    finally:
        llm.close()
    return out


def on_the_cpu() -> _core.ModelParams:
    """Llama keeps every layer on the CPU unless told; so does our side, also on a GPU build."""
    params = _core.ModelParams()
    params.n_gpu_layers = 0
    return params


# Fidelity, on whatever CPU runs the suite: the reference is computed here, with the same model,
# context size, batch sizes and attention path, so both sides run the same kernels on the same
# shapes and the tokens must be identical, not merely close. Four slots, with a KV buffer per slot
# or one buffer for all: a single stream is computed as it would be alone.
LAYOUTS = [(fa, unified) for fa in ("off", "on") for unified in (False, True)]
LAYOUT_IDS = [f"fa-{fa}-{'one-buffer' if unified else 'buffer-per-slot'}" for fa, unified in LAYOUTS]


def check_same_tokens(path: str, flash_attn: str, kv_unified: bool) -> None:
    expected = reference_tokens(path, PROMPTS, flash_attn == "on")
    model = _core.Model(path, on_the_cpu())
    try:
        for prompt, (tokens, generated) in zip(PROMPTS, expected):
            assert model.tokenize(prompt, True, True) == tokens
            engine = _core.Engine(model, context_params(n_ctx=1024, n_parallel=4, flash_attn=flash_attn,
                                                        kv_unified=kv_unified))
            try:
                rid = engine.submit(tokens, _core.GenerateParams(sampling=greedy(), num_predict=N_TOKENS))
                result = collect(engine, [rid])[rid]
            finally:
                engine.close()
            assert result.tokens == generated, f"diverged for prompt {prompt!r}"
            assert result.text == model.detokenize(generated)
            assert result.done_reason in ("stop", "length")
    finally:
        model.close()


@pytest.mark.parametrize("flash_attn, kv_unified", LAYOUTS, ids=LAYOUT_IDS)
def test_greedy_tokens_match_llama_cpp_python_smollm2(smollm2_path, flash_attn, kv_unified):
    check_same_tokens(smollm2_path, flash_attn, kv_unified)


@pytest.mark.slow
@pytest.mark.parametrize("flash_attn, kv_unified", LAYOUTS, ids=LAYOUT_IDS)
def test_greedy_tokens_match_llama_cpp_python_qwen(qwen_path, flash_attn, kv_unified):
    check_same_tokens(qwen_path, flash_attn, kv_unified)


@pytest.mark.slow
def test_embeddings_match_llama_cpp_python(nomic_path):
    from llama_cpp import Llama

    texts = ["search_query: What is the capital of France?", "The quick brown fox jumps over the lazy dog. " * 4]
    llm = Llama(nomic_path, embedding=True, n_ctx=2048, n_threads=THREADS, verbose=False)
    try:
        raw_ref = [np.array(llm.embed(t, normalize=False)) for t in texts]
        unit_ref = [np.array(llm.embed(t, normalize=True)) for t in texts]
        token_lists = [llm.tokenize(t.encode(), add_bos=True, special=True) for t in texts]
    finally:
        llm.close()

    model = _core.Model(nomic_path, on_the_cpu())
    engine = _core.Engine(model, context_params(n_ctx=2048, n_parallel=2, embeddings=True))
    try:
        assert model.n_embd == 768
        for normalize, refs in ((False, raw_ref), (True, unit_ref)):
            for tokens, ref in zip(token_lists, refs):
                rid = engine.submit_embedding(tokens, normalize)
                got = np.array(collect(engine, [rid])[rid].embedding)
                assert got.shape == ref.shape == (768,)
                assert np.abs(got - ref).max() < 1e-4
        # Both inputs in one batch: still the same vectors.
        ids = [engine.submit_embedding(t, True) for t in token_lists]
        results = collect(engine, ids)
        for rid, ref in zip(ids, unit_ref):
            assert np.abs(np.array(results[rid].embedding) - ref).max() < 1e-4
            assert abs(np.linalg.norm(results[rid].embedding) - 1.0) < 1e-5
    finally:
        engine.close()
        model.close()
