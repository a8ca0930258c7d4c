"""The values templates see, and how Go prints them: ``fmt``'s ``%v`` and ``encoding/json``.

A :class:`TemplateRecord` is a JSON object with Go-style field access; :class:`TemplateList` and
:class:`PropertyType` are Ollama's ``api.Tools`` and ``api.PropertyType``, which print as Go prints them.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, is_dataclass
from decimal import Decimal
from typing import Any, cast

from ..chat_template import TemplateError

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z]|[0-9]|$)|[A-Z]?[a-z0-9]+|[A-Z]+")


@functools.lru_cache(maxsize=512)
def _json_key_candidates(field_name: str) -> tuple[str, ...]:
    """Go field names (``ToolCalls``) to the JSON keys a request dict uses (``tool_calls``)."""
    words = _WORDS.findall(field_name)
    snake = "_".join(w.lower() for w in words)
    camel = field_name[:1].lower() + field_name[1:]
    candidates = [field_name, snake, camel, field_name.lower(), "$" + field_name.lower()]
    return tuple(dict.fromkeys(candidates))


class TemplateRecord(dict):
    """A JSON object as templates see it: Go-style capitalised field access (``.ToolCalls``) over
    its original keys (``tool_calls``), printed and ``json``-encoded as that JSON object, the way
    Ollama's API structs print through their ``String`` methods."""

    def __init__(self, data: dict[str, Any] | None = None, zero: dict[str, Any] | None = None) -> None:
        super().__init__(data or {})
        # Go structs have every field, empty when unset: ``eq .ToolName ""`` must hold.
        self.zero = zero or {}

    def field(self, name: str) -> Any:
        for key in _json_key_candidates(name):
            if key in self:
                return self[key]
        for key in _json_key_candidates(name):
            if key in self.zero:
                return self.zero[key]
        return None

    def __str__(self) -> str:
        return go_json(self)


class TemplateList(list):
    """A list that prints as a JSON array, like Ollama's ``api.Tools`` (``{{ $.Tools }}``)."""

    def __str__(self) -> str:
        return go_json(self)


class PropertyType(list):
    """A tool parameter's ``type`` as Ollama holds it (``api.PropertyType``): always a list of
    names for templates to ``range``, ``len`` and ``index`` (gpt-oss's template does), printed and
    JSON-encoded as the single name when there is one."""

    def __str__(self) -> str:
        return self[0] if len(self) == 1 else "[" + " ".join(self) + "]"


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                 "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_NEEDS_ESCAPE = re.compile('["\\\\<>&\u2028\u2029\x00-\x1f]')


def _json_string(text: str) -> str:
    def escape(m: re.Match) -> str:
        ch = m.group()
        return _JSON_ESCAPES.get(ch) or f"\\u{ord(ch):04x}"

    return '"' + _JSON_NEEDS_ESCAPE.sub(escape, text) + '"'


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest digits that round-trip ``value`` and the exponent of the first one."""
    sign, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return text, len(digits) + cast(int, exponent) - 1  # an int for every finite value


def _positional(value: float) -> str:
    digits, exp = _shortest_digits(value)
    if digits == "0":
        text = "0"
    elif exp < 0:
        text = "0." + "0" * (-exp - 1) + digits
    elif exp + 1 >= len(digits):
        text = digits + "0" * (exp + 1 - len(digits))
    else:
        text = digits[: exp + 1] + "." + digits[exp + 1:]
    return ("-" if value < 0 else "") + text


def _exponential(value: float, min_exp_digits: int = 2) -> str:
    digits, exp = _shortest_digits(value)
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{'-' if value < 0 else ''}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):0{min_exp_digits}d}"


def _go_json_float(value: float) -> str | None:
    if math.isnan(value) or math.isinf(value):
        return None  # Go's Marshal fails; Ollama's json func then yields ""
    if value != 0 and (abs(value) < 1e-6 or abs(value) >= 1e21):
        return _exponential(value, min_exp_digits=1)
    return _positional(value)


def go_json(value: Any) -> str:
    """``json.Marshal`` as Go does it: compact, ``<>&`` escaped, floats without a needless ``.0``.
    Returns "" for what Go cannot encode, like Ollama's ``json`` template function."""
    try:
        return _encode_json(value)
    except (TypeError, ValueError):
        return ""


def _encode_json(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = _go_json_float(value)
        if text is None:
            raise ValueError("unsupported float")
        return text
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, PropertyType) and len(value) == 1:
        return _json_string(value[0])
    if isinstance(value, dict):
        return "{" + ",".join(_json_string(str(k)) + ":" + _encode_json(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode_json(v) for v in value) + "]"
    if is_dataclass(value) and not isinstance(value, type):
        return _encode_json(asdict(value))
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _go_float(value: float) -> str:
    """fmt's %v of a float64: shortest digits, exponent form from 1e21 up and below 1e-4."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    _, exp = _shortest_digits(value)
    return _exponential(value) if exp < -4 or exp >= 21 else _positional(value)


def _type_name(value: Any) -> str:
    return {type(None): "<nil>", bool: "bool", int: "int", float: "float64", str: "string"}.get(
        type(value), "[]interface {}" if isinstance(value, (list, tuple)) else
        "map[string]interface {}" if isinstance(value, dict) else type(value).__name__)


def go_format(value: Any) -> str:
    """``fmt.Sprint`` of one value (the ``%v`` verb)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (TemplateRecord, TemplateList, PropertyType)):
        return str(value)
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: (str(type(kv[0])), kv[0]))
        return "map[" + " ".join(f"{go_format(k)}:{go_format(v)}" for k, v in items) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if callable(value):
        raise TemplateError("cannot print a function value")
    return str(value)


def _output_text(value: Any) -> str:
    # A missing value prints as nothing: Ollama templates print optional fields unguarded.
    return "" if value is None else go_format(value)
