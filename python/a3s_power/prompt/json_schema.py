"""JSON Schema to a GBNF grammar (llama.cpp's grammar syntax, start rule ``root``).

This is what Ollama's ``format`` becomes: ``"json"`` is :data:`JSON_GRAMMAR` (any JSON object),
a schema object goes through :func:`schema_to_gbnf`. The grammars are built for small models:

- Whitespace between tokens is bounded (a couple of spaces, or a newline and some indentation),
  and numbers have at most 16 digits per part, so a model cannot loop forever inside a value.
- Nothing may follow the top-level value, so the grammar ends the answer there.
- Object properties come in the order the schema declares them; optional ones may be left out.
  With ``properties`` given and ``additionalProperties`` absent, no other keys are allowed: the
  point is to make the model produce the declared shape.

Supported: ``type`` (one or a list), ``properties``/``required``/``additionalProperties``,
``items``/``prefixItems``/``minItems``/``maxItems``, ``enum``, ``const``, ``anyOf``/``oneOf``,
``allOf`` (merged), local ``$ref`` (``#``, ``#/$defs/...``, ``#/definitions/...``, recursive too),
integer ``minimum``/``maximum`` (and the exclusive forms), string ``minLength``/``maxLength``,
``format`` (date, time, date-time, uuid, email) and ``pattern`` (a regular-expression subset).
Other keywords are ignored, which can only make the grammar looser than the schema.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeGuard

from ..errors import InvalidOptionError

__all__ = ["JSON_GRAMMAR", "InvalidSchemaError", "schema_to_gbnf"]


class InvalidSchemaError(InvalidOptionError):
    """A ``format`` schema that cannot become a grammar."""


# Shared rules: name -> (body, rules the body uses). Written for llama.cpp's GBNF parser.
_PRIMITIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ws": (r'[ \t]{0,2} | "\n" [ \t]{0,24}', ()),
    "value": ("object | array | string | number | boolean | null",
              ("object", "array", "string", "number", "boolean", "null")),
    "object": (r'"{" ws ( member ( "," ws member )* )? "}"', ("ws", "member")),
    "member": (r'string ws ":" ws value ws', ("string", "ws", "value")),
    "array": (r'"[" ws ( value ws ( "," ws value ws )* )? "]"', ("ws", "value")),
    "string": (r'"\"" char* "\""', ("char",)),
    "char": (r'[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )', ()),
    "number": (r'"-"? integral ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?', ("integral",)),
    "integer": (r'"-"? integral', ("integral",)),
    "integral": (r'"0" | [1-9] [0-9]{0,15}', ()),
    "boolean": (r'"true" | "false"', ()),
    "null": (r'"null"', ()),
    "date": (r'[1-9] [0-9]{3} "-" ( ( "0" [13578] | "1" [02] ) "-" day31 | ( "0" [469] | "11" ) "-" day30 '
             r'| "02" "-" day28 )', ("day28", "day30", "day31")),
    "day28": (r'"0" [1-9] | "1" [0-9] | "2" [0-8]', ()),
    "day30": (r'day28 | "29" | "30"', ("day28",)),
    "day31": (r'day30 | "31"', ("day30",)),
    "time": (r'( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
             r'( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )', ()),
    "date-time": (r'date "T" time', ("date", "time")),
    "uuid": (r'[0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12}', ()),
    "email": (r'[A-Za-z0-9] [A-Za-z0-9._%+-]{0,63} "@" [A-Za-z0-9] [A-Za-z0-9-]{0,62} '
              r'( "." [A-Za-z0-9] [A-Za-z0-9-]{0,62} ){1,4}', ()),
}
_FORMATS = ("date", "time", "date-time", "uuid", "email")
_MAX_DIGITS = 16  # the "integral" rule's limit

# Keywords that say nothing about which values are valid.
_ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "$schema", "$id", "deprecated",
                "readOnly", "writeOnly", "$defs", "definitions"}


def _closure(names: list[str]) -> list[str]:
    ordered: list[str] = []

    def add(name: str) -> None:
        if name in ordered:
            return
        ordered.append(name)
        for dependency in _PRIMITIVES[name][1]:
            add(dependency)

    for name in names:
        add(name)
    return ordered


def _render(rules: list[tuple[str, str]]) -> str:
    return "".join(f"{name} ::= {body}\n" for name, body in rules)


JSON_GRAMMAR: str = _render([("root", "ws object")] + [(n, _PRIMITIVES[n][0]) for n in _closure(["ws", "object"])])


# ----------------------------------------------------------------------------------------------
# GBNF text helpers
# ----------------------------------------------------------------------------------------------

def _literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_text(value: Any) -> str:
    """JSON text for ``value``, compact and UTF-8 friendly. A lone surrogate (JSON's "\\ud800" parses
    into one) stays escaped: raw, it is not text the model can write, nor a string llama.cpp takes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _json_literal(value: Any) -> str:
    """A GBNF literal for one JSON value, written compactly."""
    return _literal(_json_text(value))


def _class_char(code: int) -> str:
    ch = chr(code)
    if ch.isascii() and (ch.isalnum() or ch in " _.,:;!?@#$%&*+=<>/|~`'(){}"):
        return ch
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def _class_items(ranges: list[tuple[int, int]]) -> str:
    return "".join(_class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in ranges)


# llama.cpp refuses a grammar that repeats anything more than this many times, and treats a larger
# maximum as none.
MAX_REPETITIONS = 2000


def _repeat(item: str, low: int, high: int | None) -> str:
    """``item`` (one element: a literal, class, rule name or group) repeated low..high times."""
    if low > MAX_REPETITIONS:
        raise InvalidSchemaError(f"{low} repetitions: more than the {MAX_REPETITIONS} a grammar may have")
    if high is not None and high > MAX_REPETITIONS:
        high = None  # looser, as llama.cpp would read it
    if high is not None and high <= 0:
        return ""
    if (low, high) == (0, None):
        return f"{item}*"
    if (low, high) == (1, None):
        return f"{item}+"
    if (low, high) == (0, 1):
        return f"{item}?"
    if (low, high) == (1, 1):
        return item
    if high is None:
        return f"{item}{{{low},}}"
    if low == high:
        return f"{item}{{{low}}}"
    return f"{item}{{{low},{high}}}"


def _sequence(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _group(expression: str) -> str:
    return f"( {expression} )"


# ----------------------------------------------------------------------------------------------
# Integer ranges
# ----------------------------------------------------------------------------------------------

def _digits_between(low: str, high: str) -> list[str]:
    """Alternatives matching the digit strings from ``low`` to ``high`` (same length, low <= high)."""
    width = len(low)
    if width == 0:
        return [""]
    if low == "0" * width and high == "9" * width:
        return [_repeat("[0-9]", width, width)]
    first_low, first_high = int(low[0]), int(high[0])
    rest = width - 1
    if first_low == first_high:
        return [_sequence(_literal(low[0]), tail) for tail in _digits_between(low[1:], high[1:])]
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return [_sequence(f"[{first_low}-{first_high}]", _repeat("[0-9]", rest, rest))]
    out = [_sequence(_literal(low[0]), tail) for tail in _digits_between(low[1:], "9" * rest)]
    if first_high - first_low > 1:
        middle = str(first_low + 1) if first_high - first_low == 2 else f"[{first_low + 1}-{first_high - 1}]"
        out.append(_sequence(middle if len(middle) > 1 else _literal(middle), _repeat("[0-9]", rest, rest)))
    out += [_sequence(_literal(high[0]), tail) for tail in _digits_between("0" * rest, high[1:])]
    return out


def _natural_range(low: int, high: int | None) -> list[str]:
    """Alternatives for the integers low..high (high None: unbounded), 0 <= low, no leading zeros."""
    out: list[str] = []
    low_width = len(str(low))
    high_width = _MAX_DIGITS if high is None else len(str(high))
    for width in range(low_width, min(high_width, _MAX_DIGITS) + 1):
        start = max(low, 10 ** (width - 1) if width > 1 else 0)
        end = 10 ** width - 1 if high is None else min(high, 10 ** width - 1)
        if start > end:
            continue
        if high is None and width > low_width and start == 10 ** (width - 1):
            # Every longer number qualifies: one alternative covers the remaining widths.
            out.append(_sequence("[1-9]", _repeat("[0-9]", width - 1, _MAX_DIGITS - 1)))
            break
        out += _digits_between(str(start), str(end))
    return out


def _integer_range(low: int | None, high: int | None) -> str:
    alternatives: list[str] = []
    if low is None or low < 0:
        # Negative numbers: "-" then the magnitudes from max(1, -high) to -low.
        magnitude_low = 1 if high is None or high >= 0 else -high
        magnitude_high = None if low is None else -low
        alternatives += [_sequence('"-"', a) for a in _natural_range(magnitude_low, magnitude_high)]
    if high is None or high >= 0:
        alternatives += _natural_range(max(low or 0, 0), high)
    if not alternatives:
        raise InvalidSchemaError(f"no integer of at most {_MAX_DIGITS} digits lies between {low} and {high}")
    return " | ".join(alternatives)


# ----------------------------------------------------------------------------------------------
# Regular expressions (the ``pattern`` keyword) inside a JSON string
# ----------------------------------------------------------------------------------------------

_NOT_IN_JSON_STRING = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]  # need an escape in JSON text
_ANY_CHAR = "[^" + _class_items(_NOT_IN_JSON_STRING) + "]"
_SHORTHANDS = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "s": [(0x09, 0x0D), (0x20, 0x20)],
}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0", "a": "\a"}


def _json_escaped(ch: str) -> str:
    return _json_text(ch)[1:-1]


class _Regex:
    """Translates a regular expression into a GBNF expression over the JSON text of a string
    that matches it as a whole (anchors are implied, so ``^`` and ``$`` are dropped)."""

    def __init__(self, pattern: str, rule: Callable[[str], str] = _group) -> None:
        self.pattern = pattern
        self.i = 0
        # A group that is repeated becomes a rule of its own: llama.cpp refuses a repetition of
        # a group that itself repeats, (a{0,50}){50}, past 2000 rules in all.
        self.rule = rule

    def error(self, message: str) -> InvalidSchemaError:
        return InvalidSchemaError(f"unsupported pattern {self.pattern!r}: {message}")

    def peek(self) -> str:
        return self.pattern[self.i] if self.i < len(self.pattern) else ""

    def translate(self) -> str:
        expression = self.alternation()
        if self.i < len(self.pattern):
            raise self.error("unbalanced parenthesis")
        return expression

    def alternation(self) -> str:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.sequence())
        present = [b for b in branches if b]
        if len(present) == len(branches):
            return branches[0] if len(branches) == 1 else " | ".join(branches)
        return f"( {' | '.join(present)} )?" if present else ""

    def sequence(self) -> str:
        items: list[tuple[str, str]] = []  # (kind, text): kind "lit" holds raw characters
        while self.i < len(self.pattern) and self.peek() not in "|)":
            atom = self.atom()
            if atom is None:
                continue
            if atom[0] == "group":
                atom = ("expr", self.rule(atom[1]) if self.peek() and self.peek() in "*+?{" else _group(atom[1]))
            quantified = self.quantifier(atom[1] if atom[0] != "lit" else _literal(_json_escaped(atom[1])))
            if quantified is None:
                if atom[0] == "lit" and items and items[-1][0] == "lit":
                    items[-1] = ("lit", items[-1][1] + atom[1])  # merge runs of plain characters
                else:
                    items.append(atom)
            elif quantified:
                items.append(("expr", quantified))
        return _sequence(*(_literal("".join(_json_escaped(c) for c in text)) if kind == "lit" else text
                           for kind, text in items))

    def quantifier(self, element: str) -> str | None:
        """``element`` with the quantifier that follows it, or None when there is none."""
        ch = self.peek()
        if ch in ("*", "+", "?"):
            self.i += 1
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        elif ch == "{":
            m = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.pattern, self.i)
            if not m:
                return None
            self.i = m.end()
            low = int(m.group(1))
            high = low if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
            if high is not None and high < low:
                raise self.error("bad repetition bounds")
        else:
            return None
        if self.peek() in ("?", "+"):  # lazy and possessive forms match the same strings
            self.i += 1
        return _repeat(element, low, high)

    def atom(self) -> tuple[str, str] | None:
        ch = self.peek()
        self.i += 1
        if ch == "(":
            if self.pattern.startswith("?:", self.i):
                self.i += 2
            elif self.pattern.startswith(("?P<", "?<"), self.i) and not self.pattern.startswith(("?<=", "?<!"),
                                                                                                self.i):
                end = self.pattern.find(">", self.i)
                if end < 0:
                    raise self.error("unterminated group name")
                self.i = end + 1
            elif ch == "(" and self.peek() == "?":
                raise self.error("lookaround, flags and backreferences cannot be expressed")
            inner = self.alternation()
            if self.peek() != ")":
                raise self.error("missing )")
            self.i += 1
            return ("group", inner) if inner else None
        if ch == "[":
            return "expr", self.char_class()
        if ch == ".":
            return "expr", _ANY_CHAR
        if ch in ("^", "$"):
            return None
        if ch in ("*", "+", "?"):
            raise self.error(f"nothing to repeat at {self.i - 1}")
        if ch == "\\":
            return self.escape()
        return "lit", ch

    def escape(self) -> tuple[str, str] | None:
        ch = self.peek()
        if not ch:
            raise self.error("trailing backslash")
        self.i += 1
        if ch in _SHORTHANDS:
            return "expr", self.positive_class(_SHORTHANDS[ch])
        if ch.lower() in _SHORTHANDS:
            return "expr", "[^" + _class_items(_SHORTHANDS[ch.lower()] + _NOT_IN_JSON_STRING) + "]"
        if ch in "bBAzZ":
            return None  # boundaries and anchors: the whole string is matched anyway
        if ch.isdigit() and ch != "0":
            raise self.error("backreferences cannot be expressed")
        return "lit", self.escaped_char(ch)

    def escaped_char(self, ch: str) -> str:
        if ch in _CHAR_ESCAPES:
            return _CHAR_ESCAPES[ch]
        if ch in ("x", "u"):
            size = 2 if ch == "x" else 4
            digits = self.pattern[self.i:self.i + size]
            if len(digits) != size or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.error(f"bad \\{ch} escape")
            self.i += size
            return chr(int(digits, 16))
        return ch

    def class_member(self) -> tuple[int, int] | list[tuple[int, int]]:
        ch = self.peek()
        if not ch:
            raise self.error("unterminated character class")
        self.i += 1
        if ch != "\\":
            return ord(ch), ord(ch)
        escaped = self.peek()
        if not escaped:
            raise self.error("trailing backslash")
        self.i += 1
        if escaped in _SHORTHANDS:
            return _SHORTHANDS[escaped]
        if escaped.lower() in _SHORTHANDS:
            raise self.error(f"\\{escaped} inside a character class")
        code = ord(self.escaped_char(escaped))
        return code, code

    def char_class(self) -> str:
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            if self.peek() == "]" and not first:
                self.i += 1
                break
            first = False
            member = self.class_member()
            if isinstance(member, list):
                ranges += member
                continue
            low = member[0]
            if self.peek() == "-" and self.pattern[self.i + 1:self.i + 2] not in ("]", ""):
                self.i += 1
                end = self.class_member()
                if isinstance(end, list) or end[0] < low:
                    raise self.error("bad character range")
                ranges.append((low, end[0]))
            else:
                ranges.append(member)
        if negated:
            return "[^" + _class_items(ranges + _NOT_IN_JSON_STRING) + "]"
        return self.positive_class(ranges)

    @staticmethod
    def positive_class(ranges: list[tuple[int, int]]) -> str:
        """Characters that JSON must escape are split off and matched in their escaped form."""
        plain: list[tuple[int, int]] = []
        escaped: list[str] = []
        for low, high in sorted(ranges):
            code = low
            while code <= high:
                blocked = next(((a, b) for a, b in _NOT_IN_JSON_STRING if a <= code <= b), None)
                if blocked:
                    stop = min(high, blocked[1])
                    escaped += [_literal(_json_escaped(chr(c))) for c in range(code, stop + 1)]
                    code = stop + 1
                    continue
                nxt = min([a for a, _ in _NOT_IN_JSON_STRING if a > code] + [high + 1])
                stop = min(high, nxt - 1)
                plain.append((code, stop))
                code = stop + 1
        alternatives = (["[" + _class_items(plain) + "]"] if plain else []) + list(dict.fromkeys(escaped))
        if not alternatives:
            raise InvalidSchemaError("empty character class")
        return alternatives[0] if len(alternatives) == 1 else _group(" | ".join(alternatives))


# ----------------------------------------------------------------------------------------------
# The converter
# ----------------------------------------------------------------------------------------------

def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The schema of values valid under both ``a`` and ``b`` (as far as grammars can tell)."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key in ("properties", "required", "enum") and not (
                isinstance(out[key], dict) and isinstance(value, dict) if key == "properties"
                else isinstance(out[key], list) and isinstance(value, list)):
            raise InvalidSchemaError(f"allOf: {key} must be {'an object' if key == 'properties' else 'an array'}")
        elif key == "properties":
            merged = dict(out[key])
            for name, schema in value.items():
                both = merged.get(name)
                merged[name] = _merge(both, schema) if isinstance(both, dict) and isinstance(schema, dict) else schema
            out[key] = merged
        elif key == "required":
            out[key] = list(dict.fromkeys(list(out[key]) + list(value)))
        elif key == "type":
            common = [t for t in _as_list(out[key]) if t in _as_list(value)
                      or (t == "integer" and "number" in _as_list(value))]
            common += [t for t in _as_list(value) if t == "integer" and "number" in _as_list(out[key])
                       and t not in common]
            if not common:
                raise InvalidSchemaError(f"allOf combines types with nothing in common: {out[key]} and {value}")
            out[key] = common if len(common) > 1 else common[0]
        elif key == "enum":
            out[key] = [v for v in out[key] if v in value]
        elif key in ("minimum", "minLength", "minItems", "exclusiveMinimum") and _is_number(value) \
                and _is_number(out[key]):
            out[key] = max(out[key], value)
        elif key in ("maximum", "maxLength", "maxItems", "exclusiveMaximum") and _is_number(value) \
                and _is_number(out[key]):
            out[key] = min(out[key], value)
        elif key == "additionalProperties":
            out[key] = False if out[key] is False or value is False else value
        else:
            out[key] = value
    return out


def _is_number(value: Any) -> TypeGuard[float]:
    # Python's JSON reads Infinity and NaN: as bounds they say nothing a grammar can use.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Converter:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.rules: dict[str, str] = {}
        self.names_by_body: dict[str, str] = {}
        self.rule_for_ref: dict[str, str] = {}
        self.primitives: list[str] = ["ws"]
        # References being built since the last "{" or "[": one of them again is a rule that
        # starts with itself ({"anyOf": [{"$ref": "#"}, ...]}), which llama.cpp refuses.
        self.unconsumed: set[str] = set()

    # --- rules

    def fresh_name(self, hint: str) -> str:
        base = re.sub(r"[^A-Za-z0-9]+", "-", hint).strip("-").lower() or "rule"
        name, n = base, 1
        while name in self.rules or name in _PRIMITIVES or name == "root":
            n += 1
            name = f"{base}-{n}"
        return name

    def rule(self, hint: str, body: str) -> str:
        """A rule for ``body``, shared with any earlier rule of the same body."""
        if body in self.names_by_body:
            return self.names_by_body[body]
        if re.fullmatch(r"[a-z0-9-]+", body) and (body in self.rules or body in _PRIMITIVES):
            return body  # already a single rule reference
        name = self.fresh_name(hint)
        self.rules[name] = body
        self.names_by_body[body] = name
        return name

    def primitive(self, name: str) -> str:
        if name not in self.primitives:
            self.primitives.append(name)
        return name

    def grammar(self) -> str:
        root = self.expression(self.root, "schema")
        rules = [("root", _sequence(self.primitive("ws"), root))] + list(self.rules.items())
        rules += [(n, _PRIMITIVES[n][0]) for n in _closure(self.primitives)]
        return _render(rules)

    # --- references

    def resolve(self, ref: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise InvalidSchemaError(f"cannot resolve $ref {ref!r}: only references within the schema are supported")
        target = self.root
        for part in filter(None, urllib.parse.unquote(ref[1:]).split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise InvalidSchemaError(f"cannot resolve $ref {ref!r}")
        return target

    def reference(self, ref: str) -> str:
        if not isinstance(ref, str):
            raise InvalidSchemaError(f"cannot resolve $ref {ref!r}: a reference is a string")
        if ref in self.unconsumed:
            raise InvalidSchemaError(f"$ref {ref!r} refers to nothing but itself before a value begins")
        if ref in self.rule_for_ref:
            return self.rule_for_ref[ref]
        name = self.fresh_name(ref.rsplit("/", 1)[-1] or "root-ref")
        self.rule_for_ref[ref] = name
        self.rules[name] = ""  # reserved: a recursive reference finds the name while the body is built
        self.unconsumed.add(ref)
        try:
            body = self.expression(self.resolve(ref), name)
        finally:
            self.unconsumed.discard(ref)
        self.rules[name] = body
        return name

    def inside(self, build: Callable[[], str]) -> str:
        """``build()`` for the contents of an object or array: after its opening bracket, a
        reference back to one being built is recursion, not left recursion."""
        saved, self.unconsumed = self.unconsumed, set()
        try:
            return build()
        finally:
            self.unconsumed = saved

    def flatten(self, schema: Any, depth: int = 0) -> Any:
        """The schema with a top-level ``$ref`` and ``allOf`` merged in, for ``allOf`` merging."""
        if depth > 32:
            raise InvalidSchemaError("$ref/allOf nesting too deep")
        if not isinstance(schema, dict):
            return schema
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            target = self.flatten(self.resolve(schema["$ref"]), depth + 1)
            schema = _merge(target, rest) if isinstance(target, dict) else target
        if isinstance(schema, dict) and "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            if not isinstance(schema["allOf"], list):
                raise InvalidSchemaError("allOf must be an array")
            for part in schema["allOf"]:
                part = self.flatten(part, depth + 1)
                if part is False:
                    raise InvalidSchemaError("allOf contains false: no value is valid")
                if isinstance(part, dict):
                    merged = _merge(merged, part)
            schema = merged
        return schema

    # --- schemas

    def expression(self, schema: Any, hint: str) -> str:
        if schema is True:
            return self.primitive("value")
        if schema is False:
            raise InvalidSchemaError(f"schema at {hint!r} is false: no value is valid")
        if not isinstance(schema, dict):
            raise InvalidSchemaError(f"a schema must be an object or a boolean, not {type(schema).__name__}")
        if "$ref" in schema:
            if set(schema) - _ANNOTATIONS == {"$ref"}:
                return self.reference(schema["$ref"])
            return self.expression(self.flatten(schema), hint)
        if "allOf" in schema:
            return self.expression(self.flatten(schema), hint)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                return self.alternatives(schema, keyword, hint)
        if "const" in schema:
            return _json_literal(schema["const"])
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise InvalidSchemaError("enum must be a non-empty array")
            return self.rule(hint, " | ".join(_json_literal(v) for v in values))
        types = schema.get("type")
        if types is None:
            types = self.implied_type(schema)
            if types is None:
                return self.primitive("value")
        types = _as_list(types)
        if schema.get("nullable") is True and "null" not in types:
            types = types + ["null"]
        if not types:
            raise InvalidSchemaError("type must not be an empty list")
        if len(types) > 1:
            return self.rule(hint, " | ".join(self.typed(schema, t, f"{hint}-{t}") for t in types))
        return self.typed(schema, types[0], hint)

    def alternatives(self, schema: dict[str, Any], keyword: str, hint: str) -> str:
        options = schema[keyword]
        if not isinstance(options, list) or not options:
            raise InvalidSchemaError(f"{keyword} must be a non-empty array")
        base = {k: v for k, v in schema.items() if k != keyword and k not in _ANNOTATIONS}
        expressions = []
        for i, option in enumerate(options):
            if option is False:
                continue
            if base and isinstance(option, dict):
                option = _merge(base, self.flatten(option))
            elif base and option is True:
                option = base
            expressions.append(self.expression(option, f"{hint}-{i}"))
        if not expressions:
            raise InvalidSchemaError(f"every {keyword} alternative is false")
        return self.rule(hint, " | ".join(dict.fromkeys(expressions)))

    @staticmethod
    def implied_type(schema: dict[str, Any]) -> str | None:
        if any(k in schema for k in ("properties", "additionalProperties", "required")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
            return "array"
        if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
            return "string"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            return "number"
        return None

    def typed(self, schema: dict[str, Any], kind: Any, hint: str) -> str:
        if kind == "object":
            return self.inside(lambda: self.object(schema, hint))
        if kind == "array":
            return self.inside(lambda: self.array(schema, hint))
        if kind == "string":
            return self.string(schema, hint)
        if kind == "integer":
            return self.integer(schema, hint)
        if kind == "number":
            low = self.bound(schema, "minimum", "exclusiveMinimum", lower=True)
            if low is not None and low[0] >= 0:  # at least no minus sign
                return self.rule(hint, self.primitive("integral") + ' ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?')
            return self.primitive("number")
        if kind == "boolean":
            return self.primitive("boolean")
        if kind == "null":
            return self.primitive("null")
        raise InvalidSchemaError(f"unknown type {kind!r}")

    # --- objects

    def object(self, schema: dict[str, Any], hint: str) -> str:
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        if not isinstance(properties, dict) or not isinstance(required, list) \
                or not all(isinstance(name, str) for name in required):
            raise InvalidSchemaError("properties must be an object and required an array of names")
        additional = schema.get("additionalProperties", None if properties else True)
        if additional is None or additional is False:
            extra_value = None
        else:
            extra_value = self.expression(additional, f"{hint}-additional")

        members: list[tuple[str, bool]] = []  # (member expression, required)
        for name, property_schema in properties.items():
            if property_schema is False:
                if name in required:
                    raise InvalidSchemaError(f"property {name!r} is required but its schema is false")
                continue
            value = self.expression(property_schema, f"{hint}-{name}")
            members.append((self.member(name, value, f"{hint}-{name}-kv"), name in required))
        for name in required:
            if name not in properties:
                value = extra_value or self.primitive("value")
                members.append((self.member(name, value, f"{hint}-{name}-kv"), True))

        extra_member = None
        if extra_value is not None:
            extra_member = self.rule(f"{hint}-additional-kv",
                                     _sequence(self.primitive("string"), "ws", '":"', "ws", extra_value, "ws"))
        body = self.members_from(members, 0, extra_member, hint)
        return self.rule(hint, _sequence('"{"', "ws", body, '"}"'))

    def member(self, name: str, value: str, hint: str) -> str:
        return self.rule(hint, _sequence(_json_literal(name), "ws", '":"', "ws", value, "ws"))

    @staticmethod
    def members_after(members: list[tuple[str, bool]], start: int, extra: str | None) -> str:
        """The members from ``start`` on, when one has already been written (each needs a comma)."""
        parts = []
        for member, required in members[start:]:
            parts.append(_sequence('","', "ws", member) if required else _group(_sequence('","', "ws", member)) + "?")
        if extra:
            parts.append(_group(_sequence('","', "ws", extra)) + "*")
        return _sequence(*parts)

    def members_from(self, members: list[tuple[str, bool]], start: int, extra: str | None, hint: str) -> str:
        """The members from ``start`` on, when none has been written yet: any subset of the
        optional ones, in order, and every required one."""
        if start == len(members):
            return _group(_sequence(extra, _group(_sequence('","', "ws", extra)) + "*")) + "?" if extra else ""
        member, required = members[start]
        with_this = _sequence(member, self.members_after(members, start + 1, extra))
        if required:
            return with_this
        without_this = self.members_from(members, start + 1, extra, hint)
        if not without_this:
            return _group(with_this) + "?"
        return self.rule(f"{hint}-from-{start}", f"{with_this} | {without_this}")

    # --- arrays

    def array(self, schema: dict[str, Any], hint: str) -> str:
        prefix = schema.get("prefixItems")
        items = schema.get("items", prefix is None)
        if isinstance(items, list):  # draft 4-2019: items as a tuple, additionalItems for the rest
            prefix, items = items, schema.get("additionalItems", False)
        prefix = prefix or []
        if not isinstance(prefix, list):
            raise InvalidSchemaError("prefixItems must be an array of schemas")
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        if not isinstance(low, int) or low < 0 or (high is not None and (not isinstance(high, int) or high < low)):
            raise InvalidSchemaError(f"bad minItems/maxItems: {low}, {high}")

        parts = []
        for i, item_schema in enumerate(prefix):
            item = self.expression(item_schema, f"{hint}-{i}")
            parts.append(_sequence('","' if i else "", "ws" if i else "", item, "ws"))
        if items is not False and items is not None:
            item = self.expression(items, f"{hint}-item")
            more_low = max(0, low - len(prefix))
            more_high = None if high is None else max(0, high - len(prefix))
            element = _sequence(item, "ws")
            if prefix:
                parts.append(_repeat(_group(_sequence('","', "ws", element)), more_low, more_high))
            elif more_high != 0:
                rest = _repeat(_group(_sequence('","', "ws", element)), max(0, more_low - 1),
                               None if more_high is None else more_high - 1)
                listed = _sequence(element, rest)
                if more_low < 1 and more_high is not None and more_high > 1:
                    # llama.cpp counts the rules a bounded repetition makes against any group
                    # around it (past 2000 it refuses the grammar): a rule of its own has none.
                    parts.append(self.rule(f"{hint}-items", listed) + "?")
                else:
                    parts.append(listed if more_low >= 1 else _group(listed) + "?")
        return self.rule(hint, _sequence('"["', "ws", *parts, '"]"'))

    # --- strings and numbers

    def string(self, schema: dict[str, Any], hint: str) -> str:
        if "pattern" in schema:
            pattern = _Regex(str(schema["pattern"]), lambda body: self.rule(f"{hint}-group", body)).translate()
            return self.rule(hint, _sequence('"\\""', pattern, '"\\""'))
        fmt = schema.get("format")
        if fmt in _FORMATS:
            return self.rule(f"{fmt}-string", _sequence('"\\""', self.primitive(fmt), '"\\""'))
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if not isinstance(low, int) or low < 0 or (high is not None and (not isinstance(high, int) or high < low)):
            raise InvalidSchemaError(f"bad minLength/maxLength: {low}, {high}")
        if low == 0 and high is None:
            return self.primitive("string")
        return self.rule(hint, _sequence('"\\""', _repeat(self.primitive("char"), low, high), '"\\""'))

    @staticmethod
    def bound(schema: dict[str, Any], inclusive: str, exclusive: str, lower: bool) -> tuple[float, bool] | None:
        """The tighter of a schema's inclusive and exclusive bounds, as (value, is exclusive)."""
        found: list[tuple[float, bool]] = []
        value, strict = schema.get(inclusive), schema.get(exclusive)
        if _is_number(value):
            found.append((value, strict is True))  # draft 4 spells exclusivity as a flag
        if _is_number(strict):
            found.append((strict, True))
        if not found:
            return None
        if lower:
            return max(found, key=lambda b: (b[0], b[1]))
        return min(found, key=lambda b: (b[0], not b[1]))

    def integer(self, schema: dict[str, Any], hint: str) -> str:
        def integer_bound(inclusive: str, exclusive: str, lower: bool) -> int | None:
            found = self.bound(schema, inclusive, exclusive, lower)
            if found is None:
                return None
            value, strict = found
            if lower:
                return math.floor(value) + 1 if strict else math.ceil(value)
            return math.ceil(value) - 1 if strict else math.floor(value)

        low = integer_bound("minimum", "exclusiveMinimum", lower=True)
        high = integer_bound("maximum", "exclusiveMaximum", lower=False)
        if low is None and high is None:
            return self.primitive("integer")
        if low is not None and high is not None and low > high:
            raise InvalidSchemaError(f"no integer lies between {low} and {high}")
        return self.rule(hint, _integer_range(low, high))


def schema_to_gbnf(schema: Any) -> str:
    """A GBNF grammar (start rule ``root``) for JSON text valid under ``schema``.

    Raises :class:`InvalidSchemaError` for a schema that is not an object or a boolean, a
    ``$ref`` that does not resolve within it, or constraints that no value can meet."""
    if not isinstance(schema, (dict, bool)):
        raise InvalidSchemaError(f"a JSON schema must be an object or a boolean, not {type(schema).__name__}")
    try:
        return _Converter(schema).grammar()
    except RecursionError:
        raise InvalidSchemaError("schema nests too deeply") from None
