"""a3s_power.api: the request and answer types, without the engine."""

import subprocess
import sys

import pytest
from pydantic import BaseModel, ValidationError

from a3s_power.api import ChatRequest, ChatResponse, Delta, EmbedRequest, GenerateRequest, Message, Tool, ToolCall


def test_api_imports_nothing_of_the_engine_config_or_io():
    code = ("import sys, a3s_power.api; bad = [m for m in sys.modules if m.startswith('a3s_power.') and m not in "
            "('a3s_power.version', 'a3s_power.timefmt') and not m.startswith('a3s_power.api')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_messages_read_as_ollama_reads_them():
    m = Message.model_validate({"role": "USER", "content": None, "name": "kept"})
    assert m.role == "user" and m.content == ""
    assert m.for_prompt() == {"role": "user", "content": "", "name": "kept"}  # nothing unset added
    call = ToolCall.model_validate({"function": {"name": "f", "arguments": '{"x": 1}'}})
    assert call.name == "f" and call.arguments == {"x": 1}
    assert Message(role="user", images=[b"\x00\x01"]).model_dump(mode="json")["images"] == ["AAE="]


def test_format_takes_a_pydantic_model_class():
    class City(BaseModel):
        name: str

    request = ChatRequest(model="m", format=City)
    assert request.format == City.model_json_schema()
    assert ChatRequest(model="m", format="").format is None
    with pytest.raises(ValidationError):
        ChatRequest(model="m", format="yaml")


def test_tools_from_python_functions():
    def weather(city: str, days: int = 1) -> str:
        """The weather in a city.

        Longer text that the model does not need."""
        return ""

    tool = ChatRequest(model="m", tools=[weather]).tools[0]
    assert tool.for_prompt() == {"type": "function", "function": {
        "name": "weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]}}}
    assert Tool.model_validate({"function": {"name": "f"}}).for_prompt() == {"type": "function",
                                                                            "function": {"name": "f"}}


def test_bad_values_are_refused_with_their_name():
    for bad in ({"options": {"temperature": "hot"}}, {"options": {"num_ctx": True}}, {"top_logprobs": 50},
                {"think": "very"}, {"keep_alive": "soon"}, {"unknown": 1}):
        with pytest.raises(ValidationError) as err:
            GenerateRequest(model="m", **bad)
        assert next(iter(bad)) in str(err.value)
    assert EmbedRequest(model="m", input="one").input == ["one"]


def test_a_whole_answer_from_its_deltas():
    deltas = [Delta(thinking="hm", metrics={"prompt_eval_count": 3}), Delta(content="Hel"),
              Delta(content="lo", tool_calls=[ToolCall.of("f", {"x": 1}, "call_1")], done=True, done_reason="stop",
                    metrics={"prompt_eval_count": 3, "eval_count": 2})]
    whole = ChatResponse.from_deltas("m", deltas)
    assert whole.message.content == "Hello" and whole.message.thinking == "hm"
    assert whole.message.tool_calls[0].arguments == {"x": 1}
    assert whole.metrics.reported() == {"prompt_eval_count": 3, "eval_count": 2}
