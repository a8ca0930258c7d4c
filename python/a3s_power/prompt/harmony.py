"""OpenAI's harmony format (gpt-oss): reasoning, answer and tool calls out of one stream of text.

A harmony answer is a run of messages, each ``<|start|>ROLE HEADER<|message|>BODY`` ended by
``<|end|>`` (``<|call|>`` after a tool call, ``<|return|>`` after the last answer; llama.cpp stops
on those two, so they rarely reach the text). The header names a channel (``<|channel|>analysis``:
reasoning; ``final``: the answer; ``commentary``: tool calls and preambles) and, for a tool call, a
recipient (``to=functions.NAME``, before or after the channel), maybe with ``<|constrain|>json``.
The prompt ends with ``<|start|>assistant``, so the model begins inside a header.

As in Ollama, a model is read this way when it is a gpt-oss (architecture ``gpt-oss``, or
``gptoss`` in Ollama's dialect) whose template speaks harmony, or when its config names the
``harmony`` parser; analysis is thinking whatever ``think`` says (gpt-oss cannot stop reasoning).
Unlike Ollama, a call to a tool the request did not offer, or with arguments that are not a JSON
object, is not a tool call: its text is content, as for every other tool call syntax here.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from .tools import ToolCall

__all__ = ["HarmonyParser", "FunctionNames", "uses_harmony", "parse_header", "format_after_reasoning", "MARKERS",
           "DEFAULT_PREFIX"]

START, END, CALL, RETURN = "<|start|>", "<|end|>", "<|call|>", "<|return|>"
CHANNEL, MESSAGE, CONSTRAIN = "<|channel|>", "<|message|>", "<|constrain|>"
MARKERS = (START, END, CALL, RETURN, CHANNEL, MESSAGE, CONSTRAIN)
_FAMILIES = ("gpt-oss", "gptoss")
# Tools gpt-oss was trained with under their own names; they keep them (and take no "functions.").
BUILTIN_TOOLS = ("browser.search", "browser.open", "browser.find", "python")
# Recipients that are conversation roles, never tools.
_ROLES = ("assistant", "user", "system", "developer")
DEFAULT_PREFIX = START + "assistant"


def format_after_reasoning(grammar: str, prefix: str) -> tuple[str, list[str]]:
    """A format's grammar for a harmony answer, and the patterns that start it: the model reasons
    first, and the grammar takes over at the final channel's header (llama.cpp's lazy grammar
    replays the text from the pattern's group, so the grammar spells the header, then the format),
    as Ollama and llama-server let gpt-oss do. ``prefix`` is the prompt's tail from its last
    ``<|start|>``: when it already opens the final message, the format applies from the first
    token."""
    if re.fullmatch(r"<\|start\|>assistant\s*<\|channel\|>final[^<]*(<\|constrain\|>[^<]*)?<\|message\|>",
                    prefix.strip()):
        return grammar, []
    renamed = re.sub(r"^root(\s*::=)", r"format-root\1", grammar, flags=re.M)
    header = 'root ::= "<|channel|>final" [^<]* ("<|constrain|>" [^<]*)? "<|message|>" format-root\n'
    return header + renamed, [r"[\s\S]*?(<\|channel\|>final)[\s\S]*"]


def uses_harmony(architecture: str, template_source: str | None, parser: str = "") -> bool:
    """Ollama's rule: the harmony parser when the config names it, or for the gpt-oss family when
    the template has harmony's message markers (a Jinja or a Go template alike)."""
    if parser == "harmony":
        return True
    source = template_source or ""
    return architecture in _FAMILIES and START in source and END in source


def _identifier(name: str) -> str:
    """A tool name as a TypeScript identifier, which is how harmony prompts declare functions:
    blanks, dashes and dots become underscores, other characters that are not letters, digits,
    ``_`` or ``$`` go, and a leading digit gets an underscore before it (as Ollama renames)."""
    out = []
    for ch in name:
        if ch in " -.":
            out.append("_")
        elif ch in "_$" or ch.isalpha() or unicodedata.category(ch) == "Nd":
            out.append(ch)
    text = "".join(out) or "unnamed"
    return "_" + text if text[0].isdigit() else text


class FunctionNames:
    """The request's tools under names harmony can declare, and the way back from a recipient
    (``functions.get_weather``) to the name the client offered."""

    def __init__(self, tools: list[dict] | None) -> None:
        self.tools = tools
        self.to_user: dict[str, str] = {}
        self.renamed: list[dict] | None = None
        if not tools:
            return
        renamed = []
        for tool in tools:
            function = tool.get("function") if isinstance(tool, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(function, dict) or not isinstance(name, str) or not name:
                renamed.append(tool)
                continue
            harmony = name if name in BUILTIN_TOOLS else self._unique(_identifier(name))
            self.to_user.setdefault(harmony, name)
            renamed.append({**tool, "function": {**function, "name": harmony}} if harmony != name else tool)
        self.renamed = renamed

    def _unique(self, candidate: str) -> str:
        name, n = candidate, 2
        while name in self.to_user:
            name, n = f"{candidate}_{n}", n + 1
        return name

    def for_prompt(self) -> list[dict] | None:
        return self.renamed if self.renamed is not None else self.tools

    def offered(self, recipient: str) -> str | None:
        """The offered tool a recipient names, or None when the request did not offer it."""
        if recipient in BUILTIN_TOOLS:
            return recipient if self.to_user.get(recipient) == recipient else None
        name = recipient[len("functions."):] if recipient.startswith("functions.") else recipient
        return self.to_user.get(name)


def parse_header(raw: str) -> tuple[str, str, str]:
    """(role, channel, recipient) of a header: ``assistant<|channel|>commentary to=functions.f
    <|constrain|>json`` and ``assistant to=functions.f<|channel|>commentary json`` alike."""
    raw = raw.replace(CONSTRAIN, " " + CONSTRAIN)
    channel = ""
    at = raw.find(CHANNEL)
    if at >= 0:
        after = raw[at + len(CHANNEL):]
        word = re.match(r"[^\s<]*", after)  # always matches, if only the empty string
        channel = word.group(0) if word else ""
        raw = raw[:at] + " " + after[len(channel):]
    words = [w for w in raw.split() if not w.startswith("<|")]
    recipient = next((w[3:] for w in words if w.startswith("to=")), "")
    role = words[0] if words and not words[0].startswith("to=") else ""
    return role, channel, recipient


def _partial_marker(text: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of some marker."""
    for size in range(min(len(text), max(map(len, MARKERS)) - 1), 0, -1):
        tail = text[-size:]
        if any(m.startswith(tail) for m in MARKERS):
            return size
    return 0


def _first_marker(text: str) -> tuple[int, str]:
    at = text.find("<|")
    while at >= 0:
        for marker in MARKERS:
            if text.startswith(marker, at):
                return at, marker
        at = text.find("<|", at + 2)
    return -1, ""


class HarmonyParser:
    """``feed`` returns the (thinking, content, tool calls) that can be shown now; ``finish`` the
    rest. No marker ever reaches thinking or content; a marker cut across chunks is held back.

    ``prefix`` is the end of the prompt from its last ``<|start|>`` (``<|start|>assistant``, or a
    prefilled ``<|start|>assistant<|channel|>final<|message|>``): the answer continues it."""

    def __init__(self, names: FunctionNames | None = None, prefix: str = DEFAULT_PREFIX) -> None:
        self.names = names or FunctionNames(None)
        self.state = "between"  # between | header | body
        self.buffer = ""
        self.header = ""
        self.kind = "content"  # what the current body is: thinking | content | call
        self.recipient = ""
        self.call_text = ""
        self.primed, self.primed_at = False, 0
        self._feed(prefix, [], [], [])
        # In the header the prompt opened, where the answer starts (see _answer_starts).
        self.primed = self.state == "header"
        self.primed_at = len(self.header)

    # --- public

    def feed(self, text: str) -> tuple[str, str, list[ToolCall]]:
        thinking: list[str] = []
        content: list[str] = []
        calls: list[ToolCall] = []
        self._feed(text, thinking, content, calls)
        return "".join(thinking), "".join(content), calls

    def finish(self) -> tuple[str, str, list[ToolCall]]:
        thinking: list[str] = []
        content: list[str] = []
        calls: list[ToolCall] = []
        if self.state == "body":
            # What is held back is the start of a marker that never came: text after all.
            self._emit(self.buffer, thinking, content)
            self._close(content, calls)  # <|call|> and <|return|> stop generation unseen
        elif self.state == "header" and self.primed:
            answer = self.header[self.primed_at:] + self.buffer
            if not answer.strip():
                content.append(answer)  # only blanks came
        # A header that never reached <|message|> is no part of the answer (as in Ollama).
        self.buffer, self.header, self.state, self.primed = "", "", "between", False
        return "".join(thinking), "".join(content), calls

    # --- the state machine: each step consumes input and says whether it made progress

    def _feed(self, text: str, thinking: list[str], content: list[str], calls: list[ToolCall]) -> None:
        self.buffer += text
        while self.buffer and getattr(self, "_step_" + self.state)(thinking, content, calls):
            pass

    def _step_between(self, thinking, content, calls) -> bool:
        at, marker = _first_marker(self.buffer)
        before = self.buffer[:at] if at >= 0 else self.buffer[:len(self.buffer) - _partial_marker(self.buffer)]
        if before.strip():
            # Text outside any message (a model that skipped the markers): an answer all the same.
            self.state, self.kind, self.recipient = "body", "content", ""
            return True
        if at < 0:
            return False  # blanks, or the start of a marker: wait
        self.buffer = self.buffer[at + len(marker):]
        if marker == START:
            self._open_header("")
        elif marker in (CHANNEL, CONSTRAIN):
            self._open_header(marker)  # a header whose <|start|>role was left out
        elif marker == MESSAGE:
            self._open_body("", "", "")
        return True  # blanks and stray ends between messages are dropped

    def _step_header(self, thinking, content, calls) -> bool:
        if self.primed:
            starts = self._answer_starts()
            if starts is None:
                return False
            if not starts:
                # The model answered without harmony: its text is the answer.
                self.buffer = self.header[self.primed_at:] + self.buffer
                self.header, self.primed = "", False
                self.state, self.kind, self.recipient = "body", "content", ""
                return True
            self.primed = False
        at, marker = _first_marker(self.buffer)
        if at < 0:
            keep = _partial_marker(self.buffer)
            self.header += self.buffer[:len(self.buffer) - keep]
            self.buffer = self.buffer[len(self.buffer) - keep:]
            return False
        self.header += self.buffer[:at]
        self.buffer = self.buffer[at + len(marker):]
        if marker == MESSAGE:
            self._open_body(*parse_header(self.header))
        elif marker in (CHANNEL, CONSTRAIN):
            self.header += marker
        elif marker == START:
            self._open_header("")  # a header cut off by a new message
        else:
            self.state, self.header = "between", ""  # a header ended before its message
        return True

    def _step_body(self, thinking, content, calls) -> bool:
        at, marker = _first_marker(self.buffer)
        if at < 0:
            keep = _partial_marker(self.buffer)
            self._emit(self.buffer[:len(self.buffer) - keep], thinking, content)
            self.buffer = self.buffer[len(self.buffer) - keep:]
            return False
        self._emit(self.buffer[:at], thinking, content)
        self.buffer = self.buffer[at + len(marker):]
        if marker in (MESSAGE, CONSTRAIN):
            return True  # out of place inside a body: dropped, never shown
        self._close(content, calls)
        if marker == START:
            self._open_header("")
        elif marker == CHANNEL:
            self._open_header(marker)  # a new message begun without <|end|><|start|>
        return True

    # --- helpers

    def _answer_starts(self) -> bool | None:
        """Whether the model's first words go on with the header the prompt opened (a channel,
        a recipient, a constraint or the message itself); None while it cannot be told yet."""
        text = (self.header[self.primed_at:] + self.buffer).lstrip()
        if not text:
            return None
        for start in (CHANNEL, CONSTRAIN, MESSAGE, "to="):
            if text.startswith(start):
                return True
            if start.startswith(text):
                return None
        return False

    def _open_header(self, text: str) -> None:
        self.state, self.header, self.primed = "header", text, False

    def _open_body(self, role: str, channel: str, recipient: str) -> None:
        self.state, self.header, self.recipient, self.call_text = "body", "", recipient, ""
        if recipient and channel != "final" and recipient not in _ROLES:
            self.kind = "call"
        elif channel == "analysis":
            self.kind = "thinking"
        else:
            self.kind = "content"

    def _emit(self, text: str, thinking: list[str], content: list[str]) -> None:
        if not text:
            return
        if self.kind == "thinking":
            thinking.append(text)
        elif self.kind == "call":
            self.call_text += text  # a call is whole or nothing: kept until its message ends
        else:
            content.append(text)

    def _close(self, content: list[str], calls: list[ToolCall]) -> None:
        if self.kind == "call":
            call = self._call(self.recipient, self.call_text)
            if call is not None:
                calls.append(call)
            else:
                content.append(self.call_text)
        self.state, self.kind, self.recipient, self.call_text = "between", "content", "", ""

    def _call(self, recipient: str, text: str) -> ToolCall | None:
        name = self.names.offered(recipient)
        if name is None:
            return None
        try:
            arguments: Any = json.loads(text) if text.strip() else {}
        except (ValueError, RecursionError):
            return None
        return ToolCall(name, arguments) if isinstance(arguments, dict) else None
