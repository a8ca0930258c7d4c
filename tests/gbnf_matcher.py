"""A small GBNF recognizer for tests: does a grammar's language contain a given string?

It reads the subset of llama.cpp's grammar syntax that our converter writes (literals, character
classes, rule references, groups, alternation and the * + ? {m} {m,} {m,n} repetitions) and
matches whole strings by computing, for each grammar element, the set of positions where a
match starting at a given position can end. llama.cpp itself checks the syntax in the tests;
this checks the language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Cls:
    negated: bool
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Seq:
    items: tuple


@dataclass(frozen=True)
class Alt:
    options: tuple


@dataclass(frozen=True)
class Rep:
    item: object
    low: int
    high: int | None


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "[": "[", "]": "]"}


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def skip(self, newlines: bool = True) -> None:
        while self.i < len(self.text):
            ch = self.text[self.i]
            if ch == "#":
                while self.i < len(self.text) and self.text[self.i] != "\n":
                    self.i += 1
            elif ch in " \t\r" or (newlines and ch == "\n"):
                self.i += 1
            else:
                break

    def char(self) -> str:
        ch = self.text[self.i]
        if ch != "\\":
            self.i += 1
            return ch
        kind = self.text[self.i + 1]
        if kind in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[kind]
            value = chr(int(self.text[self.i + 2:self.i + 2 + size], 16))
            self.i += 2 + size
            return value
        self.i += 2
        return _ESCAPES[kind]

    def alternatives(self, top: bool) -> Alt:
        options = [self.sequence(top)]
        while self.i < len(self.text) and self.text[self.i] == "|":
            self.i += 1
            options.append(self.sequence(top))
        return Alt(tuple(options))

    def sequence(self, top: bool) -> Seq:
        items = []
        while True:
            self.skip(newlines=not top)
            if self.i >= len(self.text) or self.text[self.i] in "|)\n":
                return Seq(tuple(items))
            items.append(self.postfix(self.primary()))

    def primary(self):
        ch = self.text[self.i]
        if ch == '"':
            self.i += 1
            out = []
            while self.text[self.i] != '"':
                out.append(self.char())
            self.i += 1
            return Lit("".join(out))
        if ch == "[":
            self.i += 1
            negated = self.text[self.i] == "^"
            if negated:
                self.i += 1
            ranges = []
            while self.text[self.i] != "]":
                low = self.char()
                high = low
                if self.text[self.i] == "-" and self.text[self.i + 1] != "]":
                    self.i += 1
                    high = self.char()
                ranges.append((ord(low), ord(high)))
            self.i += 1
            return Cls(negated, tuple(ranges))
        if ch == "(":
            self.i += 1
            inner = self.alternatives(top=False)
            self.skip()
            assert self.text[self.i] == ")", f"expected ) at {self.i}"
            self.i += 1
            return inner
        m = re.compile(r"[A-Za-z0-9_-]+").match(self.text, self.i)
        assert m, f"unexpected {ch!r} at {self.i}: {self.text[self.i:self.i + 30]!r}"
        self.i = m.end()
        return Ref(m.group())

    def postfix(self, item):
        while self.i < len(self.text):
            ch = self.text[self.i]
            if ch in "*+?":
                self.i += 1
                item = Rep(item, *{"*": (0, None), "+": (1, None), "?": (0, 1)}[ch])
            elif ch == "{":
                m = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.text, self.i)
                self.i = m.end()
                low = int(m.group(1))
                high = low if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
                item = Rep(item, low, high)
            else:
                return item
        return item


def parse(grammar: str) -> dict[str, Alt]:
    rules: dict[str, Alt] = {}
    reader = _Reader(grammar)
    while True:
        reader.skip()
        if reader.i >= len(grammar):
            return rules
        m = re.compile(r"([A-Za-z0-9_-]+)\s*::=").match(grammar, reader.i)
        assert m, f"expected a rule at {grammar[reader.i:reader.i + 40]!r}"
        reader.i = m.end()
        rules[m.group(1)] = reader.alternatives(top=True)


class Grammar:
    def __init__(self, text: str) -> None:
        self.rules = parse(text)
        missing = {r.name for r in self._refs()} - set(self.rules)
        assert not missing, f"undefined rules: {missing}"

    def _refs(self):
        def walk(node):
            if isinstance(node, Ref):
                yield node
            elif isinstance(node, (Seq, Alt)):
                for child in (node.items if isinstance(node, Seq) else node.options):
                    yield from walk(child)
            elif isinstance(node, Rep):
                yield from walk(node.item)

        for alt in self.rules.values():
            yield from walk(alt)

    def matches(self, text: str, start: str = "root") -> bool:
        rules = self.rules

        @cache
        def rule_ends(name: str, pos: int) -> frozenset[int]:
            return ends(rules[name], pos)

        def ends(node, pos: int) -> frozenset[int]:
            if isinstance(node, Lit):
                return frozenset([pos + len(node.text)]) if text.startswith(node.text, pos) else frozenset()
            if isinstance(node, Cls):
                if pos >= len(text):
                    return frozenset()
                inside = any(lo <= ord(text[pos]) <= hi for lo, hi in node.ranges)
                return frozenset([pos + 1]) if inside != node.negated else frozenset()
            if isinstance(node, Ref):
                return rule_ends(node.name, pos)
            if isinstance(node, Seq):
                current = frozenset([pos])
                for item in node.items:
                    current = frozenset().union(*(ends(item, p) for p in current))
                    if not current:
                        break
                return current
            if isinstance(node, Alt):
                return frozenset().union(*(ends(option, pos) for option in node.options))
            if isinstance(node, Rep):
                result = {pos} if node.low == 0 else set()
                current = frozenset([pos])
                count = 0
                while current and (node.high is None or count < node.high):
                    current = frozenset().union(*(ends(node.item, p) for p in current))
                    count += 1
                    if count >= node.low:
                        if node.high is None and current <= result:
                            break
                        result |= current
                return frozenset(result)
            raise TypeError(node)

        return len(text) in rule_ends(start, 0)
