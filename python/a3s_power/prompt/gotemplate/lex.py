"""The lexer: a template's text split into text and the tokens of each action, trim markers applied."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from ..chat_template import TemplateError


@dataclass
class _Token:
    kind: str
    value: Any
    pos: int


_KEYWORDS = {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}
_SPACE = " \t\r\n"
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:[0-9][0-9_]*)?\.?[0-9_]*(?:[eE][+-]?[0-9_]+)?)")
# Go identifiers are Unicode letters and digits, as are the characters the lexer sends here.
_IDENT = re.compile(r"[^\W\d]\w*")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b",
                   "f": "\f", "v": "\v"}


def _unquote(body: str) -> str:
    """The value of a Go interpreted string literal's body."""
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        kind = body[i + 1] if i + 1 < len(body) else ""
        if kind in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[kind])
            i += 2
        elif kind in ("x", "u", "U"):
            size = {"x": 2, "u": 4, "U": 8}[kind]
            digits = body[i + 2:i + 2 + size]
            if len(digits) != size or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ValueError(f"invalid escape \\{kind}{digits}")
            out.append(chr(int(digits, 16)))
            i += 2 + size
        elif kind in "01234567" and kind:
            digits = body[i + 1:i + 4]
            if len(digits) != 3 or not all(c in "01234567" for c in digits):
                raise ValueError("invalid octal escape")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise ValueError(f"unknown escape sequence \\{kind}")
    return "".join(out)


def _number_value(text: str) -> int | float:
    clean = text.replace("_", "")
    lowered = clean.lower().lstrip("+-")
    if lowered.startswith(("0x", "0b", "0o")):
        return int(clean, 0)
    if any(c in clean for c in ".eE"):
        return float(clean)
    if len(lowered) > 1 and lowered.startswith("0"):
        return int(clean, 8)  # Go's legacy octal literal
    return int(clean)


class _Lexer:
    """Splits a template into text and the tokens of each action, applying trim markers."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens: list[_Token] = []

    def error(self, pos: int, message: str) -> TemplateError:
        line = self.source.count("\n", 0, pos) + 1
        return TemplateError(f"template: {line}: {message}")

    def run(self) -> list[_Token]:
        src = self.source
        pos = 0
        trim_next_text = False
        while pos < len(src):
            start = src.find("{{", pos)
            text = src[pos:] if start < 0 else src[pos:start]
            if trim_next_text:
                text = text.lstrip(_SPACE)
                trim_next_text = False
            if start < 0:
                if text:
                    self.tokens.append(_Token("text", text, pos))
                break
            inner = start + 2
            if src.startswith("-", inner) and inner + 1 < len(src) and src[inner + 1] in _SPACE:
                text = text.rstrip(_SPACE)
                inner += 2
            if text:
                self.tokens.append(_Token("text", text, pos))
            if src.startswith("/*", inner):
                pos, trim_next_text = self._comment(start, inner)
                continue
            self.tokens.append(_Token("left", "{{", start))
            pos, trim_next_text = self._action(inner)
        self.tokens.append(_Token("eof", None, len(src)))
        return self.tokens

    def _right_delim(self, pos: int) -> tuple[int, bool] | None:
        """(position after the delimiter, trims following text) if an action ends at ``pos``."""
        src = self.source
        if src.startswith("}}", pos):
            return pos + 2, False
        if pos + 1 < len(src) and src[pos] in _SPACE and src.startswith("-}}", pos + 1):
            return pos + 4, True
        return None

    def _comment(self, start: int, inner: int) -> tuple[int, bool]:
        end = self.source.find("*/", inner + 2)
        if end < 0:
            raise self.error(start, "unclosed comment")
        closing = self._right_delim(end + 2)
        if closing is None:
            raise self.error(end, "comment ends before closing delimiter")
        return closing

    def _action(self, pos: int) -> tuple[int, bool]:
        src = self.source
        depth = 0
        while True:
            if pos >= len(src):
                raise self.error(pos, "unclosed action")
            closing = self._right_delim(pos)
            if closing is not None:
                if depth:
                    raise self.error(pos, "unclosed left paren")
                self.tokens.append(_Token("right", "}}", pos))
                return closing
            ch = src[pos]
            if ch in _SPACE:
                end = pos
                while end < len(src) and src[end] in _SPACE and self._right_delim(end) is None:
                    end += 1
                self.tokens.append(_Token("space", src[pos:end], pos))
                pos = end
            elif ch == '"':
                end = pos + 1
                while end < len(src) and src[end] != '"':
                    if src[end] == "\n":
                        raise self.error(pos, "unterminated quoted string")
                    end += 2 if src[end] == "\\" else 1
                if end >= len(src):
                    raise self.error(pos, "unterminated quoted string")
                try:
                    self.tokens.append(_Token("string", _unquote(src[pos + 1:end]), pos))
                except ValueError as e:
                    raise self.error(pos, f"bad string {src[pos:end + 1]}: {e}") from None
                pos = end + 1
            elif ch == "`":
                end = src.find("`", pos + 1)
                if end < 0:
                    raise self.error(pos, "unterminated raw quoted string")
                self.tokens.append(_Token("string", src[pos + 1:end], pos))
                pos = end + 1
            elif ch == "'":
                end = pos + 1
                while end < len(src) and src[end] != "'":
                    end += 2 if src[end] == "\\" else 1
                try:
                    value = _unquote(src[pos + 1:end])
                except ValueError as e:
                    raise self.error(pos, f"bad character constant: {e}") from None
                if end >= len(src) or len(value) != 1:
                    raise self.error(pos, "malformed character constant")
                self.tokens.append(_Token("number", ord(value), pos))
                pos = end + 1
            elif src.startswith(":=", pos):
                self.tokens.append(_Token("declare", ":=", pos))
                pos += 2
            elif ch in "=|,":
                self.tokens.append(_Token({"=": "assign", "|": "pipe", ",": "comma"}[ch], ch, pos))
                pos += 1
            elif ch == "(":
                depth += 1
                self.tokens.append(_Token("lparen", ch, pos))
                pos += 1
            elif ch == ")":
                depth -= 1
                if depth < 0:
                    raise self.error(pos, "unexpected right paren")
                self.tokens.append(_Token("rparen", ch, pos))
                pos += 1
            elif ch == "$":
                m = _IDENT.match(src, pos + 1)
                name = "$" + (m.group() if m else "")
                self.tokens.append(_Token("var", name, pos))
                pos += len(name)
            elif ch == "." and pos + 1 < len(src) and (src[pos + 1].isalpha() or src[pos + 1] == "_"):
                m = cast(re.Match[str], _IDENT.match(src, pos + 1))  # a letter or _ follows the dot
                self.tokens.append(_Token("field", m.group(), pos))
                pos = m.end()
            elif ch.isdigit() or (ch in "+-." and pos + 1 < len(src) and src[pos + 1].isdigit()):
                m = cast(re.Match[str], _NUMBER.match(src, pos))  # every part of it is optional
                text = m.group()
                after = m.end()
                if after < len(src) and (src[after].isalnum() or src[after] in "_."):
                    raise self.error(pos, f"bad number syntax: {src[pos:after + 1]!r}")
                try:
                    self.tokens.append(_Token("number", _number_value(text), pos))
                except ValueError:
                    raise self.error(pos, f"bad number syntax: {text!r}") from None
                pos = after
            elif ch == ".":
                self.tokens.append(_Token("dot", ".", pos))
                pos += 1
            elif ch.isalpha() or ch == "_":
                m = cast(re.Match[str], _IDENT.match(src, pos))  # ch is a letter or _
                word = m.group()
                kind = ("keyword" if word in _KEYWORDS else "bool" if word in ("true", "false")
                        else "nil" if word == "nil" else "ident")
                self.tokens.append(_Token(kind, (word == "true") if kind == "bool" else word, pos))
                pos = m.end()
            else:
                raise self.error(pos, f"unexpected {ch!r} in command")
