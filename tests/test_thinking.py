"""Thinking separated from the answer while it streams."""

from __future__ import annotations

import pytest

from a3s_power.prompt.thinking import ThinkingParser, thinking_tags_for
from tests import ollama_templates as T


def run(text: str, chunk: int | None = None, **options):
    parser = ThinkingParser(**options)
    pieces = [text] if chunk is None else [text[i:i + chunk] for i in range(0, len(text), chunk)]
    thinking, content, released = [], [], []
    for piece in pieces:
        t, c = parser.feed(piece)
        thinking.append(t)
        content.append(c)
        released.append((t, c))
    t, c = parser.finish()
    thinking.append(t)
    content.append(c)
    return "".join(thinking), "".join(content), released


def split(text: str, **options) -> tuple[str, str]:
    """The result must not depend on how the stream was cut."""
    results = {run(text, chunk, **options)[:2] for chunk in (None, 1, 2, 3, 5)}
    assert len(results) == 1, results
    return results.pop()


@pytest.mark.parametrize("text, expected", [
    ("<think>Let me add.</think>4", ("Let me add.", "4")),
    ("<think>\nLet me add.\n</think>\n\n4", ("Let me add.", "4")),
    ("  \n<think> a  b \n</think>  The answer.\n", ("a  b", "The answer.\n")),
    ("The answer is 4.", ("", "The answer is 4.")),
    ("  The answer keeps its blanks.", ("", "  The answer keeps its blanks.")),
    ("4 <think>not at the start</think>", ("", "4 <think>not at the start</think>")),
    ("<think>one</think>two<think>three</think>", ("one", "two<think>three</think>")),
    ("<think>a < b and </thin is not the end</think>ok", ("a < b and </thin is not the end", "ok")),
    ("<think></think>answer", ("", "answer")),
    ("<think>unfinished thought  ", ("unfinished thought", "")),
    ("<thi", ("", "<thi")),
    ("   ", ("", "   ")),
    ("", ("", "")),
])
def test_split(text, expected):
    assert split(text) == expected


def test_thinking_streams_as_it_comes_char_by_char():
    _, _, released = run("<think>abc def</think>xy", chunk=1)
    thinking_steps = [t for t, _ in released]
    content_steps = [c for _, c in released]
    # Each letter of the reasoning is out as soon as it arrives; the blank waits for the next word.
    assert thinking_steps[7:14] == ["a", "b", "c", "", " d", "e", "f"]
    assert "".join(content_steps) == "xy" and content_steps[-2:] == ["x", "y"]


def test_starts_in_thinking_when_the_prompt_opened_the_tag():
    assert split("\nI should greet.\n</think>\n\nHello!", starts_in_thinking=True) == ("I should greet.", "Hello!")
    assert split("no close tag", starts_in_thinking=True) == ("no close tag", "")


def test_other_tags():
    assert split("<thinking>hmm</thinking>yes", open_tag="<thinking>", close_tag="</thinking>") == ("hmm", "yes")
    assert split("\u25c1think\u25b7hmm\u25c1/think\u25b7yes", open_tag="\u25c1think\u25b7",
                 close_tag="\u25c1/think\u25b7") == ("hmm", "yes")


def test_empty_tags_are_refused():
    with pytest.raises(ValueError):
        ThinkingParser("", "</think>")


@pytest.mark.parametrize("source, expected", [
    (T.DEEPSEEK, ("<think>", "</think>")),
    ("{{ if .Think }}reason first{{ end }}{{ .Prompt }}", ("<think>", "</think>")),
    ("{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>' }}{%- endif %}",
     ("<think>", "</think>")),
    ("{{ message.reasoning_content }}", ("<think>", "</think>")),
    ("<|im_start|>assistant\n<thinking>", ("<thinking>", "</thinking>")),
    ("<|start|>assistant<|channel|>analysis<|message|>{{ .Thinking }}", None),
    (T.QWEN25, None),
    (T.LLAMA31, None),
    ("{{ range .Messages }}{{ .Thinking }}{{ end }}", None),
    (None, None),
])
def test_thinking_tags_for(source, expected):
    assert thinking_tags_for(source) == expected
