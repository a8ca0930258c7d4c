"""Property-based fuzzing of the tool call parser (issue 16): it reads whatever a model writes.
It never raises; streaming does not change what it finds (one chunk or many give the same content
and calls); what is not a call is content, as written; and finish() flushes everything."""

from __future__ import annotations

import json

from hypothesis import example, given, strategies as st

from a3s_power.prompt.tools import TOOL_FORMATS, ToolCallParser
from tests.fuzz_support import fuzz_settings, time_limit

LIMIT_S = 10.0

PIECES = ["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>", "<tool_", "[TOOL",
          "<|python", "</tool", '{"name": "f", "arguments": {"a": 1}}', '{"name": "get_weather", "parameters": {}}',
          '[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"b": [1]}}]',
          '{"function": {"name": "f", "arguments": "{\\"x\\": 1}"}}', '{"name": "f"}', '{"name": "f", "arguments": 1}',
          '{"name": "f", "arguments": "nope"}', '{"name": 1}', "{}", "[]", "{", "}", "[", "]", '"', "\\", '\\"', " ",
          "\n", "\t", ";", "f", "get_weather", "hello", "é", "😀", '{"a": [1, {"b": "}]"}]}', "null", "1", "[ARGS]{}",
          "f[ARGS]", "f[CALL_ID]1[ARGS]", "{\"x\": 1}", "  ", "<", "[", "x y"]
texts = st.lists(st.sampled_from(PIECES) | st.text(max_size=4), max_size=14).map("".join)
NAMES = st.sampled_from([None, set(), {"f"}, {"f", "g", "get_weather"}])


@st.composite
def chunkings(draw, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def run(fmt: str, names, chunks: list[str]) -> tuple[str, list[tuple[str, str]]]:
    parser = ToolCallParser(fmt, names)
    content: list[str] = []
    calls = []
    for chunk in chunks:
        text, found = parser.feed(chunk)
        content.append(text)
        calls += found
    text, found = parser.finish()
    content.append(text)
    calls += found
    assert parser.buffer == "" and parser.raw == "", "finish() left text behind"
    for call in calls:
        assert isinstance(call.name, str) and call.name and isinstance(call.arguments, dict)
        assert names is None or call.name in names
    return "".join(content), [(c.name, json.dumps(c.arguments, sort_keys=True)) for c in calls]


def is_subsequence(part: str, whole: str) -> bool:
    letters = iter(whole)
    return all(ch in letters for ch in part)


@fuzz_settings(600)
@given(st.sampled_from(TOOL_FORMATS), NAMES, texts, st.data())
@example("mistral", None, "[TOOL_CALLS]" + "x" * 300 + "[ARGS] {}", None)
@example("mistral", None, "[TOOL_CALLS]f[ARGS] nope", None)
@example("hermes", None, "<tool_call>" + "[" * 5000 + "]" * 5000 + "</tool_call>", None)
@example("json", None, "[" * 5000 + "]" * 5000, None)
@example("json", None, '{"name": "f", "arguments": "' + "[" * 5000 + "]" * 5000 + '"}', None)
def test_streaming_never_changes_what_is_found(fmt, names, text, data):
    with time_limit(LIMIT_S):
        whole = run(fmt, names, [text])
        chunks = data.draw(chunkings(text)) if data is not None else [text[:7], text[7:20], text[20:]]
        assert run(fmt, names, chunks) == whole, chunks
        assert run(fmt, names, list(text)) == whole, "one character at a time"
        content, calls = whole
        if not calls:
            assert content == text, "text that holds no call comes back as content, as written"
        assert is_subsequence(content, text), "content is the text with calls taken out"


# --- well-formed calls are found whatever the chunking -------------------------------------------------

arguments = st.dictionaries(st.text(max_size=4), st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=5), max_size=3)
calls = st.lists(st.tuples(st.sampled_from(["f", "g", "get_weather"]), arguments), min_size=1, max_size=3)
prose = st.text(st.characters(blacklist_characters="{[<"), max_size=8)
BLANKS = st.sampled_from(["", " ", "\n", " \n "])


@st.composite
def answers(draw, fmt: str, wanted: list) -> str:
    """An answer holding ``wanted`` in ``fmt``'s syntax, in one of the ways models write it."""
    def obj(name, args, key="arguments"):
        return json.dumps({"name": name, key: args}, ensure_ascii=draw(st.booleans()))

    if fmt == "hermes":
        before = draw(prose)
        parts = [f"<tool_call>{draw(BLANKS)}{obj(n, a)}{draw(BLANKS)}</tool_call>" for n, a in wanted]
        return before + draw(BLANKS).join(parts)
    if fmt == "mistral":
        if draw(st.booleans()):
            return "[TOOL_CALLS]" + draw(BLANKS) + json.dumps([{"name": n, "arguments": a} for n, a in wanted])
        return "".join(f"[TOOL_CALLS]{n}[ARGS]{draw(BLANKS)}{json.dumps(a)}" for n, a in wanted)
    if fmt == "llama3":
        opening = draw(st.sampled_from(["<|python_tag|>", ""]))
        return draw(BLANKS) + opening + draw(st.sampled_from(["; ", "\n"])).join(obj(n, a, "parameters")
                                                                                  for n, a in wanted)
    return draw(BLANKS) + (json.dumps([{"name": n, "arguments": a} for n, a in wanted]) if draw(st.booleans())
                           else "\n".join(obj(n, a) for n, a in wanted))


@fuzz_settings(300)
@given(st.sampled_from(TOOL_FORMATS), calls, st.data())
def test_well_formed_calls_are_found_in_any_chunking(fmt, wanted, data):
    text = data.draw(answers(fmt, wanted))
    names = data.draw(st.sampled_from([None, {"f", "g", "get_weather"}]))
    expected = [(n, json.dumps(a, sort_keys=True)) for n, a in wanted]
    with time_limit(LIMIT_S):
        for chunks in ([text], data.draw(chunkings(text)), list(text)):
            content, found = run(fmt, names, chunks)
            assert found == expected, (text, chunks)
