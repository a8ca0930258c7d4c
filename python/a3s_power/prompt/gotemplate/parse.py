"""The parse tree of a template, and the parser that builds it from the lexer's tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..chat_template import TemplateError
from .lex import _Lexer, _Token


@dataclass
class _Text:
    text: str


@dataclass
class _Field:  # .A.B
    names: list[str]


@dataclass
class _Variable:  # $x.A.B
    name: str
    names: list[str] = field(default_factory=list)


@dataclass
class _Dot:
    pass


@dataclass
class _Literal:
    value: Any


@dataclass
class _Identifier:  # a function name
    name: str


@dataclass
class _Chain:  # (pipeline).A.B
    node: Any
    names: list[str]


@dataclass
class _Command:
    args: list[Any]


@dataclass
class _Pipe:
    decl: list[str]
    is_assign: bool
    cmds: list[_Command]
    pos: int = 0


@dataclass
class _Action:
    pipe: _Pipe


@dataclass
class _Branch:  # if / with / range
    kind: str
    pipe: _Pipe
    body: list[Any]
    else_body: list[Any] | None


@dataclass
class _TemplateCall:
    name: str
    pipe: _Pipe | None


@dataclass
class _Break:
    pass


@dataclass
class _Continue:
    pass


class _Parser:
    def __init__(self, lexer: _Lexer, tokens: list[_Token], functions: dict[str, Callable[..., Any]]) -> None:
        self.lexer = lexer
        self.tokens = tokens
        self.i = 0
        self.functions = functions
        self.defines: dict[str, list[Any]] = {}
        self.scopes: list[list[str]] = [["$"]]
        self.range_depth = 0

    # --- token helpers

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def skip_space(self) -> None:
        while self.peek().kind == "space":
            self.i += 1

    def error(self, message: str, token: _Token | None = None) -> TemplateError:
        return self.lexer.error((token or self.peek()).pos, message)

    def expect_right(self, context: str) -> None:
        self.skip_space()
        token = self.next()
        if token.kind != "right":
            raise self.error(f"unexpected {self.describe(token)} in {context}", token)

    @staticmethod
    def describe(token: _Token) -> str:
        return {"eof": "EOF", "right": "\"}}\"", "space": "space"}.get(token.kind, repr(str(token.value)))

    def declared(self, name: str) -> bool:
        return any(name in scope for scope in self.scopes)

    # --- structure

    def parse(self) -> list[Any]:
        nodes, stop = self.parse_list()
        if stop is not None:
            raise self.error(f"unexpected {{{{{stop}}}}}", self.tokens[self.i - 1])
        return nodes

    def parse_list(self) -> tuple[list[Any], str | None]:
        """Nodes up to an ``{{end}}`` or ``{{else}}`` (returned, with its keyword consumed) or EOF."""
        nodes: list[Any] = []
        while True:
            token = self.next()
            if token.kind == "eof":
                self.i -= 1
                return nodes, None
            if token.kind == "text":
                nodes.append(_Text(token.value))
                continue
            # token.kind == "left"
            self.skip_space()
            head = self.peek()
            if head.kind == "keyword":
                word = head.value
                if word in ("end", "else"):
                    self.i += 1
                    return nodes, word
                self.i += 1
                node = self.parse_keyword(word, head)
                if node is not None:
                    nodes.append(node)
                continue
            pipe = self.parse_pipeline("command", "right")
            self.i += 1  # the right delimiter
            nodes.append(_Action(pipe))

    def parse_keyword(self, word: str, head: _Token) -> Any:
        if word in ("if", "with", "range"):
            return self.parse_branch(word)
        if word in ("break", "continue"):
            if not self.range_depth:
                raise self.error(f"{{{{{word}}}}} outside {{{{range}}}}", head)
            self.expect_right(word)
            return _Break() if word == "break" else _Continue()
        if word == "template":
            return self.parse_template_call()
        if word in ("define", "block"):
            return self.parse_definition(word, head)
        raise self.error(f"unexpected {word}", head)

    def parse_branch(self, kind: str) -> _Branch:
        self.scopes.append([])
        pipe = self.parse_pipeline(kind, "right")
        self.i += 1
        if kind == "range":
            self.range_depth += 1
        body, stop = self.parse_list()
        if kind == "range":
            self.range_depth -= 1
        if stop is None:
            raise self.error(f"unexpected EOF in {kind}")
        else_body = None
        if stop == "else":
            self.skip_space()
            chained = self.peek()
            if chained.kind == "keyword" and chained.value in ("if", "with") and kind != "range":
                # {{else if ...}} is {{else}}{{if ...}}...{{end}}{{end}} sharing the one {{end}}
                self.i += 1
                else_body = [self.parse_branch(chained.value)]
            else:
                self.expect_right("else")
                else_body, stop = self.parse_list()
                if stop != "end":
                    raise self.error(f"expected end; found {'EOF' if stop is None else stop}")
                self.expect_right("end")
        else:
            self.expect_right("end")
        self.scopes.pop()
        return _Branch(kind, pipe, body, else_body)

    def parse_template_call(self) -> _TemplateCall:
        self.skip_space()
        token = self.next()
        if token.kind != "string":
            raise self.error("template name must be a string", token)
        self.skip_space()
        pipe = None
        if self.peek().kind != "right":
            pipe = self.parse_pipeline("template clause", "right")
        self.expect_right("template clause")
        return _TemplateCall(token.value, pipe)

    def parse_definition(self, word: str, head: _Token) -> _TemplateCall | None:
        if word == "define" and len(self.scopes) > 1:
            raise self.error("{{define}} is only allowed at the top level", head)
        self.skip_space()
        token = self.next()
        if token.kind != "string":
            raise self.error(f"{word} name must be a string", token)
        pipe = None
        self.skip_space()
        if word == "block":
            pipe = self.parse_pipeline("block clause", "right")
        self.expect_right(f"{word} clause")
        saved_scopes, saved_depth = self.scopes, self.range_depth
        self.scopes, self.range_depth = [["$"]], 0
        body, stop = self.parse_list()
        self.scopes, self.range_depth = saved_scopes, saved_depth
        if stop != "end":
            raise self.error(f"unexpected {'EOF' if stop is None else stop} in {word}")
        self.expect_right("end")
        self.defines[token.value] = body
        return _TemplateCall(token.value, pipe) if word == "block" else None

    # --- pipelines

    def parse_pipeline(self, context: str, end: str) -> _Pipe:
        self.skip_space()
        start = self.peek()
        decl: list[str] = []
        is_assign = False
        if start.kind == "var":
            mark = self.i
            self.i += 1
            self.skip_space()
            after = self.peek()
            if after.kind in ("declare", "assign"):
                self.i += 1
                decl, is_assign = [start.value], after.kind == "assign"
            elif after.kind == "comma" and context == "range":
                self.i += 1
                self.skip_space()
                second = self.next()
                self.skip_space()
                op = self.next()
                if second.kind != "var" or op.kind not in ("declare", "assign"):
                    raise self.error("range can only initialize variables", second)
                decl, is_assign = [start.value, second.value], op.kind == "assign"
            else:
                self.i = mark
        if is_assign:
            for name in decl:
                if not self.declared(name):
                    raise self.error(f"undefined variable {name!r}", start)
        cmds: list[_Command] = []
        while True:
            self.skip_space()
            token = self.peek()
            if token.kind == end:
                break
            if token.kind in ("eof", "right", "rparen"):
                raise self.error(f"unexpected {self.describe(token)} in {context}", token)
            cmds.append(self.parse_command(context))
            self.skip_space()
            if self.peek().kind == "pipe":
                self.i += 1
                self.skip_space()
                if self.peek().kind in (end, "pipe"):
                    raise self.error(f"missing command after | in {context}")
        if not cmds:
            raise self.error(f"missing value for {context}", start)
        if not is_assign:
            self.scopes[-1].extend(decl)
        return _Pipe(decl, is_assign, cmds, start.pos)

    def parse_command(self, context: str) -> _Command:
        args: list[Any] = []
        while True:
            self.skip_space()
            token = self.peek()
            if token.kind in ("pipe", "right", "rparen", "eof"):
                break
            args.append(self.parse_operand())
            following = self.peek()
            if following.kind not in ("space", "pipe", "right", "rparen", "eof"):
                raise self.error(f"unexpected {self.describe(following)} in operand", following)
        if not args:
            raise self.error(f"empty command in {context}")
        return _Command(args)

    def parse_operand(self) -> Any:
        token = self.next()
        if token.kind == "field":
            node: Any = _Field([token.value] + self.field_chain())
            return node
        if token.kind == "var":
            if not self.declared(token.value):
                raise self.error(f"undefined variable {token.value!r}", token)
            return _Variable(token.value, self.field_chain())
        if token.kind == "dot":
            node = _Dot()
        elif token.kind == "ident":
            if token.value not in self.functions:
                raise self.error(f"function {token.value!r} not defined", token)
            node = _Identifier(token.value)
        elif token.kind in ("string", "number", "bool"):
            node = _Literal(token.value)
        elif token.kind == "nil":
            node = _Literal(None)
        elif token.kind == "lparen":
            node = self.parse_pipeline("parenthesized pipeline", "rparen")
            self.i += 1
        else:
            raise self.error(f"unexpected {self.describe(token)} in operand", token)
        names = self.field_chain()
        if names:
            if isinstance(node, (_Literal, _Dot)):
                raise self.error("unexpected . after term", token)
            node = _Chain(node, names)
        return node

    def field_chain(self) -> list[str]:
        names = []
        while self.peek().kind == "field":
            names.append(self.next().value)
        return names
