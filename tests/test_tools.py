"""Tool calls parsed out of streamed model output, in each family's syntax."""

from __future__ import annotations

import re

import pytest

from a3s_power.prompt.tools import ToolCall, ToolCallParser, new_call_id, tool_format_for
from tests import ollama_templates as T


def run(fmt: str, text: str, *, chunk: int | None = None, tools: set[str] | None = None):
    """Feeds ``text`` whole, or in chunks of ``chunk`` characters; returns (content, calls, pieces)
    where pieces is the content each feed released."""
    parser = ToolCallParser(fmt, tools)
    pieces = [text] if chunk is None else [text[i:i + chunk] for i in range(0, len(text), chunk)]
    content, calls, released = [], [], []
    for piece in pieces:
        c, found = parser.feed(piece)
        content.append(c)
        released.append(c)
        calls += found
    c, found = parser.finish()
    content.append(c)
    calls += found
    return "".join(content), [(call.name, call.arguments) for call in calls], released


def every_chunking(fmt: str, text: str, tools: set[str] | None = None):
    """The result must not depend on how the stream was cut."""
    results = {(content, repr(calls)) for content, calls, _ in
               (run(fmt, text, chunk=n, tools=tools) for n in (None, 1, 2, 3, 7))}
    assert len(results) == 1, results
    content, calls, _ = run(fmt, text, tools=tools)
    return content, calls


WEATHER = ("get_weather", {"location": "Paris"})
TIME = ("get_time", {"zone": "CET", "precise": True})


# --- hermes --------------------------------------------------------------------------------------

def test_hermes_single_call():
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>'
    assert every_chunking("hermes", text) == ("", [WEATHER])


def test_hermes_content_before_and_after_and_two_calls():
    text = ('Let me check. <tool_call>{"name": "get_weather", "arguments": {"location": "Paris"}}</tool_call>\n'
            '<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"CET\\", \\"precise\\": true}"}</tool_call>'
            '\nDone.')
    assert every_chunking("hermes", text) == ("Let me check. Done.", [WEATHER, TIME])


def test_hermes_content_streams_before_the_call_char_by_char():
    text = 'Sure: <tool_call>{"name": "get_weather", "arguments": {"location": "Paris"}}</tool_call>'
    _, _, released = run("hermes", text, chunk=1)
    # "Sure: " is out by the time the "<" arrives, and nothing of the call ever is.
    assert "".join(released[:6]) == "Sure: "
    assert "".join(released) == "Sure: "


def test_hermes_held_back_text_that_is_not_a_tag_is_released():
    _, _, released = run("hermes", "a <tool x", chunk=1)
    assert "".join(released) == "a <tool x"
    assert released[2:7] == [""] * 5  # "<tool" was held while it could be a tag
    assert released[7] == "<tool "


def test_hermes_bad_json_unknown_tool_and_unterminated_tag_are_content():
    bad = '<tool_call>{"name": "get_weather", "arguments": {"location": }</tool_call> after'
    assert every_chunking("hermes", bad) == (bad, [])
    unknown = '<tool_call>{"name": "launch", "arguments": {}}</tool_call>'
    assert every_chunking("hermes", unknown, tools={"get_weather"}) == (unknown, [])
    cut = '<tool_call>{"name": "get_weather", "arguments": {"loc'
    assert every_chunking("hermes", cut) == (cut, [])


def test_hermes_complete_call_without_closing_tag_is_a_call():
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n'
    assert every_chunking("hermes", text) == ("", [WEATHER])


def test_hermes_list_inside_one_tag_and_openai_shape():
    text = ('<tool_call>[{"name": "get_weather", "arguments": {"location": "Paris"}}, '
            '{"type": "function", "function": {"name": "get_time", "arguments": {"zone": "CET", "precise": true}}}]'
            '</tool_call>')
    assert every_chunking("hermes", text) == ("", [WEATHER, TIME])


def test_hermes_bare_json_at_the_start_is_a_call_but_not_later():
    bare = '{"name": "get_weather", "arguments": {"location": "Paris"}}'
    assert every_chunking("hermes", "\n" + bare) == ("", [WEATHER])
    later = "Here: " + bare
    assert every_chunking("hermes", later) == (later, [])


# --- mistral -------------------------------------------------------------------------------------

def test_mistral_list_of_calls():
    text = ('[TOOL_CALLS] [{"name": "get_weather", "arguments": {"location": "Paris"}}, '
            '{"name": "get_time", "arguments": {"zone": "CET", "precise": true}}]')
    assert every_chunking("mistral", text) == ("", [WEATHER, TIME])


def test_mistral_name_args_form_and_repeated_markers():
    text = ('[TOOL_CALLS]get_weather[ARGS]{"location": "Paris"}'
            '[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{"zone": "CET", "precise": true}')
    assert every_chunking("mistral", text) == ("", [WEATHER, TIME])


def test_mistral_content_then_call_and_braces_inside_strings():
    text = 'Checking.[TOOL_CALLS] [{"name": "get_weather", "arguments": {"location": "P}a]r{is"}}]'
    assert every_chunking("mistral", text) == ("Checking.", [("get_weather", {"location": "P}a]r{is"})])


def test_mistral_marker_followed_by_prose_is_content():
    text = "[TOOL_CALLS] I cannot call tools right now."
    assert every_chunking("mistral", text) == (text, [])


# --- llama3 --------------------------------------------------------------------------------------

def test_llama3_bare_json_with_parameters():
    text = '{"name": "get_weather", "parameters": {"location": "Paris"}}'
    assert every_chunking("llama3", text) == ("", [WEATHER])


def test_llama3_python_tag_and_several_calls():
    text = ('<|python_tag|>{"name": "get_weather", "parameters": {"location": "Paris"}}; '
            '{"name": "get_time", "parameters": {"zone": "CET", "precise": true}}')
    assert every_chunking("llama3", text) == ("", [WEATHER, TIME])


def test_llama3_python_code_after_the_tag_is_content():
    text = '<|python_tag|>brave_search.call(query="weather")'
    assert every_chunking("llama3", text) == (text, [])


def test_llama3_plain_answer_streams_untouched():
    text = "The weather in Paris is {usually} mild."
    content, calls, released = run("llama3", text, chunk=1)
    assert (content, calls) == (text, [])
    assert "".join(released) == text


# --- json ----------------------------------------------------------------------------------------

def test_json_object_list_and_string_arguments():
    assert every_chunking("json", ' {"name": "get_weather", "arguments": "{\\"location\\": \\"Paris\\"}"}') == (
        "", [WEATHER])
    text = ('[{"name": "get_weather", "arguments": {"location": "Paris"}}, '
            '{"name": "get_time", "arguments": {"zone": "CET", "precise": true}}]')
    assert every_chunking("json", text) == ("", [WEATHER, TIME])


def test_json_that_is_not_a_call_is_content():
    for text in ['{"name": "Felix", "age": 3}', '[1, 2, 3]', '{"answer": 42}', '{"name": 5, "arguments": {}}',
                 '{"name": "get_weather", "arguments": [1]}', '{"name": "get_weather", "arguments": "not json"}']:
        assert every_chunking("json", text) == (text, []), text


def test_json_name_alone_is_a_call_only_to_a_known_tool():
    assert every_chunking("json", '{"name": "get_time"}', tools={"get_time"}) == ("", [("get_time", {})])
    assert every_chunking("json", '{"name": "get_time"}') == ('{"name": "get_time"}', [])


def test_json_unknown_tool_is_content_and_known_one_is_a_call():
    text = '{"name": "rm_rf", "arguments": {}}'
    assert every_chunking("json", text, tools={"get_weather"}) == (text, [])
    assert every_chunking("json", '{"name": "get_weather", "arguments": {"location": "Paris"}}',
                          tools={"get_weather"}) == ("", [WEATHER])


def test_unfinished_json_is_content():
    text = '{"name": "get_weather", "arguments": {"location": "Par'
    assert every_chunking("json", text) == (text, [])


# --- the rest ------------------------------------------------------------------------------------

def test_call_ids_look_like_ollamas():
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"call_[a-z0-9]{8}", i) for i in ids)
    call = ToolCall("f", {"x": 1})
    assert re.fullmatch(r"call_[a-z0-9]{8}", call.id)
    assert call.to_ollama(2) == {"id": call.id, "function": {"index": 2, "name": "f", "arguments": {"x": 1}}}


@pytest.mark.parametrize("source, expected", [
    (T.QWEN25, "hermes"),
    (T.MISTRAL, "mistral"),
    (T.LLAMA31, "llama3"),
    ("{% if tools %}<|python_tag|>{{ tool_call | tojson }}{% endif %}", "llama3"),
    ("{{ bos_token }}{% for m in messages %}[TOOL_CALLS]{% endfor %}", "mistral"),
    (T.CHATML, "json"),
    (T.GEMMA, "json"),
    (None, "json"),
])
def test_tool_format_for(source, expected):
    assert tool_format_for(source) == expected


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown tool call format"):
        ToolCallParser("xml")
