"""Rerank: /api/rerank, /v1/rerank (llama-server's, Jina's and Cohere's v1 shape) and /v2/rerank
(Cohere's v2), and llama-server's own /rerank. Ollama has none (ollama/ollama #3368).

One request and answer shape serves them all: ``query``, ``documents`` (strings, or objects with a
``text``, as Jina and Cohere accept), ``top_n`` and ``return_documents`` in; ``results`` with
``index`` and ``relevance_score``, most relevant first, out (``document`` as ``{"text": ...}`` when
asked), with ``usage`` as llama-server reports it."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..api import MAX_RERANK_DOCUMENTS, RerankRequest, RerankResponse
from .errors import ApiError, read_json, validated
from .state import service_of


def rerank_request(body: dict[str, Any]) -> RerankRequest:
    """A wire body as a rerank request; a missing or malformed field is a 400 that names it."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required", param="model")
    query = body.get("query")
    if not isinstance(query, str):
        raise ApiError(400, "query is required and must be a string", param="query")
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents:
        raise ApiError(400, "documents must be a non-empty list", param="documents")
    if len(documents) > MAX_RERANK_DOCUMENTS:
        raise ApiError(400, f"too many documents: {len(documents)}, at most {MAX_RERANK_DOCUMENTS}",
                       param="documents")
    texts = []
    for i, doc in enumerate(documents):
        text = doc.get("text") if isinstance(doc, dict) else doc
        if not isinstance(text, str):
            raise ApiError(400, f"documents[{i}] must be a string or an object with a text", param=f"documents[{i}]")
        texts.append(text)
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise ApiError(400, "top_n must be a positive integer", param="top_n")
    return validated(RerankRequest, {"model": model, "query": query, "documents": texts, "top_n": top_n,
                                     "return_documents": bool(body.get("return_documents", False)),
                                     "options": body.get("options"), "keep_alive": body.get("keep_alive")})


def rerank_body(result: RerankResponse, request: RerankRequest) -> dict[str, Any]:
    results = []
    for r in result.results:
        entry: dict[str, Any] = {"index": r.index, "relevance_score": r.relevance_score}
        if r.document is not None:
            entry["document"] = {"text": r.document}
        results.append(entry)
    usage = {"prompt_tokens": result.prompt_eval_count, "total_tokens": result.prompt_eval_count}
    return {"model": request.model, "object": "list", "results": results, "usage": usage,
            "meta": {"billed_units": {"search_units": 1}}}  # Cohere's clients read meta


async def rerank(request: web.Request) -> web.Response:
    req = rerank_request(await read_json(request))
    result = await service_of(request).rerank(req)
    return web.json_response(rerank_body(result, req))


def setup(app: web.Application) -> None:
    for path in ("/api/rerank", "/v1/rerank", "/v2/rerank", "/rerank"):
        app.router.add_post(path, rerank)
