"""Ollama's native API: /api/generate, /api/chat, /api/embed, /api/embeddings, /api/ps,
/api/version, / and /health. Each handler reads like Ollama's documentation of it."""

from __future__ import annotations

import random
import string
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from ..api import ChatRequest, Delta, EmbedRequest, GenerateRequest, ToolCall
from ..core import _core
from ..timefmt import now_rfc3339
from ..version import OLLAMA_API_VERSION, __version__
from . import slots
from .errors import ApiError, read_json, validated
from .state import service_of, state_of
from .streaming import ndjson

FAR_FUTURE = datetime(2318, 1, 1, tzinfo=timezone.utc)  # what "forever" looks like in expires_at


# --- from the wire: Ollama's request bodies are the api types' JSON, plus a few wire-only fields --

def _bool(body: dict, key: str, default: bool | None = None) -> bool | None:
    value = body.get(key, default)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"invalid value for {key}: expected a boolean")
    return value


def _model_name(body: dict) -> str:
    name = body.get("model") or body.get("name") or ""
    if not isinstance(name, str):
        raise ApiError(400, "model must be a string")
    return name


def _fields(body: dict, kind: type[BaseModel], name: str) -> dict[str, Any]:
    """The body's fields that ``kind`` has; null is Go's zero value, as if left out."""
    fields = {k: v for k, v in body.items() if k in kind.model_fields and v is not None}
    for key in ("truncate", "shift"):
        _bool(body, key)  # a boolean or nothing, as Ollama's *bool reads it
    fields["model"] = name
    return fields


def chat_request(body: dict) -> ChatRequest:
    name = _model_name(body)
    if not name:
        raise ApiError(400, "model is required")
    if body.get("tools") is not None and not isinstance(body["tools"], list):
        raise ApiError(400, "tools must be a list")
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "messages must be a list of objects")
    if not all(isinstance(m.get("role"), str) for m in messages):
        raise ApiError(400, "each message needs a role")
    fields = _fields(body, ChatRequest, name)
    fields["messages"] = messages
    return validated(ChatRequest, fields)


def generate_request(body: dict) -> GenerateRequest:
    name = _model_name(body)
    if not name:
        raise ApiError(404, "model '' not found")
    context = body.get("context")
    if context is not None and (not isinstance(context, list) or not all(isinstance(t, int) for t in context)):
        raise ApiError(400, "context must be a list of token ids")
    for key in ("prompt", "suffix", "system", "template"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ApiError(400, f"{key} must be a string")
    return validated(GenerateRequest, _fields(body, GenerateRequest, name))


def embed_request(body: dict, inputs: list[str], normalize: bool) -> EmbedRequest:
    fields = _fields(body, EmbedRequest, _model_name(body))
    fields.update(input=inputs, normalize=normalize)
    return validated(EmbedRequest, fields)


# --- to the wire -----------------------------------------------------------------------------

def _tool_call_id() -> str:
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def native_tool_calls(calls: list[ToolCall], start: int = 0) -> list[dict]:
    return [{"id": c.id or _tool_call_id(), "function": {"index": start + i, "name": c.name, "arguments": c.arguments}}
            for i, c in enumerate(calls)]


def _ending(item: dict[str, Any], d: Delta, with_context: bool) -> dict[str, Any]:
    if d.logprobs:
        item["logprobs"] = [lp.model_dump() for lp in d.logprobs]
    item["done"] = d.done
    if d.done:
        item["done_reason"] = d.done_reason
        if with_context and d.context is not None:
            item["context"] = d.context
        item.update(d.metrics.reported())
    return item


def generate_line(model: str, d: Delta) -> dict[str, Any]:
    """A delta as a line of /api/generate (a merged delta: the whole answer)."""
    item: dict[str, Any] = {"model": model, "created_at": now_rfc3339(), "response": d.content}
    if d.remote_host:
        item.update(remote_model=d.remote_model, remote_host=d.remote_host)
    if d.thinking:
        item["thinking"] = d.thinking
    if d.tool_calls:
        item["tool_calls"] = native_tool_calls(d.tool_calls)
    return _ending(item, d, with_context=True)


def chat_line(model: str, d: Delta, first_call: int = 0) -> dict[str, Any]:
    """A delta as a line of /api/chat; ``first_call`` numbers its tool calls after earlier ones."""
    message: dict[str, Any] = {"role": "assistant", "content": d.content}
    if d.thinking:
        message["thinking"] = d.thinking
    if d.tool_calls:
        message["tool_calls"] = native_tool_calls(d.tool_calls, first_call)
    item: dict[str, Any] = {"model": model, "created_at": now_rfc3339(), "message": message}
    if d.remote_host:
        item.update(remote_model=d.remote_model, remote_host=d.remote_host)
    return _ending(item, d, with_context=False)


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": OLLAMA_API_VERSION})


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def health(request: web.Request) -> web.Response:
    state = state_of(request)
    return web.json_response({
        "status": "ok",
        "version": __version__,
        "ollama_api_version": OLLAMA_API_VERSION,
        "uptime_seconds": int(time.time() - state.started_at),
        "loaded_models": sorted({r.name for r in state.scheduler.running()}),
    })


async def generate(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    stream = _bool(body, "stream", True)
    render_only = _bool(body, "_debug_render_only")
    req = generate_request(body)
    if render_only:
        text, n_images = await service_of(request).render_generate(req)
        return web.json_response({"model": req.model, "created_at": now_rfc3339(), "response": "", "done": False,
                                  "_debug_info": {"rendered_template": text, "image_count": n_images}})
    deltas = service_of(request).generate(req)
    if stream:
        return await ndjson(request, (generate_line(req.model, d) async for d in deltas))
    return web.json_response(generate_line(req.model, Delta.merge([d async for d in deltas])))


async def chat(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    stream = _bool(body, "stream", True)
    render_only = _bool(body, "_debug_render_only")
    req = chat_request(body)
    if render_only:
        text, n_images = await service_of(request).render_chat(req)
        return web.json_response({"model": req.model, "created_at": now_rfc3339(),
                                  "message": {"role": "", "content": ""}, "done": False,
                                  "_debug_info": {"rendered_template": text, "image_count": n_images}})
    deltas = service_of(request).chat(req)
    if not stream:
        return web.json_response(chat_line(req.model, Delta.merge([d async for d in deltas])))

    async def lines() -> AsyncIterator[dict]:
        n_calls = 0
        async for d in deltas:
            yield chat_line(req.model, d, n_calls)
            n_calls += len(d.tool_calls)

    return await ndjson(request, lines())


async def embed(request: web.Request) -> web.Response:
    body = await read_json(request)
    raw = body.get("input", [])
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        raise ApiError(400, "invalid input type")
    result = await service_of(request).embed(embed_request(body, inputs, normalize=True))
    out: dict[str, Any] = {"model": result.model, "embeddings": result.embeddings}
    out.update(result.metrics.reported())
    return web.json_response(out)


async def embeddings(request: web.Request) -> web.Response:
    body = await read_json(request)
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string")
    result = await service_of(request).embed(embed_request(body, [prompt] if prompt else [], normalize=False))
    return web.json_response({"embedding": result.embeddings[0] if result.embeddings else []})


async def ps(request: web.Request) -> web.Response:
    models = []
    shown: set[str] = set()
    # A model loaded for both generation and embeddings is one model, as Ollama shows it: the
    # runner used last speaks for it.
    running = state_of(request).scheduler.running()
    for runner in sorted(running, key=lambda r: r.last_used, reverse=True):
        if runner.name in shown:
            continue
        shown.add(runner.name)
        spec = runner.spec
        size = runner.memory or runner.model.model.size
        if runner.placement is not None:
            # Measured on the devices where the load could be (its own weights, loaded alone;
            # nothing measured means another process freed memory meanwhile), else the
            # placement's estimate; size is then what the GPUs hold plus the CPU's part.
            measured = runner.vram_measured or {}
            gpus = [{"id": g.id, "name": g.name, "layers": g.layers, "size_vram": measured.get(g.index) or g.bytes}
                    for g in runner.placement.gpus]
            vram = sum(g["size_vram"] for g in gpus)
            size = vram + runner.placement.cpu_bytes if gpus else size
        else:  # no GPU inventory to place by (Apple's Metal, no NVML): the options say where it went
            vram, gpus = (size if runner.load_options.num_gpu != 0 and _gpu_offload() else 0), []
        if runner.keep_alive < 0:
            expires = FAR_FUTURE
        else:
            expires = runner.expires_at or (datetime.now(timezone.utc) + timedelta(seconds=runner.keep_alive))
        models.append({
            "name": spec.name, "model": spec.name, "size": size,
            "digest": spec.digest,
            "details": {k: v for k, v in spec.details.items() if k != "parent_model"},
            "expires_at": expires.astimezone().isoformat(),
            "size_vram": vram,
            "context_length": runner.load_options.num_ctx,
            "gpus": gpus,  # beyond Ollama: what each GPU holds of the model
            # Beyond Ollama: slots busy and free, requests waiting, each slot's cached tokens.
            "slots": slots.summary(slots.runner_slots(r) for r in running if r.name == runner.name),
        })
    models.sort(key=lambda m: m["expires_at"], reverse=True)
    return web.json_response({"models": models})


def _gpu_offload() -> bool:
    return _core.supports_gpu_offload()


def setup(app: web.Application) -> None:
    app.router.add_route("GET", "/", root)
    app.router.add_route("HEAD", "/", root)
    app.router.add_route("GET", "/api/version", version)
    app.router.add_route("HEAD", "/api/version", version)
    app.router.add_route("GET", "/health", health)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings)
    app.router.add_get("/api/ps", ps)
