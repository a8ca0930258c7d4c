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
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..api import ChatRequest, Delta, ToolCall
from .errors import ApiError, json_too_deep, read_json, validated
from .images import fetch_images_for_model, is_remote
from .openai import EFFORT_TO_THINK, ollama_options
from .state import STATE, service_of
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


_JSON_TYPES = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
               (list, "an array"), (dict, "an object"))


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for t, name in _JSON_TYPES if isinstance(value, t)), type(value).__name__)


def _invalid_type(param: str, expected: str, value: Any) -> ApiError:
    return ApiError(400, f"Invalid type for '{param}': expected {expected}, but got {_kind_of(value)} instead.",
                    param=param)


def _missing(param: str) -> ApiError:
    return ApiError(400, f"Missing required parameter: '{param}'.", param=param)


def _string(item: dict, key: str, param: str, *, required: bool = True) -> str:
    if key not in item or item[key] is None:
        if required:
            raise _missing(f"{param}.{key}")
        return ""
    if not isinstance(item[key], str):
        raise _invalid_type(f"{param}.{key}", "a string", item[key])
    return item[key]


_TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}


def _content_text(content: Any, param: str) -> tuple[str, list[str]]:
    """A message's text and images from its content: a string or a list of content parts, each
    checked for its type's fields; ``param`` names the content (``input[0].content``) in errors."""
    if isinstance(content, str):
        return content, []
    if content is None:
        raise _missing(param)
    if not isinstance(content, list):
        raise _invalid_type(param, "a string or an array of content parts", content)
    texts, images = [], []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _invalid_type(where, "an object", part)
        kind = part.get("type")
        if not isinstance(kind, str):
            raise _missing(f"{where}.type") if kind is None else _invalid_type(f"{where}.type", "a string", kind)
        if kind in _TEXT_PARTS:
            texts.append(_string(part, _TEXT_PARTS[kind], where))
        elif kind == "input_image":
            url = _string(part, "image_url", where, required=False)
            if not url:
                if part.get("file_id") is not None:
                    raise ApiError(400, "input_image with a file_id is not supported: give an image_url",
                                   param=f"{where}.file_id")
                raise _missing(f"{where}.image_url")
            if not (url.startswith("data:") or is_remote(url)):
                raise ApiError(400, "image_url must be a data: URL or an http(s) URL", param=f"{where}.image_url")
            images.append(url if is_remote(url) else url.split(",", 1)[-1])
        elif kind == "input_file":
            raise ApiError(400, "input_file content is not supported", param=f"{where}.type")
        else:
            raise ApiError(400, f"Invalid value for '{where}.type': unsupported content type {kind!r}.",
                           param=f"{where}.type")
    return "".join(texts), images


_ROLES = ("user", "assistant", "system", "developer")


def _arguments(text: str, param: str) -> dict:
    """A function call's arguments: JSON text of an object, nested no deeper than a request body."""
    bad = ApiError(400, f"Invalid value for '{param}': expected the JSON text of an object.", param=param)
    if json_too_deep(text.encode("utf-8", "surrogatepass")):
        raise bad
    try:
        args = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise bad from None
    if not isinstance(args, dict):
        raise bad
    return args


def input_messages(raw: Any) -> list[dict]:
    """Chat messages from a request's ``input``; every item and content part is checked, and a
    malformed one is a 400 whose ``param`` names it (``input[0].content``)."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise _invalid_type("input", "a string or an array of input items", raw)
    messages: list[dict] = []
    names: dict[str, str] = {}
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _invalid_type(where, "an object", item)
        kind = item.get("type", "message")
        if not isinstance(kind, str):
            raise _invalid_type(f"{where}.type", "a string", kind)
        if kind == "message":
            role = item.get("role", "user")
            if role not in _ROLES:
                if not isinstance(role, str):
                    raise _invalid_type(f"{where}.role", "a string", role)
                raise ApiError(400, f"Invalid value for '{where}.role': {role!r}; supported values are "
                                    + ", ".join(repr(r) for r in _ROLES) + ".", param=f"{where}.role")
            text, images = _content_text(item.get("content"), f"{where}.content")
            msg: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
            if images:
                msg["images"] = images
            messages.append(msg)
        elif kind == "function_call":
            call_id = _string(item, "call_id", where)
            name = _string(item, "name", where)
            arguments = _string(item, "arguments", where, required=False) or "{}"
            args = _arguments(arguments, f"{where}.arguments")
            names[call_id] = name
            call = {"id": call_id, "function": {"name": name, "arguments": args}}
            if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = _string(item, "call_id", where)
            output = item.get("output")
            if output is None:
                raise _missing(f"{where}.output")
            if isinstance(output, list):
                text, images = _content_text(output, f"{where}.output")
            elif isinstance(output, str):
                text, images = output, []
            else:
                raise _invalid_type(f"{where}.output", "a string or an array of content parts", output)
            tool: dict[str, Any] = {"role": "tool", "content": text, "tool_name": names.get(call_id, ""),
                                    "tool_call_id": call_id}
            if images:
                tool["images"] = images
            messages.append(tool)
        elif kind == "reasoning":
            continue
        else:
            raise ApiError(400, f"Invalid value for '{where}.type': unsupported input item type {kind!r}.",
                           param=f"{where}.type")
    return messages


def _tools(raw: Any) -> list[dict] | None:
    if not raw:
        return None
    if not isinstance(raw, list):
        raise _invalid_type("tools", "an array of tools", raw)
    tools = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise _invalid_type(f"tools[{i}]", "an object", t)
        if t.get("type") != "function":
            raise ApiError(400, "only function tools are supported", param=f"tools[{i}].type")
        parameters = t.get("parameters") or {"type": "object"}
        if not isinstance(parameters, dict):
            raise _invalid_type(f"tools[{i}].parameters", "an object", parameters)
        tools.append({"type": "function", "function": {"name": _string(t, "name", f"tools[{i}]"),
                                                       "description": _string(t, "description", f"tools[{i}]",
                                                                              required=False),
                                                       "parameters": parameters}})
    return tools


def _format(text: Any) -> Any:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _invalid_type("text", "an object", text)
    fmt = text.get("format")
    if not fmt:
        return None
    if not isinstance(fmt, dict):
        raise _invalid_type("text.format", "an object", fmt)
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        if not isinstance(fmt.get("schema"), dict):
            raise ApiError(400, "text.format.schema must be an object", param="text.format.schema")
        return fmt["schema"]
    raise ApiError(400, f"unsupported text.format type {kind!r}", param="text.format.type")


def _effort(reasoning: Any) -> str | None:
    if reasoning is None:
        return None
    if not isinstance(reasoning, dict):
        raise _invalid_type("reasoning", "an object", reasoning)
    effort = reasoning.get("effort")
    if effort is not None and (not isinstance(effort, str) or effort not in EFFORT_TO_THINK):
        raise ApiError(400, f"invalid reasoning effort {effort!r}", param="reasoning.effort")
    return effort


def _tool_choice(raw: Any) -> Any:
    if raw is None or isinstance(raw, str):
        return raw
    if not isinstance(raw, dict):
        raise _invalid_type("tool_choice", "a string or an object", raw)
    if raw.get("type") == "function":
        return {"type": "function", "function": {"name": _string(raw, "name", "tool_choice")}}
    return raw


def _number(body: dict, key: str, kind: type | tuple[type, ...], expected: str) -> Any:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise _invalid_type(key, expected, value)
    return value


def _base(response_id: str, model: str, created: int, body: dict, status: str) -> dict:
    return {"id": response_id, "object": "response", "created_at": created, "status": status, "model": model,
            "output": [], "instructions": body.get("instructions"), "error": None, "incomplete_details": None,
            "previous_response_id": body.get("previous_response_id"), "parallel_tool_calls": True,
            "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
            "max_output_tokens": body.get("max_output_tokens"), "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [], "text": body.get("text") or {"format": {"type": "text"}},
            "reasoning": body.get("reasoning"), "metadata": body.get("metadata") or {}, "usage": None}


def response_request(body: dict, model: str, history: list[dict]) -> ChatRequest:
    """/v1/responses' body as a chat request, continuing ``history`` (previous_response_id's)."""
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _invalid_type("instructions", "a string", instructions)
    new_messages = input_messages(body.get("input", ""))
    options = ollama_options(body, {"temperature": 1.0, "top_p": 1.0})
    for key in ("temperature", "top_p"):
        if _number(body, key, (int, float), "a number") is not None:
            options[key] = body[key]
    if _number(body, "max_output_tokens", int, "an integer") is not None:
        options["num_predict"] = body["max_output_tokens"]
    effort = _effort(body.get("reasoning"))
    tools, tool_choice = _tools(body.get("tools")), _tool_choice(body.get("tool_choice"))
    fmt = _format(body.get("text"))
    messages = history + new_messages
    if instructions:
        messages = [m for m in messages if m["role"] != "system"]
        messages.insert(0, {"role": "system", "content": instructions})
    return validated(ChatRequest, {"model": model, "messages": messages, "tools": tools,
                                   "think": EFFORT_TO_THINK.get(effort) if effort else None, "format": fmt,
                                   "options": options, "tool_choice": tool_choice})


def _reply(text: str, calls: list[dict]) -> dict:
    """The assistant's turn as a later request's history holds it."""
    reply: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        reply["tool_calls"] = [{"id": c["call_id"], "function": {"name": c["name"],
                                                                 "arguments": json.loads(c["arguments"])}}
                               for c in calls]
    return reply


def _request(request: web.Request, body: dict) -> ChatRequest:
    """The body as a chat request, continuing the response it names, if any."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise _invalid_type("previous_response_id", "a string", previous)
    return response_request(body, model, _store(request).messages(previous) if previous else [])


async def input_tokens(request: web.Request) -> web.Response:
    """What a response's prompt would take (instructions, the conversation it continues, input
    and tools), without running it: OpenAI's POST /v1/responses/input_tokens."""
    req = _request(request, await read_json(request))
    return web.json_response({"object": "response.input_tokens",
                              "input_tokens": await service_of(request).count_chat_tokens(req)})


async def create(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    req = _request(request, body)
    model = req.model
    store = _store(request)
    await fetch_images_for_model(request, model, req.messages)
    deltas = service_of(request).chat(req)
    response_id = _id("resp_")
    created = int(time.time())
    keep = body.get("store", True) is not False

    def finish(response: dict, text: str, calls: list) -> None:
        if keep:
            history = [m.model_dump(mode="json", exclude_unset=True, exclude_none=True) for m in req.messages]
            store.put(response_id, history + [_reply(text, calls)], response)

    if body.get("stream"):
        return await sse(request, _events(response_id, model, created, body, deltas, finish), done_marker=False)

    d = Delta.merge([d async for d in deltas])
    calls = [_call_item(c) for c in d.tool_calls]
    response = _base(response_id, model, created, body, "completed")
    response["output"] = _output(d.thinking, d.content, calls)
    response["usage"] = _usage(d)
    if d.done_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    finish(response, d.content, calls)
    return web.json_response(response)


def _call_item(call: ToolCall) -> dict:
    return {"type": "function_call", "id": _id("fc_"), "call_id": call.id, "name": call.name,
            "arguments": json.dumps(call.arguments, ensure_ascii=False), "status": "completed"}


def _message_item(text: str, item_id: str | None = None, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id or _id("msg_"), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _output(reasoning: str, text: str, calls: list[dict]) -> list[dict]:
    out = []
    if reasoning:
        out.append({"type": "reasoning", "id": _id("rs_"),
                    "summary": [{"type": "summary_text", "text": reasoning}]})
    if text or not calls:
        out.append(_message_item(text))
    return out + calls


def _usage(delta: Delta) -> dict:
    p, c = delta.metrics.prompt_eval_count, delta.metrics.eval_count
    return {"input_tokens": p, "input_tokens_details": {"cached_tokens": delta.metrics.prompt_eval_cached_count},
            "output_tokens": c,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": p + c}


async def _events(response_id: str, model: str, created: int, body: dict, deltas: AsyncIterator[Delta],
                  finish) -> AsyncIterator[tuple[str, dict]]:
    seq = 0

    def event(kind: str, **fields) -> tuple[str, dict]:
        nonlocal seq
        seq += 1
        return kind, {"type": kind, "sequence_number": seq - 1, **fields}

    # The model is resolved, loaded and the prompt evaluated before the first event: whatever fails
    # there (an unknown model, a prompt too long) is an HTTP error status, not an event in a 200 stream.
    iterator = deltas.__aiter__()
    try:
        pending: Delta | None = await iterator.__anext__()
    except StopAsyncIteration:
        pending = None
    base = _base(response_id, model, created, body, "in_progress")
    yield event("response.created", response=base)
    yield event("response.in_progress", response=base)
    message_id = _id("msg_")
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict] = []
    opened = False
    last = Delta()
    while pending is not None:
        d = pending
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
        try:
            pending = await iterator.__anext__()
        except StopAsyncIteration:
            pending = None
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
    output = _output("".join(reasoning), full, calls)
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
    app.router.add_post("/v1/responses/input_tokens", input_tokens)
    app.router.add_get("/v1/responses/{response_id}", retrieve)
