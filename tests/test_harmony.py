"""The harmony parser (gpt-oss, prompt/harmony.py): reasoning, answer and tool calls out of a
stream, the same however the stream is cut, with no harmony marker ever shown."""

from __future__ import annotations

from hypothesis import example, given, strategies as st

from a3s_power.prompt.harmony import DEFAULT_PREFIX, MARKERS, FunctionNames, HarmonyParser, parse_header, uses_harmony
from tests.fuzz_support import fuzz_settings, time_limit

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get-time", "parameters": {"type": "object", "properties": {}}}}

THINK_THEN_ANSWER = ("<|channel|>analysis<|message|>The user asks for a capital.<|end|>"
                     "<|start|>assistant<|channel|>final<|message|>Paris is the capital.")
THINK_THEN_CALL = ("<|channel|>analysis<|message|>Need the weather.<|end|>"
                   "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
                   "<|message|>{\"city\":\"Paris\"}")
# The order llama.cpp's Jinja template writes a call in: recipient first, then the channel.
RECIPIENT_FIRST = " to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": \"Paris\"}<|call|>"
TWO_CALLS = ("<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>"
             "<|start|>assistant<|channel|>commentary to=functions.get_time<|message|>{}<|call|>")
UNKNOWN_TOOL = "<|channel|>commentary to=functions.launch_rocket <|constrain|>json<|message|>{\"now\":true}"
BAD_JSON = "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Par"
NO_CHANNEL = "Paris is the capital of France."


def run(text_or_chunks, tools=(WEATHER, TIME), prefix: str = DEFAULT_PREFIX):
    """(thinking, content, [(name, arguments)]) and every piece the parser let out on the way."""
    chunks = [text_or_chunks] if isinstance(text_or_chunks, str) else text_or_chunks
    parser = HarmonyParser(FunctionNames(list(tools) if tools is not None else None), prefix)
    pieces = [parser.feed(c) for c in chunks] + [parser.finish()]
    thinking = "".join(p[0] for p in pieces)
    content = "".join(p[1] for p in pieces)
    calls = [(c.name, c.arguments) for p in pieces for c in p[2]]
    assert parser.buffer == "" and parser.state == "between", "finish() left text behind"
    return (thinking, content, calls), [p[0] for p in pieces] + [p[1] for p in pieces]


def every_cut(text: str):
    yield [text]
    yield list(text)
    for i in range(len(text) + 1):
        yield [text[:i], text[i:]]


def check_all_chunkings(text: str, tools=(WEATHER, TIME), prefix: str = DEFAULT_PREFIX):
    whole, _ = run(text, tools, prefix)
    for chunks in every_cut(text):
        result, pieces = run(chunks, tools, prefix)
        assert result == whole, chunks
        for piece in pieces:
            assert not any(m in piece for m in MARKERS), (chunks, piece)
    return whole


def test_thinking_then_answer():
    assert check_all_chunkings(THINK_THEN_ANSWER) == ("The user asks for a capital.", "Paris is the capital.", [])


def test_thinking_then_tool_call():
    assert check_all_chunkings(THINK_THEN_CALL) == ("Need the weather.", "", [("get_weather", {"city": "Paris"})])


def test_recipient_before_the_channel():
    assert check_all_chunkings(RECIPIENT_FIRST) == ("", "", [("get_weather", {"city": "Paris"})])


def test_two_tool_calls_keep_their_order_and_client_names():
    # get-time is declared to the model as get_time (a TypeScript name) and comes back as offered.
    assert check_all_chunkings(TWO_CALLS) == ("", "", [("get_weather", {"city": "Paris"}), ("get-time", {})])


def test_a_tool_that_was_not_offered_is_no_call():
    assert check_all_chunkings(UNKNOWN_TOOL) == ("", '{"now":true}', [])
    # Nor is any call when the request offered no tools (generate).
    assert check_all_chunkings(THINK_THEN_CALL, tools=None) == ("Need the weather.", '{"city":"Paris"}', [])


def test_malformed_or_non_object_arguments_are_no_call():
    assert check_all_chunkings(BAD_JSON) == ("", '{"city":"Par', [])
    not_object = BAD_JSON.split("<|message|>")[0] + "<|message|>[1, 2]"
    assert check_all_chunkings(not_object) == ("", "[1, 2]", [])


def test_an_answer_without_any_channel_is_content():
    assert check_all_chunkings(NO_CHANNEL) == ("", NO_CHANNEL, [])
    assert check_all_chunkings("  ") == ("", "  ", [])
    assert check_all_chunkings("<|message|>Hello, world!<|end|>") == ("", "Hello, world!", [])
    assert check_all_chunkings("") == ("", "", [])


def test_commentary_without_recipient_is_content_and_analysis_with_one_is_a_call():
    text = "<|channel|>commentary<|message|>Checking the weather.<|end|>"
    assert check_all_chunkings(text) == ("", "Checking the weather.", [])
    builtin = "<|channel|>analysis to=browser.search<|message|>{\"query\":\"Paris\"}"
    offered = {"type": "function", "function": {"name": "browser.search"}}
    assert check_all_chunkings(builtin, tools=[offered]) == ("", "", [("browser.search", {"query": "Paris"})])


def test_markers_out_of_place_never_show():
    text = ("<|channel|>analysis<|message|>a<|message|>b<|constrain|>c<|channel|>final<|message|>d"
            "<|end|>\n<|end|><|return|><|start|>assistant<|channel|>final<|message|>e<|return|>")
    assert check_all_chunkings(text) == ("abc", "de", [])


def test_prefilled_prompt_continues_its_message():
    assert check_all_chunkings(" more.", prefix="<|start|>assistant<|channel|>final<|message|>") == ("", " more.", [])
    assert check_all_chunkings(" so<|end|>", prefix="<|start|>assistant<|channel|>analysis<|message|>") == \
        (" so", "", [])


def test_header_forms():
    assert parse_header("assistant<|channel|>commentary to=functions.f <|constrain|>json") == \
        ("assistant", "commentary", "functions.f")
    assert parse_header("assistant to=functions.f<|channel|>commentary json") == ("assistant", "commentary",
                                                                                  "functions.f")
    assert parse_header("assistant<|channel|>commentary to=functions.f<|constrain|>json") == \
        ("assistant", "commentary", "functions.f")
    assert parse_header("<|channel|>final") == ("", "final", "")


def test_function_names_as_harmony_declares_them():
    tools = [{"type": "function", "function": {"name": n}} for n in
             ("get-weather", "get.weather", "9lives", "a b$c!", "python", "", "get_weather")]
    names = FunctionNames(tools)
    declared = [t["function"]["name"] for t in names.for_prompt()]
    assert declared == ["get_weather", "get_weather_2", "_9lives", "a_b$c", "python", "", "get_weather_3"]
    assert tools[0]["function"]["name"] == "get-weather", "the request's tools are not changed"
    assert names.offered("functions.get_weather_2") == "get.weather"
    assert names.offered("get_weather") == "get-weather"
    assert names.offered("python") == "python"
    assert names.offered("browser.search") is None
    assert names.offered("functions.unknown") is None
    assert FunctionNames(None).for_prompt() is None


def test_which_models_speak_harmony():
    jinja = "{{- '<|start|>system<|message|>' }}...{{- '<|end|>' }}<|start|>assistant"
    go = "<|start|>system<|message|>{{ .System }}<|end|>{{ range .Messages }}{{ end }}<|start|>assistant"
    assert uses_harmony("gpt-oss", jinja) and uses_harmony("gptoss", go)
    assert not uses_harmony("llama", go), "the markers alone are not enough (Ollama asks the family)"
    assert not uses_harmony("gpt-oss", "{{ .Prompt }}"), "a gpt-oss with a plain template is read plainly"
    assert uses_harmony("llama", "{{ .Prompt }}", parser="harmony"), "a config that names the parser"


# --- fuzzing: any text, any chunking

PIECES = list(MARKERS) + ["<|", "<|ch", "<|end", "|>", "assistant", " to=functions.get_weather", " to=functions.nope",
                          "analysis", "final", "commentary", "json", " ", "\n", "{\"city\":\"Paris\"}", "{}", "{",
                          "x", "é", "to=", "<"]
texts = st.lists(st.sampled_from(PIECES) | st.text(alphabet="ab |<>{}\n", max_size=3), max_size=16).map("".join)


@st.composite
def chunkings(draw, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=8)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


@fuzz_settings(500)
@given(texts, st.sampled_from([DEFAULT_PREFIX, "", "<|start|>assistant<|channel|>final<|message|>"]), st.data())
@example(THINK_THEN_CALL, DEFAULT_PREFIX, None)
def test_streaming_never_changes_the_result(text, prefix, data):
    with time_limit(10.0):
        whole, pieces = run(text, prefix=prefix)
        chunks = data.draw(chunkings(text)) if data is not None else [text[:5], text[5:20], text[20:]]
        assert run(chunks, prefix=prefix)[0] == whole, chunks
        assert run(list(text), prefix=prefix)[0] == whole, "one character at a time"
        thinking, content, _ = whole
        assert is_subsequence(thinking, text) and is_subsequence(content, text), "only markers and headers go"
        # A marker the model wrote is never shown, whole or cut.
        for piece in pieces + run(list(text), prefix=prefix)[1]:
            assert not any(m in piece for m in MARKERS), piece


def is_subsequence(part: str, whole: str) -> bool:
    letters = iter(whole)
    return all(ch in letters for ch in part)
