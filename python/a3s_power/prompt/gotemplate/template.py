"""The public interface: :class:`GoTemplate` parses a template once and renders it over any data,
or over a conversation as Ollama does (:meth:`GoTemplate.render_chat`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..chat_template import TemplateError
from .data import template_data
from .exec import _Executor
from .funcs import _BUILTINS
from .lex import _Lexer
from .parse import _Action, _Branch, _Chain, _Command, _Field, _Parser, _Pipe, _TemplateCall, _Variable


def _identifiers(nodes: list[Any]) -> set[str]:
    """Every field and variable name a template mentions, lower-cased (Ollama's Template.Vars)."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for child in node:
                visit(child)
        elif isinstance(node, _Action):
            visit(node.pipe)
        elif isinstance(node, _Pipe):
            for cmd in node.cmds:
                visit(cmd.args)
        elif isinstance(node, _Branch):
            visit(node.pipe)
            visit(node.body)
            if node.else_body is not None:
                visit(node.else_body)
        elif isinstance(node, _TemplateCall):
            if node.pipe is not None:
                visit(node.pipe)
        elif isinstance(node, _Field):
            found.update(n.lower() for n in node.names)
        elif isinstance(node, _Variable):
            found.add(node.name.lower())
            found.update(n.lower() for n in node.names)
        elif isinstance(node, _Chain):
            visit(node.node)
            found.update(n.lower() for n in node.names)

    visit(nodes)
    return found


def _mentions_response(node: Any) -> bool:
    if isinstance(node, _Action):
        return any(isinstance(a, _Field) and "Response" in a.names for cmd in node.pipe.cmds for a in cmd.args)
    return False


def _cut_after_response(nodes: list[Any], state: dict[str, bool]) -> list[Any]:
    """Ollama's last-turn rendering of an old-style template: everything after the first
    ``{{ .Response }}`` goes, so the prompt ends where the model's answer begins."""
    kept = []
    for node in nodes:
        if state["cut"]:
            break
        if _mentions_response(node):
            state["cut"] = True
            kept.append(node)
        elif isinstance(node, _Branch):
            body = _cut_after_response(node.body, state)
            else_body = None
            if node.else_body is not None:
                else_body = [] if state["cut"] else _cut_after_response(node.else_body, state)
            kept.append(_Branch(node.kind, node.pipe, body, else_body))
        else:
            kept.append(node)
    return kept


_RESPONSE_ACTION = _Action(_Pipe([], False, [_Command([_Field(["Response"])])]))


class GoTemplate:
    """A parsed Go template. ``render`` executes it over any data; ``render_chat`` does what
    Ollama does with a conversation."""

    def __init__(self, source: str, functions: dict[str, Callable[..., Any]] | None = None) -> None:
        self.source = source.replace("\r\n", "\n")
        self.functions = {**_BUILTINS, **(functions or {})}
        lexer = _Lexer(self.source)
        parser = _Parser(lexer, lexer.run(), self.functions)
        try:
            self.root = parser.parse()
            self.defines = parser.defines
            self.identifiers = _identifiers([self.root, *self.defines.values()])
        except RecursionError:
            # {{((((...1))))}} or thousands of nested {{if}}: the parser and the walks over its
            # tree recurse once per level.
            raise TemplateError("template: nesting too deep") from None

    def render(self, data: Any) -> str:
        out: list[str] = []
        executor = _Executor(self.functions, self.defines, out)
        executor.vars.append(("$", data))
        try:
            executor.walk(self.root, data)
        except TemplateError as e:
            raise TemplateError(str(e) if str(e).startswith("template:") else f"template: {e}") from None
        except RecursionError:
            raise TemplateError("template: exceeded maximum template depth") from None
        return "".join(out)

    @property
    def uses_messages(self) -> bool:
        return "messages" in self.identifiers

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        think: bool | None = None,
        think_level: str = "",
        prompt: str = "",
        suffix: str = "",
    ) -> str:
        """Ollama's Template.Execute: fill-in-the-middle when ``prompt`` and ``suffix`` are both
        given; a template that ranges over ``.Messages`` gets the whole conversation at once; an
        old-style ``.System``/``.Prompt``/``.Response`` template runs once per exchange, the last
        one cut right after ``{{ .Response }}``."""
        data = template_data(messages, tools=tools, think=think, think_level=think_level)
        if prompt and suffix:
            return self.render({"Prompt": prompt, "Suffix": suffix, "Response": "", "Think": data["Think"],
                                "ThinkLevel": think_level, "IsThinkSet": data["IsThinkSet"]})
        if self.uses_messages or "document" in self.identifiers:
            return self.render(data)
        return self._render_exchanges(data)

    def _render_exchanges(self, data: dict[str, Any]) -> str:
        full = list(self.root)
        if "response" not in self.identifiers:
            full.append(_RESPONSE_ACTION)  # Ollama appends {{ .Response }} to such templates
        out: list[str] = []
        turn = {"System": "", "Prompt": "", "Response": ""}

        def execute(nodes: list[Any]) -> None:
            values = {**turn, "Think": data["Think"], "ThinkLevel": data["ThinkLevel"],
                      "IsThinkSet": data["IsThinkSet"]}
            executor = _Executor(self.functions, self.defines, out)
            executor.vars.append(("$", values))
            executor.walk(nodes, values)
            turn.update(System="", Prompt="", Response="")

        try:
            last = _cut_after_response(full, {"cut": False})
            for message in data["Messages"]:
                role = message["role"]
                if role == "system":
                    if turn["Prompt"] or turn["Response"]:
                        execute(full)
                    turn["System"] = message["content"]
                elif role == "user":
                    if turn["Response"]:
                        execute(full)
                    turn["Prompt"] = message["content"]
                elif role == "assistant":
                    turn["Response"] = message["content"]
            execute(last)
        except TemplateError as e:
            raise TemplateError(str(e) if str(e).startswith("template:") else f"template: {e}") from None
        except RecursionError:
            raise TemplateError("template: exceeded maximum template depth") from None
        return "".join(out)
