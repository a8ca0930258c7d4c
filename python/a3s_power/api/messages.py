"""A conversation as every API carries it: messages, their images, tools and tool calls.

The field names are Ollama's (``api.Message``, ``api.Tool``, ``api.ToolCall``), so that the native
wire form is these types' JSON; the other APIs translate to and from them (server/)."""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_serializer, field_validator, model_validator

# An image: its bytes, their base64 text (a data: URL's too), or an http(s) URL, which the server
# fetches before the request reaches the engine (server/images.py).
Image = bytes | str


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    index: int | None = None

    @field_validator("arguments", mode="before")
    @classmethod
    def _from_json_text(cls, value: Any) -> Any:
        # OpenAI-style clients write the arguments as JSON text; Ollama's as an object.
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return {} if value is None else value


class ToolCall(BaseModel):
    """A call the model made (or, in a request's history, had made) to one of the tools."""

    model_config = ConfigDict(extra="allow")

    id: str = ""
    function: ToolCallFunction

    @classmethod
    def of(cls, name: str, arguments: dict[str, Any], id: str = "") -> ToolCall:
        return cls(id=id, function=ToolCallFunction(name=name, arguments=arguments))

    @property
    def name(self) -> str:
        return self.function.name

    @property
    def arguments(self) -> dict[str, Any]:
        return self.function.arguments


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema of an object


class Tool(BaseModel):
    """A function the model may call, as OpenAI and Ollama describe one."""

    model_config = ConfigDict(extra="allow")

    type: str = "function"
    function: ToolFunction

    @model_validator(mode="before")
    @classmethod
    def _typed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data:
            data = {"type": "function", **data}  # set, so that templates always see it
        return data

    @property
    def name(self) -> str:
        return self.function.name

    @classmethod
    def from_function(cls, fn: Callable[..., Any]) -> Tool:
        """A tool described by a Python function: its name, its docstring's first paragraph and a
        JSON Schema of its annotated parameters (through pydantic)."""
        signature = inspect.signature(fn)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for name, param in signature.parameters.items():
            annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
            properties[name] = TypeAdapter(annotation).json_schema()
            if param.default is inspect.Parameter.empty:
                required.append(name)
        doc = inspect.getdoc(fn) or ""
        parameters = {"type": "object", "properties": properties, "required": required}
        return cls(function=ToolFunction(name=fn.__name__, description=doc.split("\n\n")[0].strip(),
                                         parameters=parameters))

    def for_prompt(self) -> dict[str, Any]:
        """The tool as templates see it: what was given, nothing added."""
        return self.model_dump(exclude_unset=True)


class Message(BaseModel):
    """One turn of a conversation. ``role`` is system, user, assistant or tool."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str = ""
    thinking: str | None = None
    images: list[Image] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None  # a tool message: which tool answered
    tool_call_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        # Ollama lowercases roles and reads a missing or null content as "". Content is always
        # set, so templates that test ``message.content is string`` see a string.
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("role"), str):
                data["role"] = data["role"].lower()
            if data.get("content") is None:
                data["content"] = ""
        return data

    @field_serializer("images", when_used="json")
    def _images_as_base64(self, images: list[Image] | None) -> list[str] | None:
        if images is None:
            return None
        return [base64.b64encode(i).decode() if isinstance(i, bytes) else i for i in images]

    def for_prompt(self) -> dict[str, Any]:
        """The message as templates see it: the fields given, none of the unset ones."""
        return self.model_dump(exclude_unset=True, exclude_none=True)
