"""Reading a model's answer as it streams: thinking, content and tool calls.

gpt-oss's harmony channels split by channel (prompt/harmony.py); other models' thinking tags come
off first (prompt/thinking.py), then tool calls in the syntax the template taught (prompt/tools.py).
Also the log probabilities of the answer's tokens, as the APIs report them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..api import Logprob, ToolCall, TopLogprob


def api_tool_calls(calls: Iterable[Any]) -> list[ToolCall]:
    return [ToolCall.of(c.name, c.arguments, c.id) for c in calls]


class AnswerReader:
    """Feeds on the answer's text piece by piece; each piece gives (thinking, content, tool calls)."""

    def __init__(self, *, channels: Any = None, thinker: Any = None, tool_parser: Any = None) -> None:
        self.channels = channels
        self.thinker = thinker
        self.tool_parser = tool_parser

    def feed(self, text: str) -> tuple[str, str, list[ToolCall]]:
        if self.channels is not None:
            thinking, content, found = self.channels.feed(text)
            return thinking, content, api_tool_calls(found)
        thinking = ""
        if self.thinker is not None:
            thinking, text = self.thinker.feed(text)
        calls: list = []
        if self.tool_parser is not None:
            text, calls = self.tool_parser.feed(text)
        return thinking, text, api_tool_calls(calls)

    def finish(self) -> tuple[str, str, list[ToolCall]]:
        """What is left when the answer ends: text held back in case it began a tag or a call."""
        thinking, content, calls = "", "", []
        if self.channels is not None:
            thinking, content, calls = self.channels.finish()
        if self.thinker is not None:
            more_thinking, rest = self.thinker.finish()
            thinking += more_thinking
            if self.tool_parser is not None:
                rest, more = self.tool_parser.feed(rest)
                calls += more
            content += rest
        if self.tool_parser is not None:
            rest, more = self.tool_parser.finish()
            content += rest
            calls += more
        return thinking, content, api_tool_calls(calls)


def _ids(tokens: Any) -> list[int]:
    return tokens.tokens if hasattr(tokens, "tokens") else tokens


def harmony_prefix(model: Any, tokens: Any) -> str:
    """The prompt from its last ``<|start|>`` on: the header (or the prefilled message) that the
    answer continues, read back with the special tokens written out."""
    from ..prompt.harmony import DEFAULT_PREFIX, START

    ids = [t for t in _ids(tokens)[-64:] if t >= 0]
    tail = model.model.detokenize(ids, False, True) if ids else ""
    at = tail.rfind(START)
    return tail[at:] if at >= 0 else DEFAULT_PREFIX


def prompt_opens_thinking(model: Any, tokens: Any, open_tag: str) -> bool:
    """Some templates end the prompt inside an opened <think>: the answer then starts thinking."""
    ids = [t for t in _ids(tokens)[-8:] if t >= 0]
    tail = model.detokenize(ids) if ids else ""
    return tail.rstrip().endswith(open_tag)


def logprobs_of(model: Any, entries: Iterable[Any]) -> list[Logprob]:
    """The engine's log probabilities with each token's text and bytes."""
    piece = model.model.token_to_piece

    def one(token: int, logprob: float) -> dict[str, Any]:
        raw = piece(token, True)
        return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}

    return [Logprob(**one(e.token, e.logprob), top_logprobs=[TopLogprob(**one(c.token, c.logprob)) for c in e.top])
            for e in entries]
