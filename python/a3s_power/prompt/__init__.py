"""Prompt building: chat templates (Jinja from GGUF files, Go from Ollama models), output formats
as grammars, and the parsing of tool calls and thinking out of model output."""

from .chat_template import ChatTemplate, TemplateError
from .gotemplate import GoTemplate, TemplateList, TemplateRecord, template_data
from .json_schema import JSON_GRAMMAR, InvalidSchemaError, schema_to_gbnf
from .thinking import ThinkingParser, thinking_tags_for
from .tools import ToolCall, ToolCallParser, tool_format_for

__all__ = [
    "ChatTemplate",
    "TemplateError",
    "GoTemplate",
    "TemplateList",
    "TemplateRecord",
    "template_data",
    "JSON_GRAMMAR",
    "InvalidSchemaError",
    "schema_to_gbnf",
    "ThinkingParser",
    "thinking_tags_for",
    "ToolCall",
    "ToolCallParser",
    "tool_format_for",
]
