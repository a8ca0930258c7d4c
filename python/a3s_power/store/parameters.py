"""Model parameters (Modelfile PARAMETER lines, the params layer): typing them and printing them.

Values are typed by the option they name, as Ollama's ``api.FormatParams`` does; ``stop`` (and any
parameter given more than once) is a list. ``show`` prints them as Go's ``%-30s %#v`` lines.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import A3SPowerError, InvalidOptionError
from ..option_kinds import IGNORED_OPTIONS, LOAD_OPTIONS, REQUEST_OPTIONS, coerce


class UnknownParameter(A3SPowerError, ValueError):
    pass


def _option_kinds() -> dict[str, str]:
    kinds = {**LOAD_OPTIONS, **REQUEST_OPTIONS}
    kinds.update({name: "any" for name in IGNORED_OPTIONS})
    kinds["stop"] = "list"
    return kinds


def _kind(kind: str) -> str:
    for simple in ("bool", "int", "float", "str"):
        if kind == simple or kind == f"<class '{simple}'>":
            return simple
    return "list" if kind.startswith(("tuple", "list")) or kind == "list" else kind


def format_params(raw: dict[str, list[str]]) -> dict[str, Any]:
    """Types PARAMETER values (strings, several per name allowed); raises UnknownParameter."""
    kinds = _option_kinds()
    out: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in kinds:
            raise UnknownParameter(f"unknown parameter '{name}'")
        kind = _kind(kinds[name])
        if kind == "list":
            out[name] = list(values)
            continue
        typed = []
        for value in values:
            try:
                typed.append(coerce(name, kind, value) if kind in ("bool", "int", "float", "str") else value)
            except InvalidOptionError as exc:
                raise InvalidOptionError(f"invalid parameter {name!r}: {exc}") from None
        out[name] = typed[0] if len(typed) == 1 else typed
    return out


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Checks a structured ``parameters`` object (the /api/create body) the same way."""
    raw: dict[str, list[str]] = {}
    for name, value in params.items():
        values = value if isinstance(value, list) else [value]
        raw[name] = [v if isinstance(v, str) else json.dumps(v) for v in values]
    return format_params(raw)


def go_quote(text: str) -> str:
    """A string as Go's ``%#v`` (strconv.Quote) prints it."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable() and code > 0x7F:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    return str(value)


def parameters_text(params: dict[str, Any]) -> str:
    """show's ``parameters``: one ``%-30s %#v`` line per value, sorted by name."""
    lines = []
    for name in sorted(params):
        value = params[name]
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{name:<30} {go_value(item)}")
    return "\n".join(lines)
