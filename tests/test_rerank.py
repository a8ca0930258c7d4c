"""Rerank over HTTP: /api/rerank, /v1/rerank (llama-server's, Jina's and Cohere's v1 shape), /v2/rerank
(Cohere's v2) and /rerank, against a real server and store, with a generated Qwen3-Reranker-shaped
model whose scores the core test (test_rerank_core.py) checks against llama.cpp itself."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from a3s_power.core import _core
from tests.conftest import collect, context_params
from tests.model_server import ServerThread
from tests.test_rerank_core import DOCUMENTS, QUERY, RERANK_TEMPLATE
from tests.tiny_models import write_tiny_llama


@pytest.fixture(scope="module")
def reranker_path(tmp_path_factory) -> str:
    return str(write_tiny_llama(tmp_path_factory.mktemp("rr") / "tiny-reranker.gguf", architecture="qwen3",
                                rerank_template=RERANK_TEMPLATE, seed=3))


@pytest.fixture(scope="module")
def server(tmp_path_factory, reranker_path, tiny_path):
    with ServerThread(tmp_path_factory.mktemp("home"), no_cloud=True) as srv:
        for name, path in (("rr", reranker_path), ("plain", tiny_path)):
            data = Path(path).read_bytes()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            assert requests.post(f"{srv.url}/api/blobs/{digest}", data=data).status_code in (200, 201)
            r = requests.post(srv.url + "/api/create", json={"model": name, "files": {"model.gguf": digest},
                                                             "stream": False})
            assert r.status_code == 200, r.text
        yield srv


@pytest.fixture(scope="module")
def expected(reranker_path) -> list[float]:
    """Each document's score from the core directly: the model's own template, one sequence each."""
    model = _core.Model(reranker_path)
    engine = _core.Engine(model, context_params(n_ctx=512, embeddings=True))
    try:
        ids = [engine.submit_embedding(model.rerank_tokens(QUERY, d), False) for d in DOCUMENTS]
        results = collect(engine, ids)
        return [results[i].embedding[0] for i in ids]
    finally:
        engine.close()
        model.close()


def post(server, path: str, body: dict) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=120)


def test_a_reranker_says_so_in_its_capabilities(server):
    assert post(server, "/api/show", {"model": "rr"}).json()["capabilities"] == ["rerank"]
    assert "rerank" not in post(server, "/api/show", {"model": "plain"}).json()["capabilities"]


@pytest.mark.parametrize("path", ["/api/rerank", "/v1/rerank", "/v2/rerank", "/rerank"])
def test_documents_come_back_ordered_by_score(server, expected, path):
    r = post(server, path, {"model": "rr", "query": QUERY, "documents": DOCUMENTS})
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert sorted(x["index"] for x in results) == list(range(len(DOCUMENTS)))
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    for x in results:
        assert x["relevance_score"] == pytest.approx(expected[x["index"]], abs=1e-4)
        assert "document" not in x
    assert body["model"] == "rr"
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0


def test_top_n_and_returned_documents_in_jina_and_cohere_shape(server, expected):
    best = sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])[:2]
    documents = [{"text": d} for d in DOCUMENTS]  # as Jina and Cohere may send them
    r = post(server, "/v1/rerank", {"model": "rr", "query": QUERY, "documents": documents, "top_n": 2,
                                    "return_documents": True})
    results = r.json()["results"]
    assert [x["index"] for x in results] == best
    assert [x["document"] for x in results] == [{"text": DOCUMENTS[i]} for i in best]


def test_the_batch_is_one_request_per_document_whatever_their_number(server):
    documents = [f"document number {i} about pandas" for i in range(40)]
    r = post(server, "/api/rerank", {"model": "rr", "query": QUERY, "documents": documents})
    assert r.status_code == 200 and len(r.json()["results"]) == 40


@pytest.mark.parametrize("path", ["/api/rerank", "/v1/rerank"])
@pytest.mark.parametrize("body,status,words", [
    ({"query": QUERY, "documents": []}, 400, "documents"),
    ({"query": QUERY}, 400, "documents"),
    ({"query": QUERY, "documents": ["x"] * 1001}, 400, "too many documents"),
    ({"query": QUERY, "documents": ["ok", 5]}, 400, "documents[1]"),
    ({"query": QUERY, "documents": ["ok", "word " * 2000]}, 400, "documents[1]"),
    ({"documents": ["a"]}, 400, "query"),
    ({"query": QUERY, "documents": ["a"], "top_n": 0}, 400, "top_n"),
    ({"model": "nope", "query": QUERY, "documents": ["a"]}, 404, "not found"),
    ({"model": "plain", "query": QUERY, "documents": ["a"]}, 400, "does not support rerank"),
])
def test_bad_requests_get_a_clear_error_in_the_apis_shape(server, path, body, status, words):
    r = post(server, path, {"model": "rr", **body})
    assert r.status_code == status, r.text[:300]
    error = r.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert words in message
