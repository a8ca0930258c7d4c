"""Ollama's data model: what Ollama passes to a model's template (``.Messages``, ``.Tools``,
``.System``, ``.Think``, ...), built from OpenAI/Ollama-style request dicts by :func:`template_data`."""

from __future__ import annotations

import json
from typing import Any

from ..chat_template import TemplateError
from .values import PropertyType, TemplateList, TemplateRecord


def _record(value: Any) -> Any:
    """Nested dicts become records, so ``.Function.Parameters.Properties`` and ``json`` both work."""
    if isinstance(value, dict):
        return TemplateRecord({k: _record(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return [_record(v) for v in value]
    return value


def _tool_record(tool: Any) -> Any:
    """A request's tool as Ollama's ``api.Tool`` decodes it: property types become lists."""
    record = _record(tool)

    def fix(properties: Any) -> None:
        if not isinstance(properties, dict):
            return
        for prop in properties.values():
            if not isinstance(prop, dict):
                continue
            kind = prop.get("type")
            if isinstance(kind, str):
                prop["type"] = PropertyType([kind])
            elif isinstance(kind, list) and all(isinstance(k, str) for k in kind):
                prop["type"] = PropertyType(kind)
            fix(prop.get("properties"))
            for variant in prop.get("anyOf") or []:
                if isinstance(variant, dict):
                    fix({"": variant})

    function = record.get("function") if isinstance(record, dict) else None
    if isinstance(function, dict) and isinstance(function.get("parameters"), dict):
        fix(function["parameters"].get("properties"))
    return record


def _arguments(raw: Any) -> dict[str, Any]:
    # OpenAI sends arguments as a JSON string, Ollama as an object; templates want the object.
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _text_content(content: Any) -> str:
    # OpenAI content parts: keep the text ones, in order.
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p["text"] for p in content
                       if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str))
    return str(content)


_MESSAGE_ZERO = {"role": "", "content": "", "thinking": "", "tool_calls": [], "tool_name": "",
                 "tool_call_id": "", "images": []}


def _check_message(message: Any) -> None:
    """Fields a request may send in any shape: wrong ones are the client's error (as when Ollama
    decodes the request), not a crash halfway through building the template's data."""
    if not isinstance(message, dict):
        raise TemplateError("invalid message: each message must be an object")
    if message.get("thinking") and not isinstance(message["thinking"], str):
        raise TemplateError("invalid message: thinking must be a string")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("function") or {}, dict) for c in calls):
        raise TemplateError("invalid message: tool_calls must be a list of objects with a function object")
    if message.get("images") and not isinstance(message["images"], list):
        raise TemplateError("invalid message: images must be a list")


def _message_record(message: dict[str, Any]) -> TemplateRecord:
    _check_message(message)
    data: dict[str, Any] = {"role": str(message.get("role", "")).lower(),
                            "content": _text_content(message.get("content"))}
    if message.get("thinking"):
        data["thinking"] = message["thinking"]
    calls = []
    for call in message.get("tool_calls") or []:
        function = dict(call.get("function") or {})
        function["arguments"] = _arguments(function.get("arguments"))
        record = {k: v for k, v in call.items() if k != "function"}
        record["function"] = function
        calls.append(_record(record))
    if calls:
        data["tool_calls"] = calls
    tool_name = message.get("tool_name") or (message.get("name") if data["role"] == "tool" else None)
    if tool_name:
        data["tool_name"] = tool_name
    if message.get("tool_call_id"):
        data["tool_call_id"] = message["tool_call_id"]
    if message.get("images"):
        data["images"] = list(message["images"])
    return TemplateRecord(data, zero=_MESSAGE_ZERO)


def _collate(messages: list[dict[str, Any]]) -> tuple[str, list[TemplateRecord]]:
    """Ollama's collate: system messages are also joined into ``.System``, and consecutive
    messages of one role (tool results excepted) are merged into one."""
    system: list[str] = []
    collated: list[TemplateRecord] = []
    for message in messages:
        record = _message_record(message)
        if record["role"] == "system":
            system.append(record["content"])
        previous = collated[-1] if collated else None
        if previous is not None and previous["role"] == record["role"] and record["role"] != "tool":
            previous["content"] += "\n\n" + record["content"]
            # Ollama keeps only the content; keeping calls and images loses nothing a template could use.
            for key in ("tool_calls", "images"):
                if record.get(key):
                    previous[key] = list(previous.get(key) or []) + record[key]
            if record.get("thinking"):
                previous["thinking"] = "\n\n".join(t for t in (previous.get("thinking"), record["thinking"]) if t)
        else:
            collated.append(record)
    return "\n\n".join(system), collated


def template_data(
    messages: list[dict[str, Any]],
    *,
    system: str = "",
    prompt: str = "",
    response: str = "",
    suffix: str = "",
    tools: list[dict[str, Any]] | None = None,
    think: bool | None = None,
    think_level: str = "",
) -> dict[str, Any]:
    """What Ollama passes to a model's Go template, built from OpenAI/Ollama-style dicts.

    ``.System`` is ``system`` when given, else the request's system messages joined by a blank
    line (which stay in ``.Messages`` too, as in Ollama). ``think`` None means "not set":
    ``.Think`` is then false and ``.IsThinkSet`` false; a ``think_level`` implies thinking on.
    """
    joined_system, collated = _collate(messages)
    think_on = bool(think) if think is not None else bool(think_level)
    return {
        "System": system or joined_system,
        "Prompt": prompt,
        "Response": response,
        "Suffix": suffix,
        "Messages": collated,
        "Tools": TemplateList(_tool_record(t) for t in tools or []),
        "Think": think_on,
        "ThinkLevel": think_level,
        "IsThinkSet": think is not None or bool(think_level),
    }
