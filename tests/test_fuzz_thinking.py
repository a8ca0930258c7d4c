"""Property-based fuzzing of the thinking parser (issue 16): it reads whatever a model writes. It
never raises; streaming does not change the result (one chunk or many give the same thinking and
content); finish() flushes everything; and it only ever takes tags and blanks out of the text."""

from __future__ import annotations

from hypothesis import example, given, strategies as st

from a3s_power.prompt.thinking import ThinkingParser, thinking_tags_for
from tests.fuzz_support import fuzz_settings, time_limit

LIMIT_S = 10.0

TAGS = [("<think>", "</think>"), ("<thinking>", "</thinking>"), ("\u25c1think\u25b7", "\u25c1/think\u25b7"),
        ("<", ">"), ("<a>", "<a>"), ("[[", "]]")]
PIECES = ["<think>", "</think>", "<thinking>", "</thinking>", "\u25c1think\u25b7", "\u25c1/think\u25b7", "<", ">",
          "</", "</th", "<th", "think", "[[", "]]", "<a>", " ", "\n", "\t", "  \n ", "x", "answer", "é", "\u3000"]
texts = st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=14).map("".join)


@st.composite
def chunkings(draw, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def run(tags: tuple[str, str], starts_in_thinking: bool, chunks: list[str]) -> tuple[str, str]:
    parser = ThinkingParser(*tags, starts_in_thinking=starts_in_thinking)
    thinking, content = [], []
    for chunk in chunks:
        t, c = parser.feed(chunk)
        thinking.append(t)
        content.append(c)
    t, c = parser.finish()
    thinking.append(t)
    content.append(c)
    assert parser.buffer == "", "finish() left text behind"
    return "".join(thinking), "".join(content)


def is_subsequence(part: str, whole: str) -> bool:
    letters = iter(whole)
    return all(ch in letters for ch in part)


@fuzz_settings(600)
@given(st.sampled_from(TAGS), st.booleans(), texts, st.data())
@example(("<think>", "</think>"), False, "<think> a \n</think>\n b", None)
@example(("<think>", "</think>"), True, "a  </thi", None)
def test_streaming_never_changes_the_result(tags, starts_in_thinking, text, data):
    with time_limit(LIMIT_S):
        whole = run(tags, starts_in_thinking, [text])
        chunks = data.draw(chunkings(text)) if data is not None else [text[:3], text[3:9], text[9:]]
        assert run(tags, starts_in_thinking, chunks) == whole, chunks
        assert run(tags, starts_in_thinking, list(text)) == whole, "one character at a time"
        thinking, content = whole
        assert is_subsequence(thinking + content, text), "only tags and blanks are taken out"
        if not starts_in_thinking and tags[0] not in text:
            assert (thinking, content) == ("", text), "an answer that never opens the tag is all content"


@fuzz_settings(200)
@given(st.text(max_size=30) | st.sampled_from(["{{ .Think }}", "enable_thinking", "<|channel|><think>"]))
def test_tags_for_any_template(source):
    tags = thinking_tags_for(source)
    assert tags is None or (isinstance(tags, tuple) and all(tags))
