"""Go templates as Ollama renders them: the language, Ollama's data and real model templates."""

from __future__ import annotations

import datetime
import json

import pytest

from a3s_power.prompt.chat_template import TemplateError
from a3s_power.prompt.gotemplate import GoTemplate, go_json, template_data
from tests import ollama_templates as T


def render(source: str, data=None) -> str:
    return GoTemplate(source).render({} if data is None else data)


# --- conversations shared by the template tests ------------------------------------------------

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
HELLO = {"role": "user", "content": "Hello, how are you?"}
GREAT = {"role": "assistant", "content": "I'm doing great. How can I help you today?"}
SHOW = {"role": "user", "content": "I'd like to show off how chat templating works!"}

# Field order as Ollama's Go structs encode it, so that golden renders match byte for byte.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather information for a location",
        "parameters": {
            "type": "object",
            "required": ["location"],
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "description": "The unit of temperature to use",
                         "enum": ["celsius", "fahrenheit"]},
            },
        },
    },
}
WEATHER_TOOL_JSON = (
    '{"type":"function","function":{"name":"get_weather","description":"Get current weather information for a '
    'location","parameters":{"type":"object","required":["location"],"properties":{"location":{"type":"string",'
    '"description":"The city and state, e.g. San Francisco, CA"},"unit":{"type":"string","description":"The unit '
    'of temperature to use","enum":["celsius","fahrenheit"]}}}}}'
)
WEATHER_FUNCTION_JSON = WEATHER_TOOL_JSON[len('{"type":"function","function":'):-1]
QUESTION = {"role": "user", "content": "What is the weather in San Francisco?"}
CALL = {"role": "assistant", "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"location": "San Francisco, CA"}}}]}
RESULT_TEXT = '{"temperature": 22, "condition": "Sunny", "humidity": 45, "wind_speed": 10}'
RESULT = {"role": "tool", "content": RESULT_TEXT, "tool_name": "get_weather"}


# --- golden renders from Ollama's repository (template/testdata) --------------------------------

@pytest.mark.parametrize("source, expected", [
    (T.CHATML, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello, how are you?"
               "<|im_end|>\n<|im_start|>assistant\nI'm doing great. How can I help you today?<|im_end|>\n"
               "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n<|im_start|>assistant\n"),
    (T.LLAMA3, "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nHello, how are you?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nI'm doing great. How can I help you today?<|eot_id|>"
               "<|start_header_id|>user<|end_header_id|>\n\nI'd like to show off how chat templating works!<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    (T.PHI3, "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello, how are you?<|end|>\n<|assistant|>\n"
             "I'm doing great. How can I help you today?<|end|>\n<|user|>\nI'd like to show off how chat templating "
             "works!<|end|>\n<|assistant|>\n"),
], ids=["chatml", "llama3", "phi3"])
def test_golden_system_user_assistant_user(source, expected):
    assert GoTemplate(source).render(template_data([SYSTEM, HELLO, GREAT, SHOW])) == expected


COMMAND_R_PREAMBLE = (
    "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|># Safety Preamble\nThe instructions in this section override those in "
    "the task description and style guide sections. Don't answer questions that are harmful or immoral.\n\n"
    "# System Preamble\n## Basic Rules\nYou are a powerful conversational AI trained by Cohere to help people. You "
    "are augmented by a number of tools, and your job is to use and consume the output of these tools to best help "
    "the user. You will see a conversation history between yourself and a user, ending with an utterance from the "
    "user. You will then see a specific instruction instructing you what kind of response to generate. When you "
    "answer the user's requests, you cite your sources in your answers, according to those instructions.\n\n\n\n"
    "## Available Tools\nHere is a list of tools that you have available to you:\n\n```python\n"
    "def get_weather(location: string, unit: string, ) -> List[Dict]:\n"
    "    '''Get current weather information for a location\n\n    Args:\n"
    "        location (string): The city and state, e.g. San Francisco, CA\n"
    "        unit (string): The unit of temperature to use\n    '''\n    pass\n```<|END_OF_TURN_TOKEN|>"
)
COMMAND_R_END = "<|END_OF_TURN_TOKEN|><|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>\n"
DEEPSEEK_TOOLS = (
    "\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with "
    "function signatures within <tools></tools> XML tags:\n<tools>\n" + WEATHER_FUNCTION_JSON + "\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    "XML tags."
)


@pytest.mark.parametrize("source, messages, tools, expected", [
    (T.COMMAND_R, [], [WEATHER_TOOL], COMMAND_R_PREAMBLE + COMMAND_R_END),
    (T.COMMAND_R, [CALL], None,
     "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>\nAction: ```json\n[\n    {\n        \"tool_name\": \"get_weather\",\n"
     "        \"parameters\": {\"location\":\"San Francisco, CA\"}\n    }\n]```<|END_OF_TURN_TOKEN|>" + COMMAND_R_END),
    (T.COMMAND_R, [RESULT], None,
     "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><results>\nconsole_output: " + RESULT_TEXT
     + "\n</results><|END_OF_TURN_TOKEN|>" + COMMAND_R_END),
    (T.DEEPSEEK, [], [WEATHER_TOOL], DEEPSEEK_TOOLS),
    (T.DEEPSEEK, [CALL], None,
     "<\uff5cAssistant\uff5c>\n<\uff5ctool\u2581calls\u2581begin\uff5c>\n"
     "<\uff5ctool\u2581call\u2581begin\uff5c>function"
     "<\uff5ctool\u2581sep\uff5c>get_weather\n```json\n{\"location\":\"San Francisco, CA\"}\n```"
     "<\uff5ctool\u2581call\u2581end\uff5c>\n<\uff5ctool\u2581calls\u2581end\uff5c>"
     "<\uff5cend\u2581of\u2581sentence\uff5c>"),
    (T.DEEPSEEK, [RESULT], None,
     "\n<\uff5ctool\u2581output\u2581begin\uff5c>" + RESULT_TEXT + "<\uff5ctool\u2581output\u2581end\uff5c>\n"
     "<\uff5cAssistant\uff5c>"),
], ids=["command-r-tools", "command-r-call", "command-r-result", "deepseek-tools", "deepseek-call", "deepseek-result"])
def test_golden_tools(source, messages, tools, expected):
    assert GoTemplate(source).render(template_data(messages, tools=tools)) == expected


def test_deepseek_think_false_closes_thinking_and_history_thinking_is_shown_only_when_set():
    template = GoTemplate(T.DEEPSEEK)
    user = {"role": "user", "content": "hi"}
    assert template.render(template_data([user])) == "<\uff5cUser\uff5c>hi<\uff5cAssistant\uff5c>"
    assert template.render(template_data([user], think=True)) == "<\uff5cUser\uff5c>hi<\uff5cAssistant\uff5c>"
    assert (template.render(template_data([user], think=False))
            == "<\uff5cUser\uff5c>hi<\uff5cAssistant\uff5c><think> </think>\n    ")
    prefill = {"role": "assistant", "content": "So", "thinking": "Let me see."}
    assert (template.render(template_data([user, prefill], think=True))
            == "<\uff5cUser\uff5c>hi<\uff5cAssistant\uff5c><think>\n        Let me see.\n      </think>So")
    assert template.render(template_data([user, prefill])) == "<\uff5cUser\uff5c>hi<\uff5cAssistant\uff5c>So"


# --- Ollama library templates -------------------------------------------------------------------

LLAMA31_SYSTEM_WITH_TOOLS = (
    "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.\n\nCutting Knowledge Date: December "
    "2023\n\nWhen you receive a tool call response, use the output to format an answer to the orginal user question."
    "\n\nYou are a helpful assistant with tool calling capabilities.<|eot_id|>"
)


def test_llama31_offers_tools_in_the_last_user_turn():
    text = GoTemplate(T.LLAMA31).render(template_data([SYSTEM, QUESTION], tools=[WEATHER_TOOL]))
    assert text == (
        LLAMA31_SYSTEM_WITH_TOOLS
        + "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for "
        "a function call with its proper arguments that best answers the given prompt.\n\nRespond in the format "
        '{"name": function name, "parameters": dictionary of argument name and its value}. Do not use variables.\n\n'
        + WEATHER_TOOL_JSON + "\n\nQuestion: What is the weather in San Francisco?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama31_renders_a_call_and_its_result():
    text = GoTemplate(T.LLAMA31).render(template_data([SYSTEM, QUESTION, CALL, RESULT], tools=[WEATHER_TOOL]))
    assert text == (
        LLAMA31_SYSTEM_WITH_TOOLS
        + "<|start_header_id|>user<|end_header_id|>\n\nWhat is the weather in San Francisco?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        '{"name": "get_weather", "parameters": {"location":"San Francisco, CA"}}<|eot_id|>'
        "<|start_header_id|>ipython<|end_header_id|>\n\n" + RESULT_TEXT + "<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama31_plain_conversation_has_no_tool_text():
    text = GoTemplate(T.LLAMA31).render(template_data([SYSTEM, HELLO, GREAT, SHOW]))
    assert text == (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello, how are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nI'm doing great. How can I help you today?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nI'd like to show off how chat templating works!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


QWEN_TOOLS_SYSTEM = (
    "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with "
    "the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": ' + WEATHER_FUNCTION_JSON + "}\n</tools>\n\nFor each function call, return a "
    "json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)


def test_qwen25_tools_call_and_result():
    text = GoTemplate(T.QWEN25).render(template_data([SYSTEM, QUESTION, CALL, RESULT], tools=[WEATHER_TOOL]))
    assert text == (
        QWEN_TOOLS_SYSTEM
        + "<|im_start|>user\nWhat is the weather in San Francisco?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"location":"San Francisco, CA"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n" + RESULT_TEXT + "\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_qwen25_two_calls_from_openai_style_string_arguments():
    two_calls = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'}},
    ]}
    text = GoTemplate(T.QWEN25).render(template_data([QUESTION, two_calls]))
    assert text == (
        "<|im_start|>user\nWhat is the weather in San Francisco?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"location":"Paris"}}\n'
        '{"name": "get_weather", "arguments": {"location":"Rome"}}\n</tool_call>'
    )


def test_qwen25_without_messages_uses_prompt_and_response():
    template = GoTemplate(T.QWEN25)
    assert (template.render({"System": "Be terse.", "Prompt": "Hi", "Response": ""})
            == "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert (template.render({"Prompt": "Hi", "Response": "Hello"})
            == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>")


def test_mistral_lists_tools_and_system_before_the_last_user_turn():
    text = GoTemplate(T.MISTRAL).render(template_data([SYSTEM, HELLO, GREAT, QUESTION], tools=[WEATHER_TOOL]))
    assert text == (
        "[INST] Hello, how are you?[/INST] I'm doing great. How can I help you today?</s>"
        "[AVAILABLE_TOOLS] [" + WEATHER_TOOL_JSON + "][/AVAILABLE_TOOLS]"
        "[INST] You are a helpful assistant.\n\nWhat is the weather in San Francisco?[/INST] "
    )


def test_mistral_tool_calls_and_results():
    text = GoTemplate(T.MISTRAL).render(template_data([QUESTION, CALL, RESULT], tools=[WEATHER_TOOL]))
    # The tool list goes only before the last message when that is a user turn, so not here.
    assert text == (
        "[INST] What is the weather in San Francisco?[/INST]"
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"location":"San Francisco, CA"}}]</s>'
        '[TOOL_RESULTS] {"content": ' + RESULT_TEXT + "} [/TOOL_RESULTS] "
    )


def test_gemma_folds_system_into_a_user_turn():
    text = GoTemplate(T.GEMMA).render(template_data([SYSTEM, HELLO, GREAT, SHOW]))
    assert text == (
        "<start_of_turn>user\nYou are a helpful assistant.<end_of_turn>\n"
        "<start_of_turn>user\nHello, how are you?<end_of_turn>\n"
        "<start_of_turn>model\nI'm doing great. How can I help you today?<end_of_turn>\n"
        "<start_of_turn>user\nI'd like to show off how chat templating works!<end_of_turn>\n<start_of_turn>model\n"
    )


def test_gemma_continues_a_last_assistant_message():
    text = GoTemplate(T.GEMMA).render(template_data([HELLO, {"role": "assistant", "content": "Well,"}]))
    assert text == "<start_of_turn>user\nHello, how are you?<end_of_turn>\n<start_of_turn>model\nWell,"


@pytest.mark.parametrize("think, ending", [
    (None, "2+2?<|im_end|>\n<|im_start|>assistant\n"),
    (True, "2+2? /think<|im_end|>\n<|im_start|>assistant\n"),
    (False, "2+2? /no_think<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
])
def test_qwen3_think_switches(think, ending):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "thinking": "greet"},
                {"role": "user", "content": "2+2?"}]
    text = GoTemplate(T.QWEN3).render(template_data(messages, think=think))
    # Earlier reasoning is dropped; only the last user turn carries the switch.
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\n" + ending


def test_qwen3_keeps_reasoning_after_the_last_user_turn():
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": "", "thinking": "need a tool"}]
    text = GoTemplate(T.QWEN3).render(template_data(messages, think=True))
    assert text == "<|im_start|>user\nweather? /think<|im_end|>\n<|im_start|>assistant\n<think>need a tool</think>\n"


# --- Ollama's execution of old-style templates (render_chat) ------------------------------------

def test_legacy_phi3_runs_once_per_exchange_and_leaves_the_answer_open():
    text = GoTemplate(T.PHI3_LEGACY).render_chat([SYSTEM, HELLO, GREAT, SHOW])
    assert text == (
        "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello, how are you?<|end|>\n<|assistant|>\n"
        "I'm doing great. How can I help you today?<|end|><|user|>\nI'd like to show off how chat templating works!"
        "<|end|>\n<|assistant|>\n"
    )


def test_legacy_chatml_gets_response_appended_and_system_only_once():
    template = GoTemplate(T.CHATML_LEGACY)
    assert template.render_chat([SYSTEM, HELLO]) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello, how are you?<|im_end|>\n"
        "<|im_start|>assistant\n")
    # With no {{ .Response }} of its own, the earlier answer is appended after each exchange.
    assert template.render_chat([HELLO, GREAT, SHOW]) == (
        "<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\n"
        "I'm doing great. How can I help you today?"
        "<|im_start|>user\nI'd like to show off how chat templating works!<|im_end|>\n<|im_start|>assistant\n")


def test_render_chat_with_messages_template_matches_render():
    template = GoTemplate(T.QWEN25)
    messages = [SYSTEM, QUESTION, CALL, RESULT]
    assert template.render_chat(messages, tools=[WEATHER_TOOL]) == template.render(
        template_data(messages, tools=[WEATHER_TOOL]))


def test_render_chat_fill_in_the_middle():
    template = GoTemplate("{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n"
                          "{{- else }}{{ .Prompt }}\n{{- end }}")
    assert template.render_chat([], prompt="def add(", suffix="return x") == "<PRE> def add( <SUF>return x <MID>"
    assert template.render_chat([{"role": "user", "content": "hello"}]) == "hello"


# --- template_data ------------------------------------------------------------------------------

def test_template_data_collates_like_ollama():
    data = template_data([
        {"role": "system", "content": "A"}, {"role": "system", "content": "B"},
        {"role": "user", "content": "Hello"}, {"role": "user", "content": "How are you?"},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "tool", "content": "72F", "tool_name": "get_temperature"},
    ])
    assert data["System"] == "A\n\nB"
    assert [(m["role"], m["content"]) for m in data["Messages"]] == [
        ("system", "A\n\nB"), ("user", "Hello\n\nHow are you?"), ("tool", "sunny"), ("tool", "72F")]
    assert [m.field("ToolName") for m in data["Messages"]] == ["", "", "get_weather", "get_temperature"]
    assert template_data([SYSTEM], system="Override")["System"] == "Override"


def test_template_data_think_values():
    assert {k: template_data([], think=None)[k] for k in ("Think", "IsThinkSet")} == {"Think": False,
                                                                                      "IsThinkSet": False}
    assert {k: template_data([], think=False)[k] for k in ("Think", "IsThinkSet")} == {"Think": False,
                                                                                       "IsThinkSet": True}
    level = template_data([], think=True, think_level="high")
    assert (level["Think"], level["IsThinkSet"], level["ThinkLevel"]) == (True, True, "high")
    source = "{{ if .IsThinkSet }}{{ if .Think }}on:{{ .ThinkLevel }}{{ else }}off{{ end }}{{ else }}unset{{ end }}"
    assert [render(source, template_data([], think=v, think_level=lv))
            for v, lv in [(None, ""), (False, ""), (True, "low")]] == ["unset", "off", "on:low"]


def test_records_use_go_field_names_but_print_their_own_json():
    data = template_data([CALL, RESULT], tools=[WEATHER_TOOL])
    source = ("{{ range .Tools }}{{ .Type }}|{{ .Function.Name }}|{{ index .Function.Parameters.Required 0 }}|"
              "{{ json .Function.Parameters.Properties.unit.Enum }}|{{ json . }}{{ end }}"
              "{{ range .Messages }}/{{ .Role }}:{{ .ToolName }}:{{ len .ToolCalls }}{{ end }}")
    assert render(source, data) == ("function|get_weather|location|[\"celsius\",\"fahrenheit\"]|" + WEATHER_TOOL_JSON
                                    + "/assistant::1/tool:get_weather:0")
    assert render("{{ .Tools }}", data) == "[" + WEATHER_TOOL_JSON + "]"
    assert json.loads(render("{{ json .Tools }}", data)) == [WEATHER_TOOL]


def test_openai_content_parts_and_tool_name_from_name():
    data = template_data([
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "image_url", "image_url": {}},
                                     {"type": "text", "text": "this?"}]},
        {"role": "tool", "name": "lookup", "content": "x"},
    ])
    text = render("{{ range .Messages }}[{{ .Content }}|{{ .ToolName }}]{{ end }}", data)
    assert text == "[What is this?|][x|lookup]"


# --- the template language ----------------------------------------------------------------------

@pytest.mark.parametrize("source, data, expected", [
    ("{{ .A }}-{{ .B.C }}-{{ .Missing }}-{{ .Missing.Deeper }}", {"A": "a", "B": {"C": 3}}, "a-3--"),
    ("{{ $ }}", "root", "root"),
    ("{{ $x := .A }}{{ $x }}{{ $x = \"z\" }}{{ $x }}", {"A": "y"}, "yz"),
    ("{{ with .A }}{{ . }}{{ else }}none{{ end }}|{{ with .B }}{{ . }}{{ else }}none{{ end }}", {"A": "x", "B": ""},
     "x|none"),
    ("{{ with $v := .A }}{{ $v }}{{ end }}", {"A": 5}, "5"),
    ("{{ if .A }}a{{ else if .B }}b{{ else if .C }}c{{ else }}d{{ end }}", {"C": 1}, "c"),
    ("{{ if .A }}a{{ else if .B }}b{{ else }}d{{ end }}", {}, "d"),
    ("{{ range .L }}[{{ . }}]{{ end }}", {"L": ["x", "y"]}, "[x][y]"),
    ("{{ range $i, $e := .L }}{{ $i }}={{ $e }};{{ end }}", {"L": ["x", "y"]}, "0=x;1=y;"),
    ("{{ range $e := .L }}{{ $e }}{{ end }}", {"L": ["x", "y"]}, "xy"),
    ("{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}", {"M": {"b": 2, "a": 1}}, "a=1;b=2;"),
    ("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
    ("{{ range .Nothing }}x{{ else }}empty{{ end }}", {}, "empty"),
    ("{{ range 3 }}{{ . }}{{ end }}", {}, "012"),
    ("{{ range .L }}{{ if eq . 3 }}{{ break }}{{ end }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ . }}{{ end }}",
     {"L": [0, 1, 2, 3, 4]}, "02"),
    ("{{ range $i, $_ := .L }}{{ $i }}{{ end }}{{ $.T }}", {"L": [7, 8], "T": "!"}, "01!"),
    ("a  {{- .X -}}  b", {"X": "x"}, "axb"),
    ("a {{-3}} b", {}, "a -3 b"),  # a trim marker needs a space after it; this is minus three
    ("a \n {{- /* a comment */ -}} \n b", {}, "ab"),
    ("a{{/* comment */}}b", {}, "ab"),
    ("{{ -3 }} {{ 1.5 }} {{ 0x1F }} {{ 'a' }} {{ 1e3 }}", {}, "-3 1.5 31 97 1000"),
    ('{{ "tab\\there" }}|{{ `raw\\n` }}|{{ "\\u00e9" }}', {}, "tab\there|raw\\n|\u00e9"),
    ("{{ true }} {{ false }} {{ print nil }}", {}, "true false <nil>"),
    ("{{ .A | printf \"%s!\" }}", {"A": "hi"}, "hi!"),
    ("{{ \"x\" | printf \"%s-%s\" \"y\" }}", {}, "y-x"),
    ("{{ (index .L 1).Name }}", {"L": [{"Name": "a"}, {"Name": "b"}]}, "b"),
    ("{{ len (slice .L 1) }} {{ slice .S 1 3 }} {{ len .S }} {{ len .M }}",
     {"L": [1, 2, 3], "S": "h\u00e9llo", "M": {"a": 1}}, "2 \u00e9 6 1"),
    ("{{ index .M \"k\" }}{{ index .L 0 1 }}{{ index .M \"nope\" }}", {"M": {"k": "v"}, "L": [[1, 2]]}, "v2"),
    ("{{ define \"item\" }}<{{ . }}>{{ end }}{{ range .L }}{{ template \"item\" . }}{{ end }}", {"L": [1, 2]},
     "<1><2>"),
    ("{{ block \"greet\" .Name }}Hello, {{ . }}{{ end }}!", {"Name": "Ann"}, "Hello, Ann!"),
    ("{{ .L }} {{ .M }} {{ .F }} {{ .Big }} {{ .Small }}",
     {"L": [1, "a", True], "M": {"b": 1, "a": [2]}, "F": 2.0, "Big": 1e21, "Small": 0.00001},
     "[1 a true] map[a:[2] b:1] 2 1e+21 1e-05"),
])
def test_language(source, data, expected):
    assert render(source, data) == expected


@pytest.mark.parametrize("source, expected", [
    ("{{ and 1 0 2 }}|{{ and 1 2 }}|{{ or 0 \"\" 3 }}|{{ or 0 \"\" }}|{{ not 0 }}|{{ not \"x\" }}",
     "0|2|3||true|false"),
    ("{{ eq 1 2 3 1 }}|{{ eq \"a\" \"b\" }}|{{ ne 1 2 }}|{{ lt 1 2 }}|{{ le 2 2 }}|{{ gt \"b\" \"a\" }}|{{ ge 1 2 }}",
     "true|false|true|true|true|true|false"),
    ("{{ eq .Missing nil }}|{{ eq .Missing \"x\" }}", "true|false"),
    ("{{ print 1 2 \"a\" \"b\" 3 }}|{{ println 1 \"a\" }}|{{ print }}", "1 2ab3|1 a\n|"),
    ("{{ printf \"%d %5s|%-4s|%q %v %t %x %.2f %05d %%\" 42 \"ab\" \"c\" \"q\" .L true 255 3.14159 -42 }}",
     "42    ab|c   |\"q\" [1 2] true ff 3.14 -0042 %"),
    ("{{ printf \"%s %s\" \"only\" }}|{{ printf \"%d\" 1 2 }}", "only %!s(MISSING)|1%!(EXTRA int=2)"),
    ("{{ html \"<a href='x'>&\\\"\" }}", "&lt;a href=&#39;x&#39;&gt;&amp;&#34;"),
    ("{{ js \"it's <b>\" }}", "it\\'s \\u003Cb\\u003E"),
    ("{{ urlquery \"a b&c/é\" }}", "a+b%26c%2F%C3%A9"),
    ("{{ call .F 2 3 }}", "5"),
    ("{{ json .J }}", '{"s":"\\u003ctag\\u003e \\u0026 \\"q\\"\\n","n":[1,2.5,1e-7,100000000000000000000],"b":true,'
                      '"z":null,"u":"caf\u00e9"}'),
    ("{{ toTypeScriptType .P.a }}|{{ toTypeScriptType .P.b }}|{{ toTypeScriptType .P.c }}|{{ toTypeScriptType .P.d }}"
     "|{{ toTypeScriptType .P.e }}|{{ toTypeScriptType .P.f }}",
     'string | null|number|string[]|"x" | "y"|Record<string, any>|any'),
])
def test_functions(source, expected):
    data = {"L": [1, 2], "F": lambda a, b: a + b,
            "J": {"s": "<tag> & \"q\"\n", "n": [1, 2.5, 1e-7, 1e20], "b": True, "z": None, "u": "caf\u00e9"},
            "P": {"a": {"type": ["string", "null"]}, "b": {"type": "integer"},
                  "c": {"type": "array", "items": {"type": "string"}}, "d": {"type": "string", "enum": ["x", "y"]},
                  "e": {"type": "object"}, "f": {}}}
    assert render(source, data) == expected


def test_dates():
    today = datetime.date.today()
    text = render("{{ currentDate }} {{ yesterdayDate }}")
    # Straddling midnight is the only way these can disagree; allow that one case.
    assert text in (f"{today} {today - datetime.timedelta(days=1)}",
                    f"{today + datetime.timedelta(days=1)} {today}")


def test_and_or_stop_at_the_deciding_operand():
    calls = []

    def probe(value):
        calls.append(value)
        return value

    assert render("{{ and (call .P 0) (call .P 1) }}{{ or (call .P 2) (call .P 3) }}", {"P": probe}) == "02"
    assert calls == [0, 2]


def test_variables_are_scoped_to_their_block():
    source = "{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}"
    assert render(source) == "21"
    assert render("{{ $x := 1 }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}", {"L": [5, 6]}) == "6"


def test_go_json_matches_go_encoding():
    assert go_json({"a": [1.0, -0.5, 3], "b": "\u2028<"}) == '{"a":[1,-0.5,3],"b":"\\u2028\\u003c"}'
    assert go_json(float("nan")) == ""


def test_fields_of_objects_and_dataclasses():
    from dataclasses import dataclass

    @dataclass
    class Call:
        name: str
        arguments: dict

    assert render("{{ .C.Name }} {{ json .C }}", {"C": Call("f", {"x": 1})}) == 'f {"name":"f","arguments":{"x":1}}'


@pytest.mark.parametrize("source, message", [
    ("{{ .A ", "unclosed action"),
    ("{{ if .A }}x", "EOF"),
    ("{{ end }}", "unexpected"),
    ("{{ else }}", "unexpected"),
    ("{{ nope .A }}", "function 'nope' not defined"),
    ("{{ $undefined }}", "undefined variable"),
    ("{{ break }}", "outside"),
    ("{{ \"unterminated }}", "unterminated"),
    ("{{ (print 1 }}", "paren"),
    ("{{ }}", "missing value"),
    ("{{ .A | }}", "missing command"),
    ("{{/* open", "unclosed comment"),
    ("x\n\n{{ if }}", "template: 3:"),
    ("{{ range .L }}{{ else if .A }}{{ end }}", "if"),
    ("{{ 1.2.3 }}", "number"),
])
def test_parse_errors(source, message):
    with pytest.raises(TemplateError, match=message):
        GoTemplate(source)


@pytest.mark.parametrize("source, data, message", [
    ("{{ .A.B }}", {"A": "text"}, "can't evaluate field B"),
    ("{{ index .L 5 }}", {"L": [1]}, "out of range"),
    ("{{ eq 1 \"1\" }}", {}, "incompatible types"),
    ("{{ lt .L 1 }}", {"L": [1]}, "incompatible types"),
    ("{{ len 3 }}", {}, "len of type int"),
    ("{{ range .S }}{{ end }}", {"S": "abc"}, "can't iterate"),
    ("{{ template \"missing\" }}", {}, "no such template"),
    ("{{ .A 1 }}", {"A": "x"}, "non-function"),
    ("{{ not }}", {}, "not"),
    ("{{ define \"loop\" }}{{ template \"loop\" }}{{ end }}{{ template \"loop\" }}", {}, "depth"),
])
def test_execution_errors(source, data, message):
    with pytest.raises(TemplateError, match=message):
        render(source, data)


def test_identifiers_decide_the_execution_path():
    assert GoTemplate(T.QWEN25).uses_messages
    assert not GoTemplate(T.PHI3_LEGACY).uses_messages
    assert {"system", "prompt", "response"} <= GoTemplate(T.PHI3_LEGACY).identifiers
