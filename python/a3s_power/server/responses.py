"""The OpenAI Responses API: POST /v1/responses (and GET /v1/responses/{id}).

Input items become chat messages for the inference service; the answer becomes output items
(message, function_call, reasoning). Responses are kept in memory so that a later request can
continue from one with ``previous_response_id``, as OpenAI's server-side state does.
"""

from __future__ import annotations

import json
import random
import string
import time
from collections import OrderedDict
from typing import Any, AsyncIterator

from aiohttp import web

from ..engine.service import Delta
from .app import STATE
from .errors import ApiError, read_json
from .images import fetch_remote_images, is_remote
from .native import service_of
from .openai import _EFFORT
from .streaming import sse

MAX_STORED = 1000


def _id(prefix: str) -> str:
    return prefix + "".join(random.choices(string.ascii_lowercase + string.digits, k=24))


class ResponseStore:
    """Conversations behind response ids: the messages up to and including each response."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[list[dict], dict]] = OrderedDict()

    def put(self, response_id: str, messages: list[dict], response: dict) -> None:
        self._items[response_id] = (messages, response)
        self._items.move_to_end(response_id)
        while len(self._items) > MAX_STORED:
            self._items.popitem(last=False)

    def messages(self, response_id: str) -> list[dict]:
        if response_id not in self._items:
            raise ApiError(404, f"Previous response with id '{response_id}' not found.", param="previous_response_id")
        return list(self._items[response_id][0])

    def response(self, response_id: str) -> dict:
        if response_id not in self._items:
            raise ApiError(404, f"Response with id '{response_id}' not found.")
        return self._items[response_id][1]


def _store(request: web.Request) -> ResponseStore:
    state = request.app[STATE]
    store = getattr(state, "responses", None)
    if store is None:
        store = state.responses = ResponseStore()
    return store


def _content_text(content: Any) -> tuple[str, list[str]]:
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            texts.append(part.get("text", ""))
        elif kind == "input_image":
            url = part.get("image_url") or ""
            if not (url.startswith("data:") or is_remote(url)):
                raise ApiError(400, "image_url must be a data: URL or an http(s) URL", param="input")
            images.append(url if is_remote(url) else url.split(",", 1)[-1])
        else:
            raise ApiError(400, f"unsupported input content type {kind!r}", param="input")
    return "".join(texts), images


def input_messages(raw: Any) -> list[dict]:
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise ApiError(400, "input must be a string or a list of items", param="input")
    messages: list[dict] = []
    names: dict[str, str] = {}
    for item in raw:
        if not isinstance(item, dict):
            raise ApiError(400, "input items must be objects", param="input")
        kind = item.get("type", "message")
        if kind == "message":
            text, images = _content_text(item.get("content"))
            role = item.get("role", "user")
            msg: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
            if images:
                msg["images"] = images
            messages.append(msg)
        elif kind == "function_call":
            try:
                args = json.loads(item.get("arguments") or "{}")
            except json.JSONDecodeError:
                raise ApiError(400, "function_call arguments must be JSON", param="input") from None
            names[item.get("call_id", "")] = item.get("name", "")
            call = {"id": item.get("call_id", ""), "function": {"name": item.get("name", ""), "arguments": args}}
            if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "content": output if isinstance(output, str) else json.dumps(output),
                             "tool_name": names.get(item.get("call_id", ""), ""),
                             "tool_call_id": item.get("call_id", "")})
        elif kind == "reasoning":
            continue
        else:
            raise ApiError(400, f"unsupported input item type {kind!r}", param="input")
    return messages


def _tools(raw: Any) -> list[dict] | None:
    if not raw:
        return None
    tools = []
    for t in raw:
        if not isinstance(t, dict) or t.get("type") != "function":
            raise ApiError(400, "only function tools are supported", param="tools")
        tools.append({"type": "function", "function": {"name": t.get("name", ""),
                                                       "description": t.get("description", ""),
                                                       "parameters": t.get("parameters") or {"type": "object"}}})
    return tools


def _format(text: Any) -> Any:
    fmt = (text or {}).get("format") if isinstance(text, dict) else None
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return "json"
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise ApiError(400, "text.format.schema must be an object", param="text")
        return fmt["schema"]
    raise ApiError(400, f"unsupported text.format type {fmt.get('type')!r}", param="text")


def _base(response_id: str, model: str, created: int, body: dict, status: str) -> dict:
    return {"id": response_id, "object": "response", "created_at": created, "status": status, "model": model,
            "output": [], "instructions": body.get("instructions"), "error": None, "incomplete_details": None,
            "previous_response_id": body.get("previous_response_id"), "parallel_tool_calls": True,
            "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
            "max_output_tokens": body.get("max_output_tokens"), "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [], "text": body.get("text") or {"format": {"type": "text"}},
            "reasoning": body.get("reasoning"), "metadata": body.get("metadata") or {}, "usage": None}


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    history = _store(request).messages(body["previous_response_id"]) if body.get("previous_response_id") else []
    new_messages = input_messages(body.get("input", ""))
    await fetch_remote_images(new_messages)
    messages = history + new_messages
    if body.get("instructions"):
        messages = [m for m in messages if m["role"] != "system"]
        messages.insert(0, {"role": "system", "content": body["instructions"]})
    options: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            options[key] = body[key]
    if body.get("max_output_tokens") is not None:
        options["num_predict"] = body["max_output_tokens"]
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if effort is not None and effort not in _EFFORT:
        raise ApiError(400, f"invalid reasoning effort {effort!r}", param="reasoning")
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        tool_choice = {"type": "function", "function": {"name": tool_choice.get("name", "")}}
    deltas = service_of(request).chat(model, messages, tools=_tools(body.get("tools")),
                                      think=_EFFORT.get(effort) if effort else None, format=_format(body.get("text")),
                                      options=options, tool_choice=tool_choice)
    response_id = _id("resp_")
    created = int(time.time())
    store = _store(request)
    keep = body.get("store", True) is not False

    def finish(response: dict, text: str, calls: list) -> None:
        if keep:
            reply = {"role": "assistant", "content": text}
            if calls:
                reply["tool_calls"] = [{"id": c["call_id"], "function": {"name": c["name"],
                                                                         "arguments": json.loads(c["arguments"])}}
                                       for c in calls]
            store.put(response_id, messages + [reply], response)

    if body.get("stream"):
        return await sse(request, _events(response_id, model, created, body, deltas, finish), done_marker=False)

    text, reasoning, calls = [], [], []
    last = Delta()
    async for d in deltas:
        text.append(d.content)
        reasoning.append(d.thinking)
        calls += [_call_item(c) for c in d.tool_calls]
        last = d
    response = _base(response_id, model, created, body, "completed")
    response["output"] = _output(reasoning, "".join(text), calls)
    response["usage"] = _usage(last)
    if last.done_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    finish(response, "".join(text), calls)
    return web.json_response(response)


def _call_item(call) -> dict:
    return {"type": "function_call", "id": _id("fc_"), "call_id": call.id, "name": call.name,
            "arguments": json.dumps(call.arguments, ensure_ascii=False), "status": "completed"}


def _message_item(text: str, item_id: str | None = None, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id or _id("msg_"), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _output(reasoning: list[str], text: str, calls: list[dict]) -> list[dict]:
    out = []
    if any(reasoning):
        out.append({"type": "reasoning", "id": _id("rs_"),
                    "summary": [{"type": "summary_text", "text": "".join(reasoning)}]})
    if text or not calls:
        out.append(_message_item(text))
    return out + calls


def _usage(delta: Delta) -> dict:
    p, c = delta.metrics.get("prompt_eval_count", 0), delta.metrics.get("eval_count", 0)
    return {"input_tokens": p, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": c,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": p + c}


async def _events(response_id: str, model: str, created: int, body: dict, deltas: AsyncIterator[Delta],
                  finish) -> AsyncIterator[tuple[str, dict]]:
    seq = 0

    def event(kind: str, **fields) -> tuple[str, dict]:
        nonlocal seq
        seq += 1
        return kind, {"type": kind, "sequence_number": seq - 1, **fields}

    base = _base(response_id, model, created, body, "in_progress")
    yield event("response.created", response=base)
    yield event("response.in_progress", response=base)
    message_id = _id("msg_")
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict] = []
    opened = False
    last = Delta()
    async for d in deltas:
        reasoning.append(d.thinking)
        if d.content:
            if not opened:
                opened = True
                yield event("response.output_item.added", output_index=0,
                            item=_message_item("", message_id, "in_progress") | {"content": []})
                yield event("response.content_part.added", item_id=message_id, output_index=0, content_index=0,
                            part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            text.append(d.content)
            yield event("response.output_text.delta", item_id=message_id, output_index=0, content_index=0,
                        delta=d.content, logprobs=[])
        calls += [_call_item(c) for c in d.tool_calls]
        last = d
    full = "".join(text)
    index = 0
    if opened:
        yield event("response.output_text.done", item_id=message_id, output_index=0, content_index=0, text=full,
                    logprobs=[])
        yield event("response.content_part.done", item_id=message_id, output_index=0, content_index=0,
                    part={"type": "output_text", "text": full, "annotations": [], "logprobs": []})
        yield event("response.output_item.done", output_index=0, item=_message_item(full, message_id))
        index = 1
    for call in calls:
        yield event("response.output_item.added", output_index=index, item=call | {"status": "in_progress"})
        yield event("response.function_call_arguments.delta", item_id=call["id"], output_index=index,
                    delta=call["arguments"])
        yield event("response.function_call_arguments.done", item_id=call["id"], output_index=index,
                    arguments=call["arguments"], name=call["name"])
        yield event("response.output_item.done", output_index=index, item=call)
        index += 1
    response = _base(response_id, model, created, body, "completed")
    output = _output(reasoning, full, calls)
    if opened:
        output = [o if o["type"] != "message" else _message_item(full, message_id) for o in output]
    response["output"] = output
    response["usage"] = _usage(last)
    finish(response, full, calls)
    if last.done_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
        yield event("response.incomplete", response=response)
    else:
        yield event("response.completed", response=response)


async def retrieve(request: web.Request) -> web.Response:
    return web.json_response(_store(request).response(request.match_info["response_id"]))


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/responses", create)
    app.router.add_get("/v1/responses/{response_id}", retrieve)
