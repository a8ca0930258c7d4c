"""Reasoning apart from the answer, as a model streams them.

Thinking models write ``<think>...</think>`` (or their own tags) before the answer. Like Ollama,
:class:`ThinkingParser` takes the tags out, drops the blanks just inside them and right after the
closing tag, and treats an answer that does not open with the tag (blanks aside) as all content.
When the prompt itself already opened the tag (templates that end with ``<think>``), the parser
starts inside the reasoning.
"""

from __future__ import annotations

import re

__all__ = ["ThinkingParser", "thinking_tags_for"]

# Tag pairs that models use, most common first.
_KNOWN_TAGS = [("<think>", "</think>"), ("<thinking>", "</thinking>"), ("\u25c1think\u25b7", "\u25c1/think\u25b7")]
_DEFAULT_TAGS = _KNOWN_TAGS[0]
# Template features that switch thinking on without naming the tags.
_THINKING_SWITCHES = re.compile(r"\.Think\b|\.ThinkLevel\b|\.IsThinkSet\b|enable_thinking|reasoning_content")


def thinking_tags_for(template_source: str | None) -> tuple[str, str] | None:
    """The (open, close) tags a template's model thinks in, or None for a model that does not.

    Harmony templates (gpt-oss: ``<|channel|>``) think in channels, not tags: None here
    (prompt/harmony.py reads them)."""
    if not template_source or "<|channel|>" in template_source:
        return None
    for tags in _KNOWN_TAGS:
        if tags[0] in template_source:
            return tags
    if _THINKING_SWITCHES.search(template_source):
        return _DEFAULT_TAGS
    return None


def _held_prefix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper beginning of ``tag``."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ThinkingParser:
    """``feed`` returns the (thinking, content) that can be shown now; ``finish`` the rest."""

    def __init__(self, open_tag: str = "<think>", close_tag: str = "</think>",
                 starts_in_thinking: bool = False) -> None:
        if not open_tag or not close_tag:
            raise ValueError("thinking tags must not be empty")
        self.open_tag = open_tag
        self.close_tag = close_tag
        # looking: before the answer shows whether it thinks; opened: blanks after the open tag;
        # thinking: inside; closed: blanks after the close tag; answering: the rest is content.
        self.state = "opened" if starts_in_thinking else "looking"
        self.buffer = ""

    def feed(self, text: str) -> tuple[str, str]:
        self.buffer += text
        thinking: list[str] = []
        content: list[str] = []
        while self.buffer and self._step(thinking, content):
            pass
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        thinking, content = "", ""
        if self.state == "thinking":
            thinking = self.buffer.rstrip()  # an unclosed thought, or a close tag cut short
        elif self.state in ("looking", "answering"):
            content = self.buffer  # blanks, or the start of an open tag that never came
        self.buffer = ""
        self.state = "answering"
        return thinking, content

    def _step(self, thinking: list[str], content: list[str]) -> bool:
        if self.state == "looking":
            stripped = self.buffer.lstrip()
            if stripped.startswith(self.open_tag):
                self.buffer = stripped[len(self.open_tag):]
                self.state = "opened"
                return True
            if self.open_tag.startswith(stripped):
                return False  # blanks so far, or part of the open tag
            self.state = "answering"  # no reasoning: keep the answer exactly as written
            return True
        if self.state in ("opened", "closed"):
            self.buffer = self.buffer.lstrip()
            if not self.buffer:
                return False
            self.state = "thinking" if self.state == "opened" else "answering"
            return True
        if self.state == "thinking":
            at = self.buffer.find(self.close_tag)
            if at >= 0:
                thinking.append(self.buffer[:at].rstrip())
                self.buffer = self.buffer[at + len(self.close_tag):]
                self.state = "closed"
                return True
            # Hold back what may be the start of the close tag, and blanks that may precede it.
            sure = self.buffer[:len(self.buffer) - _held_prefix(self.buffer, self.close_tag)]
            sure = sure.rstrip()
            thinking.append(sure)
            self.buffer = self.buffer[len(sure):]
            return False
        content.append(self.buffer)
        self.buffer = ""
        return False
