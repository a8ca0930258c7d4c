"""A reranker in the core: rank pooling's scores from the embedding engine, checked against llama.cpp
itself (its C API through llama-cpp-python, the package our llama.cpp comes from) on a generated
Qwen3-Reranker-shaped model."""

from __future__ import annotations

import ctypes

import pytest

from a3s_power.core import _core
from tests.conftest import collect, context_params
from tests.tiny_models import write_tiny_llama

RERANK_TEMPLATE = ("<|im_start|>system\nJudge whether the Document meets the requirements of the Query.<|im_end|>\n"
                   "<|im_start|>user\n<Query>: {query}\n<Document>: {document}<|im_end|>\n<|im_start|>assistant\n")
QUERY = "what is a panda?"
DOCUMENTS = ["hi", "The giant panda is a bear species endemic to China.", "pandas is a Python library",
             "{query} and {document} in a document stay as they are"]


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory) -> str:
    return str(write_tiny_llama(tmp_path_factory.mktemp("rerank") / "tiny-reranker.gguf", architecture="qwen3",
                                rerank_template=RERANK_TEMPLATE, seed=3))


@pytest.fixture(scope="module")
def reranker(reranker_path):
    model = _core.Model(reranker_path)
    yield model
    model.close()


def scores(model: _core.Model, inputs: list[list[int]]) -> list[list[float]]:
    engine = _core.Engine(model, context_params(n_ctx=512, embeddings=True))
    try:
        ids = [engine.submit_embedding(tokens, False) for tokens in inputs]
        results = collect(engine, ids)
        assert all(not results[i].error for i in ids)
        return [results[i].embedding for i in ids]
    finally:
        engine.close()


def llama_cpp_scores(path: str, inputs: list[list[int]]) -> list[float]:
    """The same inputs through llama.cpp's own API: a rank-pooling context, one sequence each."""
    import llama_cpp as lc

    lc.llama_backend_init()
    model = lc.llama_model_load_from_file(path.encode(), lc.llama_model_default_params())
    cp = lc.llama_context_default_params()
    cp.embeddings = True
    cp.pooling_type = lc.LLAMA_POOLING_TYPE_RANK
    cp.n_ctx = cp.n_batch = cp.n_ubatch = 512
    ctx = lc.llama_init_from_model(model, cp)
    batch = lc.llama_batch_init(512, 0, 1)
    out = []
    try:
        for tokens in inputs:
            lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
            batch.n_tokens = len(tokens)
            for i, t in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, i, 1, True
                batch.seq_id[i][0] = 0
            assert lc.llama_decode(ctx, batch) == 0
            emb = lc.llama_get_embeddings_seq(ctx, 0)
            out.append(float(ctypes.cast(emb, ctypes.POINTER(ctypes.c_float))[0]))
    finally:
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        lc.llama_model_free(model)
    return out


def test_the_rerank_template_is_filled_and_tokenized(reranker):
    assert reranker.n_cls_out == 2
    for doc in DOCUMENTS:
        expected = RERANK_TEMPLATE.replace("{query}", QUERY).replace("{document}", doc)
        assert reranker.rerank_tokens(QUERY, doc) == reranker.tokenize(expected, False, True)


def test_a_model_without_the_template_joins_query_and_document(tiny):
    # The tiny llama adds neither BOS, EOS nor SEP: the two texts' tokens, one after the other.
    assert tiny.rerank_tokens("ab", "cd") == tiny.tokenize("ab", False, False) + tiny.tokenize("cd", False, False)


def test_scores_are_llama_cpps(reranker, reranker_path):
    inputs = [reranker.rerank_tokens(QUERY, doc) for doc in DOCUMENTS]
    ours = scores(reranker, inputs)
    assert all(len(s) == 2 for s in ours)  # P(yes), P(no): scores, not an embedding
    assert all(abs(sum(s) - 1) < 1e-5 for s in ours)
    reference = llama_cpp_scores(reranker_path, inputs)
    assert [s[0] for s in ours] == pytest.approx(reference, rel=1e-4, abs=1e-4)
    assert len(set(round(s[0], 4) for s in ours)) == len(DOCUMENTS)  # the documents are told apart
