"""Tokens through a model's vocabulary: /api/tokenize and /api/detokenize in Ollama's style, and
llama-server's /tokenize and /detokenize (also under /v1/), which its clients call.

Ollama's: ``{"model", "text"}`` (or ``content``) in, ``{"model", "tokens"}`` out, special tokens
added as the model adds them; ``{"model", "tokens"}`` in, ``{"model", "text"}`` out.
llama-server's: ``{"content", "add_special" (false), "parse_special" (true), "with_pieces" (false)}``
in, ``{"tokens": [...]}`` out, each token ``{"id", "piece"}`` with ``with_pieces`` (the piece a
string, or its bytes where they are no whole UTF-8); ``{"tokens"}`` in, ``{"content"}`` out. Its
clients talk to a server of one model and may send no ``model``: then the one loaded model answers.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..api import DetokenizeRequest, TokenizeRequest
from .errors import ApiError, read_json, validated
from .state import service_of, state_of


def _flag(body: dict, key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{key} must be a boolean", param=key)
    return value


def _model(request: web.Request, body: dict, *, required: bool) -> str:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "model must be a string", param="model")
    if model:
        return model
    if not required:
        loaded = sorted({r.name for r in state_of(request).scheduler.running()})
        if len(loaded) == 1:
            return loaded[0]
    raise ApiError(400, "model is required", param="model")


def _common(body: dict) -> dict[str, Any]:
    return {"options": body.get("options"), "keep_alive": body.get("keep_alive")}


def tokenize_request(body: dict, model: str, *, keys: tuple[str, ...], add_special: bool) -> TokenizeRequest:
    text = next((body[k] for k in keys if body.get(k) is not None), None)
    if not isinstance(text, str):
        raise ApiError(400, f"{keys[0]} is required and must be a string", param=keys[0])
    return validated(TokenizeRequest, {
        "model": model, "text": text, "add_special": _flag(body, "add_special", add_special),
        "parse_special": _flag(body, "parse_special", True), "with_pieces": _flag(body, "with_pieces", False),
        **_common(body)})


def detokenize_request(body: dict, model: str) -> DetokenizeRequest:
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise ApiError(400, "tokens must be a list of token ids", param="tokens")
    return validated(DetokenizeRequest, {"model": model, "tokens": tokens, **_common(body)})


def _piece(raw: bytes) -> str | list[int]:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # part of a character: llama-server gives the bytes
        return list(raw)


# --- Ollama's shape ------------------------------------------------------------------------------

async def api_tokenize(request: web.Request) -> web.Response:
    body = await read_json(request)
    req = tokenize_request(body, _model(request, body, required=True), keys=("text", "content"), add_special=True)
    result = await service_of(request).tokenize(req)
    return web.json_response({"model": result.model, "tokens": result.tokens})


async def api_detokenize(request: web.Request) -> web.Response:
    body = await read_json(request)
    result = await service_of(request).detokenize(detokenize_request(body, _model(request, body, required=True)))
    return web.json_response({"model": result.model, "text": result.text})


# --- llama-server's shape ------------------------------------------------------------------------

async def tokenize(request: web.Request) -> web.Response:
    body = await read_json(request)
    req = tokenize_request(body, _model(request, body, required=False), keys=("content",), add_special=False)
    result = await service_of(request).tokenize(req)
    if result.pieces is None:
        return web.json_response({"tokens": result.tokens})
    return web.json_response({"tokens": [{"id": t, "piece": _piece(p)} for t, p in zip(result.tokens, result.pieces)]})


async def detokenize(request: web.Request) -> web.Response:
    body = await read_json(request)
    result = await service_of(request).detokenize(detokenize_request(body, _model(request, body, required=False)))
    return web.json_response({"content": result.text})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/tokenize", api_tokenize)
    app.router.add_post("/api/detokenize", api_detokenize)
    for prefix in ("", "/v1"):
        app.router.add_post(prefix + "/tokenize", tokenize)
        app.router.add_post(prefix + "/detokenize", detokenize)
