"""From a request to prompt text: Ollama's Go templates when the model has one (a TEMPLATE layer
or a request's ``template``), else the GGUF's Jinja chat template."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .chat_template import ChatTemplate, TemplateError

if TYPE_CHECKING:
    from .gotemplate import GoTemplate


class PromptTemplate:
    """One model's template, whichever kind it is."""

    def __init__(self, go_source: str | None, jinja_source: str | None, bos_token: str = "",
                 eos_token: str = "") -> None:
        self.go_source = go_source
        self.jinja_source = jinja_source
        self._template: GoTemplate | ChatTemplate
        if go_source is not None:
            from .gotemplate import GoTemplate

            self._template = GoTemplate(go_source)
            self._source = go_source
        else:
            self._template = ChatTemplate(jinja_source, bos_token, eos_token)
            self._source = self._template.source

    @property
    def source(self) -> str:
        return self._source

    def render_chat(self, messages: list[dict[str, Any]], *, tools: list[dict] | None = None,
                    think: bool | None = None, think_level: str = "") -> str:
        template = self._template
        if not isinstance(template, ChatTemplate):
            return template.render_chat(messages, tools=tools, think=think, think_level=_go_level(think, think_level))
        extra: dict[str, Any] = {}
        if think is not None:
            extra["enable_thinking"] = think
            if think_level:
                extra["reasoning_effort"] = think_level
        return template.render(_jinja_messages(messages), tools=tools, add_generation_prompt=True, **extra)

    def render_generate(self, prompt: str, *, system: str = "", suffix: str = "", think: bool | None = None,
                        think_level: str = "") -> str:
        """Ollama's generate: a system message (if any) and the prompt as one user turn."""
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        if not isinstance(self._template, ChatTemplate):
            return self._template.render_chat(messages, think=think, think_level=_go_level(think, think_level),
                                              prompt=prompt, suffix=suffix)
        return self.render_chat(messages, think=think, think_level=think_level)


def _go_level(think: bool | None, level: str) -> str:
    """``.ThinkLevel`` as Ollama fills it: the level asked for, and "medium" for a plain
    ``think: true`` (gpt-oss's template then writes "Reasoning: medium"). Jinja templates get a
    ``reasoning_effort`` only when a level was asked for, as Ollama passes them to llama.cpp."""
    return level or ("medium" if think else "")


def _jinja_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hugging Face templates expect OpenAI-style tool calls, with arguments as objects."""
    out = []
    for m in messages:
        m = dict(m)
        m.setdefault("content", "")
        if m.get("tool_calls"):
            calls = []
            if not isinstance(m["tool_calls"], list) or not all(
                    isinstance(c, dict) and isinstance(c.get("function", {}), dict) for c in m["tool_calls"]):
                raise TemplateError("a message's tool_calls must be a list of objects with a function object")
            for call in m["tool_calls"]:
                fn = dict(call.get("function", {}))
                calls.append({"type": "function", "id": call.get("id", ""), "function": fn})
            m["tool_calls"] = calls
        if m.get("role") == "tool" and m.get("tool_name") and "name" not in m:
            m["name"] = m["tool_name"]
        out.append(m)
    return out
