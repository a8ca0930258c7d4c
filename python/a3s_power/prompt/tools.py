"""Tool calls out of a model's streamed text.

Models write tool calls in their family's own syntax, which the chat template gives away:

- ``hermes`` (Qwen, Hermes): ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, repeatable;
- ``mistral``: ``[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]``, or the newer
  ``[TOOL_CALLS]name[ARGS]{...}``;
- ``llama3``: ``<|python_tag|>{"name": ..., "parameters": {...}}`` or the same JSON bare;
- ``json``: a bare JSON object, or a list of them.

In every format a call may also come as bare JSON at the very start of the answer (or right after
another call), since small models often drop the markers. :class:`ToolCallParser` streams: text
that cannot be part of a call is released at once, text that might be waits until it is clear,
and whatever turns out not to be a call (bad JSON, a wrong shape, an unknown tool) is content.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ToolCall", "ToolCallParser", "tool_format_for", "TOOL_FORMATS", "new_call_id"]

TOOL_FORMATS = ("hermes", "mistral", "llama3", "json")

_OPENING = {"hermes": "<tool_call>", "mistral": "[TOOL_CALLS]", "llama3": "<|python_tag|>", "json": ""}
_HERMES_CLOSE = "</tool_call>"
_MISTRAL_ARGS = "[ARGS]"
_MISTRAL_CALL_ID = "[CALL_ID]"
_MAX_NAME = 128  # a mistral function name longer than this is not a name


def new_call_id() -> str:
    """Ollama's tool call id: ``call_`` and 8 random lower-case letters and digits."""
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)

    def to_ollama(self, index: int = 0) -> dict[str, Any]:
        """As Ollama's API writes it: arguments stay an object."""
        return {"id": self.id, "function": {"index": index, "name": self.name, "arguments": self.arguments}}


def tool_format_for(template_source: str | None) -> str:
    """Which syntax a model's tool calls will use, judged from its chat template (Jinja or Go)."""
    source = template_source or ""
    if "<tool_call>" in source:
        return "hermes"
    if "[TOOL_CALLS]" in source:
        return "mistral"
    if "<|python_tag|>" in source or "<|start_header_id|>" in source:
        return "llama3"
    return "json"


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class _JsonExtent:
    """Finds where a JSON object or array that starts at the first character fed ends."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def feed(self, ch: str) -> bool:
        """True once ``ch`` closed the outermost bracket."""
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif ch == "\\":
                self.escaped = True
            elif ch == '"':
                self.in_string = False
        elif ch == '"':
            self.in_string = True
        elif ch in "{[":
            self.depth += 1
        elif ch in "}]":
            self.depth -= 1
            return self.depth == 0
        return False


class ToolCallParser:
    """Splits a stream of model text into content and tool calls.

    ``feed`` returns the content that is safe to show now and the calls completed by this
    chunk; ``finish`` flushes what is left at the end of the answer."""

    def __init__(self, fmt: str, tool_names: set[str] | None = None) -> None:
        if fmt not in TOOL_FORMATS:
            raise ValueError(f"unknown tool call format {fmt!r}; expected one of {', '.join(TOOL_FORMATS)}")
        self.fmt = fmt
        self.tool_names = set(tool_names) if tool_names is not None else None
        self.opening = _OPENING[fmt]
        self.buffer = ""  # received, not yet classified
        self.raw = ""  # the text of the call being read: content again if it is not a call
        self.mode = "start"  # start | between | content | marker | hermes | name | json
        self.extent: _JsonExtent | None = None
        self.function_name = ""  # mistral's name[ARGS]{...} form
        self.json_start = 0  # where the JSON begins in ``raw``

    # --- public

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        self.buffer += text
        content: list[str] = []
        calls: list[ToolCall] = []
        while self._step(content, calls):
            pass
        return "".join(content), calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        content: list[str] = []
        calls: list[ToolCall] = []
        if self.mode == "hermes":
            # A complete call whose closing tag never came is still a call.
            found = self._calls_in(self.buffer.strip())
            if found is not None:
                calls += found
            else:
                content.append(self.raw + self.buffer)
        elif self.mode in ("marker", "name", "json"):
            content.append(self.raw + self.buffer)
        elif self.mode != "between" or self.buffer.strip(" \t\r\n;"):
            content.append(self.buffer)
        self.buffer, self.raw, self.mode = "", "", "content"
        return "".join(content), calls

    # --- the state machine: each step consumes input and says whether it made progress

    def _step(self, content: list[str], calls: list[ToolCall]) -> bool:
        if not self.buffer:
            return False
        return getattr(self, f"_step_{self.mode}")(content, calls)

    def _step_start(self, content: list[str], calls: list[ToolCall]) -> bool:
        """Where a call may begin: the start of the answer, or right after a call."""
        skippable = " \t\r\n;" if self.mode == "between" else " \t\r\n"
        i = 0
        while i < len(self.buffer) and self.buffer[i] in skippable:
            i += 1
        rest = self.buffer[i:]
        if not rest:
            return False
        if self.opening and rest.startswith(self.opening):
            self._begin_call("marker", rest[len(self.opening):], raw=self.buffer[:i] + self.opening)
            return True
        if self.opening and self.opening.startswith(rest):
            return False  # could still become the opening marker
        if rest[0] in "{[":
            self._begin_call("json", rest, raw=self.buffer[:i])
            return True
        if self.mode == "between":
            self.buffer = rest  # separators between a call and what follows are not content
        self.mode = "content"
        return True

    _step_between = _step_start

    def _step_content(self, content: list[str], calls: list[ToolCall]) -> bool:
        if not self.opening:
            content.append(self.buffer)
            self.buffer = ""
            return False
        at = self.buffer.find(self.opening)
        if at >= 0:
            content.append(self.buffer[:at])
            self._begin_call("marker", self.buffer[at + len(self.opening):], raw=self.opening)
            return True
        keep = _partial_suffix(self.buffer, self.opening)
        content.append(self.buffer[:len(self.buffer) - keep])
        self.buffer = self.buffer[len(self.buffer) - keep:]
        return False

    def _step_marker(self, content: list[str], calls: list[ToolCall]) -> bool:
        """Just after an opening marker: skip blanks, then see what kind of call follows."""
        stripped = self.buffer.lstrip()
        self.raw += self.buffer[:len(self.buffer) - len(stripped)]
        self.buffer = stripped
        if not stripped:
            return False
        if self.fmt == "hermes":
            self.mode = "hermes"
        elif stripped[0] in "{[":
            self.mode, self.extent = "json", None
        elif self.fmt == "mistral":
            self.mode = "name"
        else:
            self._not_a_call(content)
        return True

    def _step_hermes(self, content: list[str], calls: list[ToolCall]) -> bool:
        at = self.buffer.find(_HERMES_CLOSE)
        if at < 0:
            return False
        body = self.buffer[:at]
        self.raw += self.buffer[:at + len(_HERMES_CLOSE)]
        self.buffer = self.buffer[at + len(_HERMES_CLOSE):]
        self._finish_call(self._calls_in(body.strip()), content, calls)
        return True

    def _step_name(self, content: list[str], calls: list[ToolCall]) -> bool:
        at = self.buffer.find(_MISTRAL_ARGS)
        if at < 0:
            if len(self.buffer) > _MAX_NAME + 64 or any(c.isspace() for c in self.buffer.split("[", 1)[0]):
                self._not_a_call(content)
                return True
            return False
        name = self.buffer[:at].split(_MISTRAL_CALL_ID, 1)[0].strip()
        self.raw += self.buffer[:at + len(_MISTRAL_ARGS)]
        self.buffer = self.buffer[at + len(_MISTRAL_ARGS):]  # blanks before the JSON are _step_json's to keep
        if not name or len(name) > _MAX_NAME:
            self._not_a_call(content)
            return True
        self.function_name, self.mode, self.extent = name, "json", None
        return True

    def _step_json(self, content: list[str], calls: list[ToolCall]) -> bool:
        if self.extent is None:
            # Blanks may come before the JSON (mistral's "[ARGS] {"), in this chunk or the next:
            # they are the call's text, and content again if it is not one.
            stripped = self.buffer.lstrip()
            self.raw += self.buffer[:len(self.buffer) - len(stripped)]
            self.buffer = stripped
            if not stripped:
                return False
            if self.buffer[0] not in "{[":
                self._not_a_call(content)
                return True
            self.extent = _JsonExtent()
            self.json_start = len(self.raw)
        for i, ch in enumerate(self.buffer):
            if self.extent.feed(ch):
                self.raw += self.buffer[:i + 1]
                self.buffer = self.buffer[i + 1:]
                text = self.raw[self.json_start:]
                if self.function_name:
                    found = self._named_call(self.function_name, text)
                    self.function_name = ""
                else:
                    found = self._calls_in(text)
                self._finish_call(found, content, calls)
                return True
        self.raw += self.buffer
        self.buffer = ""
        return False

    # --- helpers

    def _begin_call(self, mode: str, rest: str, raw: str) -> None:
        self.mode, self.raw, self.buffer, self.extent = mode, raw, rest, None

    def _not_a_call(self, content: list[str]) -> None:
        """What looked like a call is not one: its text is content, and so is what follows."""
        content.append(self.raw)
        self.raw, self.mode, self.function_name = "", "content", ""

    def _finish_call(self, found: list[ToolCall] | None, content: list[str], calls: list[ToolCall]) -> None:
        if found is None:
            self._not_a_call(content)
            return
        calls += found
        self.raw, self.mode = "", "between"

    def _calls_in(self, text: str) -> list[ToolCall] | None:
        """The calls a JSON text holds (an object or a list of them), or None if it is not calls."""
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            return None
        items = value if isinstance(value, list) else [value]
        calls = [self._call_from(item) for item in items]
        if not calls or any(c is None for c in calls):
            return None
        return calls  # type: ignore[return-value]

    def _named_call(self, name: str, arguments_text: str) -> list[ToolCall] | None:
        try:
            arguments = json.loads(arguments_text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(arguments, dict) or not self._known(name):
            return None
        return [ToolCall(name, arguments)]

    def _call_from(self, item: Any) -> ToolCall | None:
        if not isinstance(item, dict):
            return None
        inner = item.get("function")
        function: dict = inner if isinstance(inner, dict) else item
        name = function.get("name")
        if not isinstance(name, str) or not name or not self._known(name):
            return None
        for key in ("arguments", "parameters"):
            if key in function:
                arguments = function[key]
                break
        else:
            # {"name": ...} alone is a call only to a tool we know: plain JSON often has a "name".
            if self.tool_names is None:
                return None
            arguments = {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except (ValueError, RecursionError):
                return None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return None
        return ToolCall(name, arguments)

    def _known(self, name: str) -> bool:
        return self.tool_names is None or name in self.tool_names
