"""The OpenAI API: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Requests are translated to the same inference service the native API uses, with Ollama's
OpenAI-layer conventions (temperature and top_p default to 1, reasoning_effort maps to think,
the reasoning text goes in ``reasoning``)."""

from __future__ import annotations

import base64
import json
import random
import struct
import time
from typing import Any, AsyncIterator

from aiohttp import web

from ..engine.service import Delta
from ..store.types import ModelNotFound
from .app import state_of
from .errors import ApiError, read_json
from .images import fetch_images_for_model, is_remote
from .native import service_of
from .streaming import sse

_EFFORT = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "max": "max",
           "xhigh": "max", "ultra": "max"}


def _options(body: dict) -> dict[str, Any]:
    options: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}
    for key in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
        if body.get(key) is not None:
            if not isinstance(body[key], (int, float)) or isinstance(body[key], bool):
                raise ApiError(400, f"invalid type for '{key}': expected a number", param=key)
            options[key] = body[key]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
            raise ApiError(400, "max_tokens must be a non-negative integer", param="max_tokens")
        options["num_predict"] = max_tokens
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise ApiError(400, "stop must be a string or a list of strings", param="stop")
        options["stop"] = stop
    return options


def _format(body: dict) -> Any:
    rf = body.get("response_format")
    if not rf:
        return None
    if not isinstance(rf, dict):
        raise ApiError(400, "response_format must be an object", param="response_format")
    kind = rf.get("type")
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = (rf.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format.json_schema.schema must be an object", param="response_format")
        return schema
    if kind == "text":
        return None
    raise ApiError(400, f"invalid response_format type {kind!r}", param="response_format")


def _think(body: dict) -> Any:
    effort = body.get("reasoning_effort")
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    if effort is None:
        return None
    if effort not in _EFFORT:
        raise ApiError(400, f"invalid reasoning value: '{effort}' (must be \"minimal\", \"low\", \"medium\", "
                            f"\"high\", \"max\", or \"none\")", param="reasoning_effort")
    return _EFFORT[effort]


def _messages(raw: Any) -> tuple[list[dict], list[str]]:
    """OpenAI messages to Ollama's: text parts joined, images collected, tool calls' JSON-string
    arguments decoded, tool results named by their call id."""
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "[] is too short - 'messages'", param="messages")
    names_by_id: dict[str, str] = {}
    out: list[dict] = []
    images: list[str] = []
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ApiError(400, "each message must be an object with a role", param="messages")
        msg: dict[str, Any] = {"role": m["role"].lower()}
        if msg["role"] == "developer":
            msg["role"] = "system"
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    texts.append(part.get("text", ""))
                elif kind == "image_url":
                    url = part.get("image_url", {})
                    url = url.get("url") if isinstance(url, dict) else url
                    if not isinstance(url, str) or not (url.startswith("data:") or is_remote(url)):
                        raise ApiError(400, "image_url must be a data: URL or an http(s) URL")
                    image = url if is_remote(url) else url.split(",", 1)[-1]
                    images.append(image)
                    msg.setdefault("images", []).append(image)
                else:
                    raise ApiError(400, f"invalid message content part type {kind!r}", param="messages")
            msg["content"] = "".join(texts)
        elif content is None or isinstance(content, str):
            msg["content"] = content or ""
        else:
            raise ApiError(400, "invalid message content", param="messages")
        if m.get("reasoning") or m.get("reasoning_content"):
            msg["thinking"] = m.get("reasoning") or m.get("reasoning_content")
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                fn = call.get("function", {})
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except json.JSONDecodeError:
                        raise ApiError(400, "tool call arguments must be a JSON object", param="messages") from None
                calls.append({"id": call.get("id", ""), "function": {"name": fn.get("name", ""), "arguments": args}})
                if call.get("id"):
                    names_by_id[call["id"]] = fn.get("name", "")
            msg["tool_calls"] = calls
        if msg["role"] == "tool":
            name = m.get("name") or names_by_id.get(m.get("tool_call_id", ""), "")
            if name:
                msg["tool_name"] = name
            if m.get("tool_call_id"):
                msg["tool_call_id"] = m["tool_call_id"]
        out.append(msg)
    return out, images


def _openai_tool_calls(calls: list, start: int = 0) -> list[dict]:
    return [{"index": start + i, "id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for i, c in enumerate(calls)]


def _logprobs(entries: list[dict]) -> dict | None:
    if not entries:
        return None
    return {"content": [{"token": e["token"], "logprob": e["logprob"], "bytes": e["bytes"],
                         "top_logprobs": e["top_logprobs"]} for e in entries]}


def _finish(reason: str, had_calls: bool) -> str:
    if had_calls:
        return "tool_calls"
    return "length" if reason == "length" else "stop"


def _usage(delta: Delta) -> dict:
    p, c = delta.metrics.get("prompt_eval_count", 0), delta.metrics.get("eval_count", 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _logit_bias(body: dict) -> dict[int, float] | None:
    bias = body.get("logit_bias")
    if not bias:
        return None
    try:
        return {int(k): float(v) for k, v in bias.items()}
    except (TypeError, ValueError, AttributeError):
        raise ApiError(400, "logit_bias must map token ids to numbers", param="logit_bias") from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    messages, _ = _messages(body.get("messages"))
    await fetch_images_for_model(request, model, messages)
    stream = bool(body.get("stream", False))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    logprobs = bool(body.get("logprobs"))
    top = body.get("top_logprobs") or 0
    tools = body.get("tools") or None
    deltas = service_of(request).chat(
        model, messages, tools=tools, think=_think(body), format=_format(body), options=_options(body),
        logprobs=logprobs, top_logprobs=top, tool_choice=body.get("tool_choice"), logit_bias=_logit_bias(body))
    completion_id = f"chatcmpl-{random.randint(0, 998)}"
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None, lp: dict | None = None) -> dict:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if lp:
            choice["logprobs"] = lp
        return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_ollama", "choices": [choice]}

    if stream:
        async def events() -> AsyncIterator[tuple[None, dict]]:
            n_calls = 0
            first = True
            async for d in deltas:
                lp = _logprobs(d.logprobs)
                if d.thinking:
                    yield None, chunk({"role": "assistant", "content": "", "reasoning": d.thinking} if first
                                      else {"reasoning": d.thinking})
                    first = False
                if d.content or d.tool_calls or lp or first:
                    delta: dict[str, Any] = {"role": "assistant", "content": d.content} if first else \
                        {"content": d.content}
                    if d.tool_calls:
                        delta["tool_calls"] = _openai_tool_calls(d.tool_calls, n_calls)
                        n_calls += len(d.tool_calls)
                    if d.content or d.tool_calls or lp or first:
                        yield None, chunk(delta, lp=lp)
                    first = False
                if d.done:
                    yield None, chunk({}, _finish(d.done_reason, n_calls > 0))
                    if include_usage:
                        yield None, {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                     "model": model, "system_fingerprint": "fp_ollama", "choices": [],
                                     "usage": _usage(d)}

        return await sse(request, events())

    content, thinking, calls, lps = [], [], [], []
    last = Delta()
    async for d in deltas:
        content.append(d.content)
        thinking.append(d.thinking)
        calls.extend(d.tool_calls)
        lps.extend(d.logprobs)
        last = d
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if any(thinking):
        message["reasoning"] = "".join(thinking)
    if calls:
        message["tool_calls"] = _openai_tool_calls(calls)
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": _finish(last.done_reason, bool(calls))}
    if logprobs:
        choice["logprobs"] = _logprobs(lps)
    return web.json_response({"id": completion_id, "object": "chat.completion", "created": created, "model": model,
                              "system_fingerprint": "fp_ollama", "choices": [choice], "usage": _usage(last)})


async def completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string", param="prompt")
    logprobs_n = body.get("logprobs")
    if logprobs_n is not None and (not isinstance(logprobs_n, int) or isinstance(logprobs_n, bool)):
        raise ApiError(400, "logprobs must be an integer", param="logprobs")
    stream = bool(body.get("stream", False))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    deltas = service_of(request).generate(
        model, prompt, suffix=body.get("suffix") or "", raw=False, options=_options(body),
        logprobs=logprobs_n is not None, top_logprobs=logprobs_n or 0, logit_bias=_logit_bias(body))
    completion_id = f"cmpl-{random.randint(0, 998)}"
    created = int(time.time())

    def legacy_logprobs(entries: list[dict]) -> dict | None:
        if logprobs_n is None:
            return None
        return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
                "text_offset": []}

    def payload(text: str, finish: str | None, lp: list[dict]) -> dict:
        return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"text": text, "index": 0, "logprobs": legacy_logprobs(lp), "finish_reason": finish}]}

    if stream:
        async def events() -> AsyncIterator[tuple[None, dict]]:
            async for d in deltas:
                if d.content or d.logprobs:
                    yield None, payload(d.content, None, d.logprobs)
                if d.done:
                    yield None, payload("", _finish(d.done_reason, False), [])
                    if include_usage:
                        yield None, {"id": completion_id, "object": "text_completion", "created": created,
                                     "model": model, "choices": [], "usage": _usage(d)}

        return await sse(request, events())

    text, lps = [], []
    last = Delta()
    async for d in deltas:
        text.append(d.content)
        lps.extend(d.logprobs)
        last = d
    result = payload("".join(text), _finish(last.done_reason, False), lps)
    result["usage"] = _usage(last)
    return web.json_response(result)


async def embeddings(request: web.Request) -> web.Response:
    body = await read_json(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    raw = body.get("input")
    if raw == "" or raw is None:
        raw = [""] if raw == "" else None
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        raise ApiError(400, "invalid input", param="input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, f"invalid encoding format: {encoding!r}; expected float or base64",
                       param="encoding_format")
    result = await service_of(request).embed(model, inputs, dimensions=body.get("dimensions"))
    data = []
    for i, vector in enumerate(result.embeddings):
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "embedding": value, "index": i})
    return web.json_response({"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": result.prompt_eval_count,
                                        "total_tokens": result.prompt_eval_count}})


def _model_entry(m) -> dict:
    created = int(m.modified_at.timestamp()) if getattr(m, "modified_at", None) else int(time.time())
    parts = m.name.split("/")
    owner = parts[-2] if len(parts) >= 2 else "library"
    return {"id": m.name, "object": "model", "created": created, "owned_by": owner}


async def list_models(request: web.Request) -> web.Response:
    store = state_of(request).store
    models = store.list() if store is not None else []
    return web.json_response({"object": "list", "data": [_model_entry(m) for m in models]})


async def retrieve_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    try:
        model = state_of(request).scheduler.resolve(name)
    except ModelNotFound:
        raise ApiError(404, f"model '{name}' not found", kind="not_found_error") from None
    return web.json_response(_model_entry(model))


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
