"""Modelfiles: parsing (errors name the line) and turning one into an /api/create request body.

Grammar, as Ollama's parser reads it: one instruction per line, keywords in any case; ``#`` at
the start of a line comments it out; a value is bare (to the end of the line), ``"quoted"`` or a
``\"\"\"heredoc\"\"\"`` that may span lines. ``PARAMETER name value`` and ``MESSAGE role text`` take a
first word before their value. FROM is required.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import A3SPowerError
from .parameters import format_params

COMMANDS = ("from", "license", "template", "system", "adapter", "parameter", "message", "requires")
MESSAGE_ROLES = ("system", "user", "assistant")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_]+")


class ModelfileError(A3SPowerError, ValueError):
    pass


@dataclass
class Command:
    name: str  # lower-case keyword; for PARAMETER the parameter's name, with ``kind`` "parameter"
    args: str
    line: int
    kind: str = ""

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name


@dataclass
class Modelfile:
    commands: list[Command] = field(default_factory=list)

    def of(self, kind: str) -> list[Command]:
        return [c for c in self.commands if c.kind == kind]


def _error(line: int, message: str) -> ModelfileError:
    return ModelfileError(f"(line {line}): {message}")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line = 1

    def eof(self) -> bool:
        return self.i >= len(self.text)

    def peek(self, n: int = 1) -> str:
        return self.text[self.i:self.i + n]

    def advance(self, n: int = 1) -> str:
        chunk = self.text[self.i:self.i + n]
        self.line += chunk.count("\n")
        self.i += n
        return chunk

    def skip_blank(self, newlines: bool) -> None:
        while not self.eof() and (self.peek() in " \t\r" or (newlines and self.peek() == "\n")):
            self.advance()

    def word(self) -> str:
        start = self.i
        while not self.eof() and not self.peek().isspace():
            self.i += 1
        return self.text[start:self.i]

    def rest_of_line(self) -> str:
        end = self.text.find("\n", self.i)
        end = len(self.text) if end < 0 else end
        value = self.text[self.i:end]
        self.i = end
        return value


def _value(s: _Scanner, start_line: int, what: str) -> str:
    s.skip_blank(newlines=False)
    if s.peek(3) == '"""':
        s.advance(3)
        end = s.text.find('"""', s.i)
        if end < 0:
            raise _error(start_line, f'unterminated """ in {what}: unexpected end of file')
        value = s.advance(end - s.i)
        s.advance(3)
        trailing = s.rest_of_line().strip()
        if trailing:
            raise _error(s.line, f"unexpected text after closing \"\"\": {trailing!r}")
        return value
    if s.peek() == '"':
        s.advance()
        out = []
        while True:
            if s.eof():
                raise _error(start_line, f"unterminated quote in {what}: unexpected end of file")
            ch = s.advance()
            if ch == "\\" and s.peek() in ('"', "\\"):
                out.append(s.advance())
            elif ch == '"':
                break
            else:
                out.append(ch)
        trailing = s.rest_of_line().strip()
        if trailing:
            raise _error(s.line, f"unexpected text after closing quote: {trailing!r}")
        return "".join(out)
    value = s.rest_of_line().strip()
    if not value:
        raise _error(start_line, f"missing value for {what}")
    return value


def parse_modelfile(text: str) -> Modelfile:
    """Parses a Modelfile; raises ModelfileError naming the line of the first problem."""
    if text.startswith("\ufeff"):
        text = text[1:]
    s = _Scanner(text.replace("\r\n", "\n"))
    mf = Modelfile()
    while True:
        s.skip_blank(newlines=True)
        if s.eof():
            break
        line = s.line
        if s.peek() == "#":
            s.rest_of_line()
            continue
        keyword = s.word()
        name = keyword.lower()
        if name not in COMMANDS:
            listed = ", ".join(f'"{c}"' for c in COMMANDS[:-1])
            raise _error(line, f'unknown command {keyword!r}: command must be one of {listed}, or "{COMMANDS[-1]}"')
        if name == "parameter":
            s.skip_blank(newlines=False)
            pname = s.word()
            if not pname or not _PARAM_NAME.fullmatch(pname):
                raise _error(line, f"invalid parameter name {pname!r}" if pname else "missing parameter name")
            mf.commands.append(Command(pname, _value(s, line, f"parameter {pname}"), line, "parameter"))
        elif name == "message":
            s.skip_blank(newlines=False)
            role = s.word().lower()
            if role not in MESSAGE_ROLES:
                raise _error(line, 'message role must be one of "system", "user", or "assistant"')
            mf.commands.append(Command("message", f"{role}: {_value(s, line, 'MESSAGE')}", line))
        else:
            mf.commands.append(Command(name, _value(s, line, name.upper()), line))
    if not mf.of("from"):
        raise ModelfileError("no FROM line")
    return mf


def _expand(path: str, base_dir: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base_dir / p


def _local_file(arg: str, base_dir: Path) -> Path | None:
    """FROM/ADAPTER name a file when one exists at that path (relative to the Modelfile)."""
    try:
        p = _expand(arg, base_dir)
        return p if p.exists() else None
    except (OSError, RuntimeError):
        return None


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return "sha256:" + h.hexdigest()


@dataclass
class CreatePlan:
    """An /api/create body, and the local files whose blobs must be uploaded first."""

    body: dict[str, Any]
    uploads: dict[str, Path] = field(default_factory=dict)  # digest -> file


def create_plan(mf: Modelfile, base_dir: Path) -> CreatePlan:
    """What Ollama's CLI sends for a Modelfile: files become blobs, the rest structured fields."""
    body: dict[str, Any] = {}
    uploads: dict[str, Path] = {}
    files: dict[str, str] = {}
    adapters: dict[str, str] = {}

    def add_file(arg: str, line: int, into: dict[str, str]) -> bool:
        path = _local_file(arg, base_dir)
        if path is None:
            return False
        if path.is_dir():  # a Hugging Face model folder: its files are uploaded, the server converts them
            from .convert import is_model_dir, model_files

            if into is adapters or not is_model_dir(path):
                raise _error(line, f"{arg}: not a model folder (config.json and .safetensors files)")
            for rel in model_files(path):
                digest = hash_file(path / rel)
                uploads[digest] = path / rel
                into[rel] = digest
            return True
        digest = hash_file(path)
        uploads[digest] = path
        into[path.name] = digest
        return True

    for c in mf.of("from"):
        if not add_file(c.args, c.line, files):
            if "from" in body or files:
                raise _error(c.line, "only one FROM may name a model")
            body["from"] = c.args
    for c in mf.of("adapter"):
        if not add_file(c.args, c.line, adapters):
            raise _error(c.line, f"adapter file {c.args!r} not found")
    if files:
        body["files"] = files
    if adapters:
        body["adapters"] = adapters
    for kind in ("template", "system"):
        if found := mf.of(kind):
            body[kind] = found[-1].args
    if licenses := mf.of("license"):
        body["license"] = [c.args for c in licenses]
    if requires := mf.of("requires"):
        body["requires"] = requires[-1].args
    if messages := mf.of("message"):
        body["messages"] = [dict(zip(("role", "content"), c.args.split(": ", 1))) for c in messages]
    raw: dict[str, list[str]] = {}
    for c in mf.of("parameter"):
        raw.setdefault(c.name.lower(), []).append(c.args)
    if raw:
        try:
            body["parameters"] = format_params(raw)
        except (A3SPowerError, ValueError) as exc:
            line = next(c.line for c in mf.of("parameter") if c.name.lower() in str(exc))
            raise _error(line, str(exc)) from None
    return CreatePlan(body, uploads)
