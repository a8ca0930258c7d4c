"""Execution: a walk over the parse tree that writes the template's output, with Go's semantics
for variables, ``range``, ``break``/``continue``, ``and``/``or`` and nested ``template`` calls."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..chat_template import TemplateError
from . import funcs
from .funcs import _truth
from .parse import (
    _Action,
    _Branch,
    _Break,
    _Chain,
    _Command,
    _Continue,
    _Dot,
    _Field,
    _Identifier,
    _Literal,
    _Pipe,
    _TemplateCall,
    _Text,
    _Variable,
)
from .values import TemplateRecord, _json_key_candidates, _output_text, _type_name, go_format


class _BreakSignal(Exception):
    pass


class _ContinueSignal(Exception):
    pass


_MAX_DEPTH = 100  # well past any real template, well short of Python's recursion limit
_UNSET = object()


def _field_of(value: Any, name: str) -> Any:
    if value is None:
        return None
    if isinstance(value, TemplateRecord):
        return value.field(name)
    if isinstance(value, dict):
        for key in _json_key_candidates(name):
            if key in value:
                return value[key]
        return None
    if isinstance(value, (str, int, float, bool, list, tuple)):
        raise TemplateError(f"can't evaluate field {name} in type {_type_name(value)}")
    attribute = getattr(value, name, _UNSET)
    if attribute is _UNSET:
        for key in _json_key_candidates(name):
            attribute = getattr(value, key, _UNSET)
            if attribute is not _UNSET:
                break
    if attribute is _UNSET or name.startswith("_"):
        raise TemplateError(f"can't evaluate field {name} in type {type(value).__name__}")
    return attribute


class _Executor:
    def __init__(self, functions: dict[str, Callable[..., Any]], defines: dict[str, list[Any]], out: list[str]) -> None:
        self.functions = functions
        self.defines = defines  # {{define "name"}} bodies, for {{template "name"}}
        self.out = out
        self.vars: list[tuple[str, Any]] = []
        self.depth = 0
        self.size = 0  # characters written so far

    # --- variables

    def lookup(self, name: str) -> Any:
        for var, value in reversed(self.vars):
            if var == name:
                return value
        raise TemplateError(f"undefined variable: {name}")

    def assign(self, name: str, value: Any) -> None:
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise TemplateError(f"undefined variable: {name}")

    # --- statements

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > funcs.MAX_OUTPUT:
            raise TemplateError(f"the rendered prompt is larger than {funcs.MAX_OUTPUT >> 20} MiB")
        self.out.append(text)

    def walk(self, nodes: list[Any], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.emit(node.text)
            elif isinstance(node, _Action):
                value = self.pipeline(node.pipe, dot)
                if not node.pipe.decl:
                    self.emit(_output_text(value))
            elif isinstance(node, _Branch):
                self.branch(node, dot)
            elif isinstance(node, _TemplateCall):
                self.call_template(node, dot)
            elif isinstance(node, _Break):
                raise _BreakSignal()
            elif isinstance(node, _Continue):
                raise _ContinueSignal()

    def branch(self, node: _Branch, dot: Any) -> None:
        mark = len(self.vars)
        try:
            if node.kind == "range":
                self.range(node, dot)
                return
            value = self.pipeline(node.pipe, dot)
            if _truth(value):
                self.walk(node.body, value if node.kind == "with" else dot)
            elif node.else_body is not None:
                self.walk(node.else_body, dot)
        finally:
            del self.vars[mark:]

    def range(self, node: _Branch, dot: Any) -> None:
        pipe = node.pipe
        value = self.pipeline(_Pipe([], False, pipe.cmds, pipe.pos), dot)
        items: Iterable[tuple[Any, Any]]
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value, key=lambda k: (str(type(k)), k))]
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if len(pipe.decl) > 1:
                raise TemplateError("can't use a second variable when ranging over an integer")
            # Lazily: {{range 1000000000}} must not build a list before its first step.
            items = ((i, i) for i in range(value)) if value > 0 else []
        elif value is None:
            items = []
        else:
            raise TemplateError(f"range can't iterate over {go_format(value)}")
        ran = False
        for key, element in items:
            ran = True
            mark = len(self.vars)
            if len(pipe.decl) == 1:
                self.bind(pipe, [element])
            elif len(pipe.decl) == 2:
                self.bind(pipe, [key, element])
            try:
                self.walk(node.body, element)
            except _ContinueSignal:
                pass
            except _BreakSignal:
                break
            finally:
                del self.vars[mark:]
        if not ran and node.else_body is not None:
            self.walk(node.else_body, dot)

    def bind(self, pipe: _Pipe, values: list[Any]) -> None:
        for name, value in zip(pipe.decl, values):
            if pipe.is_assign:
                self.assign(name, value)
            else:
                self.vars.append((name, value))

    def call_template(self, node: _TemplateCall, dot: Any) -> None:
        body = self.defines.get(node.name)
        if body is None:
            raise TemplateError(f"no such template {node.name!r}")
        value = self.pipeline(node.pipe, dot) if node.pipe is not None else None
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise TemplateError(f"exceeded maximum template depth ({_MAX_DEPTH})")
        saved = self.vars
        self.vars = [("$", value)]
        try:
            self.walk(body, value)
        finally:
            self.vars = saved
            self.depth -= 1

    # --- expressions

    def pipeline(self, pipe: _Pipe, dot: Any) -> Any:
        value: Any = _UNSET
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, value)
        if pipe.decl:
            self.bind(pipe, [value])
        return value

    def command(self, cmd: _Command, dot: Any, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, _Identifier):
            return self.call_function(first.name, cmd.args[1:], dot, final)
        if len(cmd.args) > 1 or final is not _UNSET:
            target = self.arg(first, dot)
            if callable(target):
                args = [self.arg(a, dot) for a in cmd.args[1:]] + ([] if final is _UNSET else [final])
                return target(*args)
            raise TemplateError(f"can't give argument to non-function {go_format(target)}")
        if isinstance(first, _Literal) and first.value is None:
            raise TemplateError("nil is not a command")
        return self.arg(first, dot)

    def call_function(self, name: str, arg_nodes: list[Any], dot: Any, final: Any) -> Any:
        if name in ("and", "or"):
            # Go stops evaluating operands once the result is known.
            value: Any = _UNSET
            nodes: list[Any] = list(arg_nodes) + ([] if final is _UNSET else [_Literal(final)])
            if not nodes:
                raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
            for node in nodes:
                value = self.arg(node, dot)
                if _truth(value) == (name == "or"):
                    return value
            return value
        args = [self.arg(a, dot) for a in arg_nodes]
        if final is not _UNSET:
            args.append(final)
        # Strings only grow through functions: {{$x = printf "%s%s" $x $x}} in a loop doubles one,
        # each step a single allocation no render timeout can stop. Cap them like the output.
        if sum(len(a) for a in args if isinstance(a, str)) > funcs.MAX_OUTPUT:
            raise TemplateError(f"error calling {name}: a string larger than a prompt may be")
        try:
            result = self.functions[name](*args)
        except TemplateError:
            raise
        except TypeError as e:
            raise TemplateError(f"error calling {name}: wrong arguments: {e}") from None
        except Exception as e:  # noqa: BLE001 - a caller-supplied function may fail any way it likes
            raise TemplateError(f"error calling {name}: {e}") from None
        if isinstance(result, str) and len(result) > funcs.MAX_OUTPUT:
            raise TemplateError(f"error calling {name}: a string larger than a prompt may be")
        return result

    def arg(self, node: Any, dot: Any) -> Any:
        if isinstance(node, _Literal):
            return node.value
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Field):
            return self.fields(dot, node.names)
        if isinstance(node, _Variable):
            return self.fields(self.lookup(node.name), node.names)
        if isinstance(node, _Identifier):
            return self.call_function(node.name, [], dot, _UNSET)
        if isinstance(node, _Pipe):
            mark = len(self.vars)
            try:
                return self.pipeline(node, dot)
            finally:
                del self.vars[mark:]
        if isinstance(node, _Chain):
            return self.fields(self.arg(node.node, dot), node.names)
        raise TemplateError(f"cannot evaluate {node!r}")

    @staticmethod
    def fields(value: Any, names: list[str]) -> Any:
        for name in names:
            value = _field_of(value, name)
        return value
