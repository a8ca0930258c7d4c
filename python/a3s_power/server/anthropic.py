"""The Anthropic Messages API: POST /v1/messages and /v1/messages/count_tokens.

Content blocks are translated to the inference service's messages (text, images, tool_use,
tool_result, thinking) and the answer back to blocks; streaming follows Anthropic's event
sequence exactly: message_start, content_block_start / _delta / _stop per block, message_delta
with the stop reason and usage, message_stop."""

from __future__ import annotations

import json
import random
import string
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..api import ChatRequest, Delta, Metrics
from .errors import ApiError, read_json, validated
from .images import fetch_images_for_model, is_remote
from .openai import ollama_options
from .state import service_of
from .streaming import sse


def _id(prefix: str) -> str:
    return prefix + "".join(random.choices(string.ascii_letters + string.digits, k=24))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _system(raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        return "\n".join(b.get("text", "") for b in raw if isinstance(b, dict))
    raise ApiError(400, "system: expected a string or a list of text blocks")


def translate_messages(raw: Any) -> list[dict]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages: at least one message is required")
    out: list[dict] = []
    names: dict[str, str] = {}
    for m in raw:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise ApiError(400, "messages: each message needs a role of user or assistant")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise ApiError(400, "messages: content must be a string or a list of blocks")
        texts: list[str] = []
        message: dict[str, Any] = {"role": m["role"]}
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(block.get("text", ""))
            elif kind == "image":
                source = block.get("source") or {}
                if source.get("type") == "url" and isinstance(source.get("url"), str) and is_remote(source["url"]):
                    message.setdefault("images", []).append(source["url"])
                elif source.get("type") == "base64" and source.get("data"):
                    message.setdefault("images", []).append(source["data"])
                else:
                    raise ApiError(400, "image blocks must carry base64 data or an http(s) url")
            elif kind == "thinking":
                message["thinking"] = block.get("thinking", "")
            elif kind == "redacted_thinking":
                continue
            elif kind == "tool_use":
                names[block.get("id", "")] = block.get("name", "")
                message.setdefault("tool_calls", []).append(
                    {"id": block.get("id", ""), "function": {"name": block.get("name", ""),
                                                             "arguments": block.get("input") or {}}})
            elif kind == "tool_result":
                # Each tool result is a message of its own, as the chat templates expect.
                if texts or message.get("images"):
                    out.append({**message, "content": "".join(texts)})
                    texts, message = [], {"role": m["role"]}
                out.append({"role": "tool", "content": _text_of(block.get("content")),
                            "tool_name": names.get(block.get("tool_use_id", ""), ""),
                            "tool_call_id": block.get("tool_use_id", "")})
            else:
                raise ApiError(400, f"messages: unsupported content block type {kind!r}")
        if texts or len(message) > 1:
            message["content"] = "".join(texts)
            out.append(message)
    return out


def _tools(raw: Any) -> list[dict] | None:
    if not raw:
        return None
    if not isinstance(raw, list):
        raise ApiError(400, "tools: expected a list")
    return [{"type": "function", "function": {"name": t.get("name", ""), "description": t.get("description", ""),
                                              "parameters": t.get("input_schema") or {"type": "object"}}}
            for t in raw if isinstance(t, dict)]


def _tool_choice(raw: Any) -> Any:
    if not raw:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"type": "function", "function": {"name": raw.get("name", "")}}
    raise ApiError(400, f"tool_choice: unsupported type {kind!r}")


def _stop_reason(delta: Delta, had_tools: bool) -> str:
    if had_tools:
        return "tool_use"
    if delta.done_reason == "length":
        return "max_tokens"
    if delta.stop_sequence:
        return "stop_sequence"
    return "end_turn"


def _conversation(body: dict) -> list[dict]:
    messages = translate_messages(body.get("messages"))
    system = _system(body.get("system"))
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return messages


def messages_request(body: dict) -> ChatRequest:
    """/v1/messages' body as a chat request."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ApiError(400, "max_tokens: must be a positive integer")
    options = ollama_options(body)
    options["num_predict"] = max_tokens
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            if not isinstance(body[key], (int, float)) or isinstance(body[key], bool):
                raise ApiError(400, f"{key}: must be a number")
            options[key] = body[key]
    stops = body.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise ApiError(400, "stop_sequences: must be a list of strings")
        options["stop"] = stops
    thinking = body.get("thinking")
    think = thinking.get("type") in ("enabled", "adaptive") if isinstance(thinking, dict) else None
    # Anthropic's clients ask for thinking whatever the model: a model that cannot just answers.
    return validated(ChatRequest, {"model": model, "messages": _conversation(body), "options": options,
                                   "think": think, "think_if_able": True, "tools": _tools(body.get("tools")),
                                   "tool_choice": _tool_choice(body.get("tool_choice"))})


def whole_message(model: str, message_id: str, d: Delta) -> dict:
    """The answer of a request without ``stream``, from the merged delta."""
    content: list[dict] = []
    if d.thinking:
        content.append({"type": "thinking", "thinking": d.thinking, "signature": ""})
    if d.content or not d.tool_calls:
        content.append({"type": "text", "text": d.content})
    content += [{"type": "tool_use", "id": _id("toolu_"), "name": call.name, "input": call.arguments}
                for call in d.tool_calls]
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": _stop_reason(d, bool(d.tool_calls)), "stop_sequence": d.stop_sequence or None,
            "usage": _usage(d)}


def _usage(d: Delta) -> dict[str, int]:
    """Anthropic's usage: ``input_tokens`` are the prompt's tokens not read from a cache, as
    Anthropic counts them (the whole prompt is their sum with ``cache_read_input_tokens``); this
    server writes its cache as it evaluates, at no cost, so nothing counts as cache creation."""
    cached = d.metrics.prompt_eval_cached_count
    return {"input_tokens": d.metrics.prompt_eval_count - cached, "output_tokens": d.metrics.eval_count,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


async def messages(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    req = messages_request(body)
    await fetch_images_for_model(request, req.model, req.messages)
    deltas = service_of(request).chat(req)
    message_id = _id("msg_")
    if body.get("stream"):
        return await sse(request, _events(req.model, message_id, deltas), done_marker=False)
    return web.json_response(whole_message(req.model, message_id, Delta.merge([d async for d in deltas])))


async def _events(model: str, message_id: str, deltas: AsyncIterator[Delta]) -> AsyncIterator[tuple[str, dict]]:
    # message_start waits for the engine's first delta: the model is resolved and loaded and the
    # prompt evaluated by then, so whatever fails there (an unknown model, a prompt too long) is an
    # HTTP error status before the first byte, not an error event inside a 200 stream; and the
    # prompt's token count is known by then where the service reports it before the last delta.
    iterator = deltas.__aiter__()
    try:
        pending: Delta | None = await iterator.__anext__()
    except StopAsyncIteration:
        pending = None
    # How much of the prompt came from the cache is known at its end (the last delta's metrics):
    # message_start counts the whole prompt as input, message_delta then splits it.
    start = Delta(metrics=Metrics(prompt_eval_count=pending.metrics.prompt_eval_count if pending is not None else 0))
    yield "message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": _usage(start)}}
    index = -1
    open_kind: str | None = None
    had_tools = False

    def start(kind: str, block: dict):
        nonlocal index, open_kind
        index += 1
        open_kind = kind
        return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}

    def stop():
        nonlocal open_kind
        events = []
        if open_kind == "thinking":
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "signature_delta", "signature": ""}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        open_kind = None
        return events

    last = Delta()
    while pending is not None:
        d = pending
        if d.thinking:
            if open_kind != "thinking":
                for e in stop() if open_kind else []:
                    yield e
                yield start("thinking", {"type": "thinking", "thinking": ""})
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "thinking_delta", "thinking": d.thinking}}
        if d.content:
            if open_kind != "text":
                for e in stop() if open_kind else []:
                    yield e
                yield start("text", {"type": "text", "text": ""})
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "text_delta", "text": d.content}}
        for call in d.tool_calls:
            had_tools = True
            for e in stop() if open_kind else []:
                yield e
            yield start("tool_use", {"type": "tool_use", "id": _id("toolu_"), "name": call.name, "input": {}})
            yield "content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "input_json_delta",
                                                    "partial_json": json.dumps(call.arguments, ensure_ascii=False)}}
        last = d
        try:
            pending = await iterator.__anext__()
        except StopAsyncIteration:
            pending = None
    if index < 0:  # an empty answer is still one (empty) text block
        yield start("text", {"type": "text", "text": ""})
    for e in stop() if open_kind else []:
        yield e
    yield "message_delta", {"type": "message_delta",
                            "delta": {"stop_reason": _stop_reason(last, had_tools),
                                      "stop_sequence": last.stop_sequence or None},
                            "usage": _usage(last)}
    yield "message_stop", {"type": "message_stop"}


async def count_tokens(request: web.Request) -> web.Response:
    body = await read_json(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: field required")
    req = validated(ChatRequest, {"model": model, "messages": _conversation(body), "tools": _tools(body.get("tools")),
                                  "options": ollama_options(body) or None})
    return web.json_response({"input_tokens": await service_of(request).count_chat_tokens(req)})


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
