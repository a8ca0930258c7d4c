"""Ollama's native API: /api/generate, /api/chat, /api/embed, /api/embeddings, /api/ps,
/api/version, / and /health. Each handler reads like Ollama's documentation of it."""

from __future__ import annotations

import random
import string
import time
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

from aiohttp import web

from ..engine.service import Delta, InferenceService
from ..errors import InvalidOptionError
from ..version import OLLAMA_API_VERSION, __version__
from .app import state_of
from .errors import ApiError, read_json
from ..timefmt import now_rfc3339
from .streaming import ndjson

FAR_FUTURE = datetime(2318, 1, 1, tzinfo=timezone.utc)  # what "forever" looks like in expires_at


def service_of(request: web.Request) -> InferenceService:
    return state_of(request).service


def _bool(body: dict, key: str, default: bool | None = None) -> bool | None:
    value = body.get(key, default)
    if value is not None and not isinstance(value, bool):
        raise ApiError(400, f"invalid value for {key}: expected a boolean")
    return value


def _tool_call_id() -> str:
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def native_tool_calls(calls: list, start: int = 0) -> list[dict]:
    return [{"id": getattr(c, "id", None) or _tool_call_id(),
             "function": {"index": start + i, "name": c.name, "arguments": c.arguments}}
            for i, c in enumerate(calls)]


def _metrics(delta: Delta) -> dict:
    return {k: v for k, v in delta.metrics.items() if v}


def _model_name(body: dict) -> str:
    name = body.get("model") or body.get("name") or ""
    if not isinstance(name, str):
        raise ApiError(400, "model must be a string")
    return name


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "messages must be a list of objects")
    out = []
    for m in messages:
        m = dict(m)
        role = m.get("role")
        if not isinstance(role, str):
            raise ApiError(400, "each message needs a role")
        m["role"] = role.lower()
        if m.get("content") is None:
            m["content"] = ""
        if not isinstance(m["content"], str):
            raise ApiError(400, "message content must be a string")
        out.append(m)
    return out


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
    name = _model_name(body)
    if not name:
        raise ApiError(404, "model '' not found")
    stream = _bool(body, "stream", True)
    context = body.get("context")
    if context is not None and (not isinstance(context, list) or not all(isinstance(t, int) for t in context)):
        raise ApiError(400, "context must be a list of token ids")
    for key in ("prompt", "suffix", "system", "template"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ApiError(400, f"{key} must be a string")
    if _bool(body, "_debug_render_only"):
        text, n_images = await service_of(request).render_generate(
            name, body.get("prompt") or "", suffix=body.get("suffix") or "", system=body.get("system"),
            template=body.get("template"), raw=bool(body.get("raw")), images=body.get("images"),
            options=body.get("options"), keep_alive=body.get("keep_alive"), think=body.get("think"))
        return web.json_response({"model": name, "created_at": now_rfc3339(), "response": "", "done": False,
                                  "_debug_info": {"rendered_template": text, "image_count": n_images}})
    deltas = service_of(request).generate(
        name, body.get("prompt") or "", suffix=body.get("suffix") or "", system=body.get("system"),
        template=body.get("template"), context=context, raw=bool(body.get("raw")), format=body.get("format"),
        images=body.get("images"), options=body.get("options"), keep_alive=body.get("keep_alive"),
        think=body.get("think"), truncate=_bool(body, "truncate"), shift=_bool(body, "shift"),
        logprobs=bool(body.get("logprobs")), top_logprobs=body.get("top_logprobs") or 0)

    async def lines() -> AsyncIterator[dict]:
        async for d in deltas:
            item: dict[str, Any] = {"model": name, "created_at": now_rfc3339(), "response": d.content}
            if d.remote_host:
                item.update(remote_model=d.remote_model, remote_host=d.remote_host)
            if d.thinking:
                item["thinking"] = d.thinking
            if d.tool_calls:
                item["tool_calls"] = native_tool_calls(d.tool_calls)
            if d.logprobs:
                item["logprobs"] = d.logprobs
            item["done"] = d.done
            if d.done:
                item["done_reason"] = d.done_reason
                if d.context is not None:
                    item["context"] = d.context
                item.update(_metrics(d))
            yield item

    if stream:
        return await ndjson(request, lines())
    return web.json_response(await _merge(lines(), "response"))


async def chat(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    name = _model_name(body)
    if not name:
        raise ApiError(400, "model is required")
    stream = _bool(body, "stream", True)
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise ApiError(400, "tools must be a list")
    if _bool(body, "_debug_render_only"):
        text, n_images = await service_of(request).render_chat(
            name, _messages(body), tools=tools or None, think=body.get("think"), options=body.get("options"),
            keep_alive=body.get("keep_alive"), truncate=_bool(body, "truncate"))
        return web.json_response({"model": name, "created_at": now_rfc3339(),
                                  "message": {"role": "", "content": ""}, "done": False,
                                  "_debug_info": {"rendered_template": text, "image_count": n_images}})
    deltas = service_of(request).chat(
        name, _messages(body), tools=tools or None, think=body.get("think"), format=body.get("format"),
        options=body.get("options"), keep_alive=body.get("keep_alive"), truncate=_bool(body, "truncate"),
        shift=_bool(body, "shift"), logprobs=bool(body.get("logprobs")), top_logprobs=body.get("top_logprobs") or 0)

    async def lines() -> AsyncIterator[dict]:
        n_calls = 0
        async for d in deltas:
            message: dict[str, Any] = {"role": "assistant", "content": d.content}
            if d.thinking:
                message["thinking"] = d.thinking
            if d.tool_calls:
                message["tool_calls"] = native_tool_calls(d.tool_calls, n_calls)
                n_calls += len(d.tool_calls)
            item: dict[str, Any] = {"model": name, "created_at": now_rfc3339(), "message": message}
            if d.remote_host:
                item.update(remote_model=d.remote_model, remote_host=d.remote_host)
            if d.logprobs:
                item["logprobs"] = d.logprobs
            item["done"] = d.done
            if d.done:
                item["done_reason"] = d.done_reason
                item.update(_metrics(d))
            yield item

    if stream:
        return await ndjson(request, lines())
    return web.json_response(await _merge(lines(), "message"))


async def _merge(items: AsyncIterator[dict], field: str) -> dict:
    """stream:false — Ollama concatenates the text (and logprobs, tool calls) into the last object."""
    text, thinking, logprobs, calls = [], [], [], []
    last: dict = {}
    async for item in items:
        last = item
        part = item.get(field)
        if field == "message":
            text.append(part.get("content", ""))
            thinking.append(part.get("thinking", ""))
            calls.extend(part.get("tool_calls", []))
        else:
            text.append(part)
            thinking.append(item.get("thinking", ""))
            calls.extend(item.get("tool_calls", []))
        logprobs.extend(item.get("logprobs", []))
    if field == "message":
        last["message"]["content"] = "".join(text)
        if any(thinking):
            last["message"]["thinking"] = "".join(thinking)
        if calls:
            last["message"]["tool_calls"] = calls
    else:
        last["response"] = "".join(text)
        if any(thinking):
            last["thinking"] = "".join(thinking)
        if calls:
            last["tool_calls"] = calls
    if logprobs:
        last["logprobs"] = logprobs
    return last


async def embed(request: web.Request) -> web.Response:
    body = await read_json(request)
    name = _model_name(body)
    raw = body.get("input", [])
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        raise ApiError(400, "invalid input type")
    inputs = [x for x in inputs]
    result = await _embed(request, name, inputs, body, normalize=True)
    out = {"model": name, "embeddings": result.embeddings}
    out.update({k: v for k, v in result.metrics.items() if v})
    return web.json_response(out)


async def embeddings(request: web.Request) -> web.Response:
    body = await read_json(request)
    name = _model_name(body)
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string")
    result = await _embed(request, name, [prompt] if prompt else [], body, normalize=False)
    return web.json_response({"embedding": result.embeddings[0] if result.embeddings else []})


async def _embed(request: web.Request, name: str, inputs: list[str], body: dict, normalize: bool):
    try:
        return await service_of(request).embed(
            name, inputs, truncate=_bool(body, "truncate"), dimensions=body.get("dimensions"),
            options=body.get("options"), keep_alive=body.get("keep_alive"), normalize=normalize)
    except InvalidOptionError as exc:
        raise ApiError(400, str(exc)) from None


async def ps(request: web.Request) -> web.Response:
    models = []
    shown: set[str] = set()
    # A model loaded for both generation and embeddings is one model, as Ollama shows it: the
    # runner used last speaks for it.
    for runner in sorted(state_of(request).scheduler.running(), key=lambda r: r.last_used, reverse=True):
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
        })
    models.sort(key=lambda m: m["expires_at"], reverse=True)
    return web.json_response({"models": models})


def _gpu_offload() -> bool:
    from ..core import _core

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
