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
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ..api import ChatRequest, Delta, EmbedRequest, GenerateRequest, Logprob, ToolCall
from ..store.types import ModelNotFound
from .errors import ApiError, read_json, validated
from .images import fetch_images_for_model, is_remote
from .state import service_of, state_of
from .streaming import sse

# OpenAI's reasoning_effort as Ollama's think.
EFFORT_TO_THINK = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high", "max": "max",
           "xhigh": "max", "ultra": "max"}


def ollama_options(body: dict, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ollama's ``options`` object, taken as an extra body field on the OpenAI, Responses and
    Anthropic routes (``num_ctx`` and the rest, ollama/ollama #5356), over ``defaults``; the
    API's own fields, set after, win over it."""
    options = dict(defaults or {})
    extra = body.get("options")
    if extra is not None:
        if not isinstance(extra, dict):
            raise ApiError(400, "options must be an object of Ollama's model options", param="options")
        options.update(extra)
    return options


def _options(body: dict) -> dict[str, Any]:
    options = ollama_options(body, {"temperature": 1.0, "top_p": 1.0})
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
    if effort not in EFFORT_TO_THINK:
        raise ApiError(400, f"invalid reasoning value: '{effort}' (must be \"minimal\", \"low\", \"medium\", "
                            f"\"high\", \"max\", or \"none\")", param="reasoning_effort")
    return EFFORT_TO_THINK[effort]


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


def _model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", param="model")
    return model


def _logit_bias(body: dict) -> dict[int, float] | None:
    bias = body.get("logit_bias")
    if not bias:
        return None
    try:
        return {int(k): float(v) for k, v in bias.items()}
    except (TypeError, ValueError, AttributeError):
        raise ApiError(400, "logit_bias must map token ids to numbers", param="logit_bias") from None


def chat_request(body: dict) -> ChatRequest:
    """/v1/chat/completions' body as a chat request (images still as URLs where given so)."""
    model = _model(body)
    messages, _ = _messages(body.get("messages"))
    return validated(ChatRequest, {
        "model": model, "messages": messages, "tools": body.get("tools") or None, "think": _think(body),
        "format": _format(body), "options": _options(body), "logprobs": bool(body.get("logprobs")),
        "top_logprobs": body.get("top_logprobs") or 0, "tool_choice": body.get("tool_choice"),
        "logit_bias": _logit_bias(body)})


def completion_request(body: dict) -> tuple[GenerateRequest, int | None]:
    """/v1/completions' body as a generate request, and how many alternatives its logprobs ask for."""
    model = _model(body)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string", param="prompt")
    logprobs_n = body.get("logprobs")
    if logprobs_n is not None and (not isinstance(logprobs_n, int) or isinstance(logprobs_n, bool)):
        raise ApiError(400, "logprobs must be an integer", param="logprobs")
    return validated(GenerateRequest, {
        "model": model, "prompt": prompt, "suffix": body.get("suffix") or "", "options": _options(body),
        "logprobs": logprobs_n is not None, "top_logprobs": logprobs_n or 0,
        "logit_bias": _logit_bias(body)}), logprobs_n


def embed_request(body: dict) -> tuple[EmbedRequest, str]:
    """/v1/embeddings' body as an embed request, and the encoding its answer takes."""
    model = _model(body)
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
    return validated(EmbedRequest, {"model": model, "input": inputs, "dimensions": body.get("dimensions"),
                                    "options": ollama_options(body) or None}), encoding


# --- to the wire -----------------------------------------------------------------------------

def _openai_tool_calls(calls: list[ToolCall], start: int = 0) -> list[dict]:
    return [{"index": start + i, "id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for i, c in enumerate(calls)]


def _logprobs(entries: list[Logprob]) -> dict | None:
    if not entries:
        return None
    return {"content": [e.model_dump() for e in entries]}


def _finish(reason: str, had_calls: bool) -> str:
    if had_calls:
        return "tool_calls"
    return "length" if reason == "length" else "stop"


def _usage(delta: Delta) -> dict:
    p, c = delta.metrics.prompt_eval_count, delta.metrics.eval_count
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": delta.metrics.prompt_eval_cached_count}}


class ChatCompletion:
    """One chat completion's wire objects: its chunks while streaming, or the whole answer."""

    def __init__(self, model: str, include_usage: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{random.randint(0, 998)}"
        self.created = int(time.time())
        self.n_calls = 0
        self.first = True

    def _chunk(self, delta: dict, finish: str | None = None, lp: dict | None = None) -> dict:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        if lp:
            choice["logprobs"] = lp
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": "fp_ollama", "choices": [choice]}

    def chunks(self, d: Delta) -> list[dict]:
        """The chunks one delta becomes: its reasoning, its content and calls, the end."""
        out = []
        lp = _logprobs(d.logprobs)
        if d.thinking:
            out.append(self._chunk({"role": "assistant", "content": "", "reasoning": d.thinking} if self.first
                                   else {"reasoning": d.thinking}))
            self.first = False
        if d.content or d.tool_calls or lp or self.first:
            delta: dict[str, Any] = {"role": "assistant", "content": d.content} if self.first else \
                {"content": d.content}
            if d.tool_calls:
                delta["tool_calls"] = _openai_tool_calls(d.tool_calls, self.n_calls)
                self.n_calls += len(d.tool_calls)
            out.append(self._chunk(delta, lp=lp))
            self.first = False
        if d.done:
            out.append(self._chunk({}, _finish(d.done_reason, self.n_calls > 0)))
            if self.include_usage:
                out.append({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "system_fingerprint": "fp_ollama", "choices": [],
                            "usage": _usage(d)})
        return out

    def whole(self, d: Delta, with_logprobs: bool) -> dict:
        """The answer of ``stream: false``, from the merged delta."""
        message: dict[str, Any] = {"role": "assistant", "content": d.content}
        if d.thinking:
            message["reasoning"] = d.thinking
        if d.tool_calls:
            message["tool_calls"] = _openai_tool_calls(d.tool_calls)
        choice: dict[str, Any] = {"index": 0, "message": message,
                                  "finish_reason": _finish(d.done_reason, bool(d.tool_calls))}
        if with_logprobs:
            choice["logprobs"] = _logprobs(d.logprobs)
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "system_fingerprint": "fp_ollama", "choices": [choice], "usage": _usage(d)}


class TextCompletion:
    """One legacy completion's wire objects."""

    def __init__(self, model: str, logprobs_n: int | None, include_usage: bool = False) -> None:
        self.model = model
        self.logprobs_n = logprobs_n
        self.include_usage = include_usage
        self.id = f"cmpl-{random.randint(0, 998)}"
        self.created = int(time.time())

    def _logprobs(self, entries: list[Logprob]) -> dict | None:
        if self.logprobs_n is None:
            return None
        return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
                "top_logprobs": [{t.token: t.logprob for t in e.top_logprobs} for e in entries],
                "text_offset": []}

    def payload(self, text: str, finish: str | None, lp: list[Logprob]) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"text": text, "index": 0, "logprobs": self._logprobs(lp), "finish_reason": finish}]}

    def chunks(self, d: Delta) -> list[dict]:
        out = []
        if d.content or d.logprobs:
            out.append(self.payload(d.content, None, d.logprobs))
        if d.done:
            out.append(self.payload("", _finish(d.done_reason, False), []))
            if self.include_usage:
                out.append({"id": self.id, "object": "text_completion", "created": self.created,
                            "model": self.model, "choices": [], "usage": _usage(d)})
        return out

    def whole(self, d: Delta) -> dict:
        result = self.payload(d.content, _finish(d.done_reason, False), d.logprobs)
        result["usage"] = _usage(d)
        return result


def _include_usage(body: dict) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


async def _events(deltas: AsyncIterator[Delta], completion: ChatCompletion | TextCompletion
                  ) -> AsyncIterator[tuple[None, dict]]:
    async for d in deltas:
        for chunk in completion.chunks(d):
            yield None, chunk


# --- handlers --------------------------------------------------------------------------------

async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    req = chat_request(body)
    await fetch_images_for_model(request, req.model, req.messages)
    deltas = service_of(request).chat(req)
    completion = ChatCompletion(req.model, _include_usage(body))
    if body.get("stream", False):
        return await sse(request, _events(deltas, completion))
    return web.json_response(completion.whole(Delta.merge([d async for d in deltas]), req.logprobs))


async def completions(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    req, logprobs_n = completion_request(body)
    deltas = service_of(request).generate(req)
    completion = TextCompletion(req.model, logprobs_n, _include_usage(body))
    if body.get("stream", False):
        return await sse(request, _events(deltas, completion))
    return web.json_response(completion.whole(Delta.merge([d async for d in deltas])))


async def chat_input_tokens(request: web.Request) -> web.Response:
    """What a chat completion's prompt would take, without running it (llama-server's route;
    its answer is the Responses API's input_tokens object)."""
    req = chat_request(await read_json(request))
    return web.json_response({"object": "response.input_tokens",
                              "input_tokens": await service_of(request).count_chat_tokens(req)})


async def embeddings(request: web.Request) -> web.Response:
    req, encoding = embed_request(await read_json(request))
    result = await service_of(request).embed(req)
    data = []
    for i, vector in enumerate(result.embeddings):
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "embedding": value, "index": i})
    return web.json_response({"object": "list", "data": data, "model": req.model,
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
    app.router.add_post("/v1/chat/completions/input_tokens", chat_input_tokens)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", retrieve_model)
