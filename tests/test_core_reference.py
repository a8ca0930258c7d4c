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


def reference_tokens(path: str, prompts: list[str]) -> list[tuple[list[int], list[int]]]:
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(path, n_ctx=1024, n_threads=THREADS, n_batch=512, verbose=False, seed=1)
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


def check_same_tokens(path: str) -> None:
    expected = reference_tokens(path, PROMPTS)
    model = _core.Model(path)
    try:
        for prompt, (tokens, generated) in zip(PROMPTS, expected):
            assert model.tokenize(prompt, True, True) == tokens
            # A fresh engine with four slots per prompt: slots must not change what a single
            # stream computes. (Sequences decoded together, or whose KV cells sit among other
            # sequences' cells, sum floats in another order, as in llama-server.)
            engine = _core.Engine(model, context_params(n_ctx=1024, n_parallel=4))
            try:
                rid = engine.submit(tokens, greedy(), N_TOKENS, [], False, 0)
                result = collect(engine, [rid])[rid]
            finally:
                engine.close()
            assert result.tokens == generated, f"diverged for prompt {prompt!r}"
            assert result.text == model.detokenize(generated)
            assert result.done_reason in ("stop", "length")
    finally:
        model.close()


def test_greedy_tokens_match_llama_cpp_python_smollm2(smollm2_path):
    check_same_tokens(smollm2_path)


@pytest.mark.slow
def test_greedy_tokens_match_llama_cpp_python_qwen(qwen_path):
    check_same_tokens(qwen_path)


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

    model = _core.Model(nomic_path)
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
