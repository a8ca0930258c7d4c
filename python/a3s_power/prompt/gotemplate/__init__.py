"""Go's text/template, the part of it that Ollama's model templates use.

Ollama registry models carry their prompt format as a Go template (the TEMPLATE layer, or a
Modelfile's TEMPLATE). This module parses and executes those templates in pure Python with Go's
semantics where a prompt could notice the difference: whitespace trimming, truthiness, ``eq`` with
several operands, byte-length ``len``, ``fmt``-style printing, and ``json`` written the way Go's
``encoding/json`` writes it (compact, ``<>&`` escaped).

One deliberate difference: a missing map key (or a field of a missing value) is empty and false
instead of Go's ``<no value>``, because Ollama fills only some of a template's fields per request.

:func:`template_data` builds the values Ollama passes to a template (``.Messages``, ``.Tools``,
``.System``, ``.Think``, ...) from OpenAI/Ollama-style request dicts, and :meth:`GoTemplate.render_chat`
reproduces Ollama's whole execution, including templates written before ``.Messages`` existed.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import re
import urllib.parse
from dataclasses import asdict, dataclass, field, is_dataclass
from decimal import Decimal
from typing import Any, Callable

from ..chat_template import TemplateError

__all__ = ["GoTemplate", "TemplateRecord", "TemplateList", "template_data", "go_json"]


# ----------------------------------------------------------------------------------------------
# Values handed to templates
# ----------------------------------------------------------------------------------------------

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


def _record(value: Any) -> Any:
    """Nested dicts become records, so ``.Function.Parameters.Properties`` and ``json`` both work."""
    if isinstance(value, dict):
        return TemplateRecord({k: _record(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return [_record(v) for v in value]
    return value


def _tool_record(tool: Any) -> Any:
    """A request's tool as Ollama's ``api.Tool`` decodes it: property types become lists."""
    record = _record(tool)

    def fix(properties: Any) -> None:
        if not isinstance(properties, dict):
            return
        for prop in properties.values():
            if not isinstance(prop, dict):
                continue
            kind = prop.get("type")
            if isinstance(kind, str):
                prop["type"] = PropertyType([kind])
            elif isinstance(kind, list) and all(isinstance(k, str) for k in kind):
                prop["type"] = PropertyType(kind)
            fix(prop.get("properties"))
            for variant in prop.get("anyOf") or []:
                if isinstance(variant, dict):
                    fix({"": variant})

    function = record.get("function") if isinstance(record, dict) else None
    if isinstance(function, dict) and isinstance(function.get("parameters"), dict):
        fix(function["parameters"].get("properties"))
    return record


def _arguments(raw: Any) -> dict[str, Any]:
    # OpenAI sends arguments as a JSON string, Ollama as an object; templates want the object.
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _text_content(content: Any) -> str:
    # OpenAI content parts: keep the text ones, in order.
    if content is None:
        return ""
    if isinstance(content, list):
        return "".join(p["text"] for p in content
                       if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str))
    return str(content)


_MESSAGE_ZERO = {"role": "", "content": "", "thinking": "", "tool_calls": [], "tool_name": "",
                 "tool_call_id": "", "images": []}


def _check_message(message: Any) -> None:
    """Fields a request may send in any shape: wrong ones are the client's error (as when Ollama
    decodes the request), not a crash halfway through building the template's data."""
    if not isinstance(message, dict):
        raise TemplateError("invalid message: each message must be an object")
    if message.get("thinking") and not isinstance(message["thinking"], str):
        raise TemplateError("invalid message: thinking must be a string")
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("function") or {}, dict) for c in calls):
        raise TemplateError("invalid message: tool_calls must be a list of objects with a function object")
    if message.get("images") and not isinstance(message["images"], list):
        raise TemplateError("invalid message: images must be a list")


def _message_record(message: dict[str, Any]) -> TemplateRecord:
    _check_message(message)
    data: dict[str, Any] = {"role": str(message.get("role", "")).lower(),
                            "content": _text_content(message.get("content"))}
    if message.get("thinking"):
        data["thinking"] = message["thinking"]
    calls = []
    for call in message.get("tool_calls") or []:
        function = dict(call.get("function") or {})
        function["arguments"] = _arguments(function.get("arguments"))
        record = {k: v for k, v in call.items() if k != "function"}
        record["function"] = function
        calls.append(_record(record))
    if calls:
        data["tool_calls"] = calls
    tool_name = message.get("tool_name") or (message.get("name") if data["role"] == "tool" else None)
    if tool_name:
        data["tool_name"] = tool_name
    if message.get("tool_call_id"):
        data["tool_call_id"] = message["tool_call_id"]
    if message.get("images"):
        data["images"] = list(message["images"])
    return TemplateRecord(data, zero=_MESSAGE_ZERO)


def _collate(messages: list[dict[str, Any]]) -> tuple[str, list[TemplateRecord]]:
    """Ollama's collate: system messages are also joined into ``.System``, and consecutive
    messages of one role (tool results excepted) are merged into one."""
    system: list[str] = []
    collated: list[TemplateRecord] = []
    for message in messages:
        record = _message_record(message)
        if record["role"] == "system":
            system.append(record["content"])
        previous = collated[-1] if collated else None
        if previous is not None and previous["role"] == record["role"] and record["role"] != "tool":
            previous["content"] += "\n\n" + record["content"]
            # Ollama keeps only the content; keeping calls and images loses nothing a template could use.
            for key in ("tool_calls", "images"):
                if record.get(key):
                    previous[key] = list(previous.get(key) or []) + record[key]
            if record.get("thinking"):
                previous["thinking"] = "\n\n".join(t for t in (previous.get("thinking"), record["thinking"]) if t)
        else:
            collated.append(record)
    return "\n\n".join(system), collated


def template_data(
    messages: list[dict[str, Any]],
    *,
    system: str = "",
    prompt: str = "",
    response: str = "",
    suffix: str = "",
    tools: list[dict[str, Any]] | None = None,
    think: bool | None = None,
    think_level: str = "",
) -> dict[str, Any]:
    """What Ollama passes to a model's Go template, built from OpenAI/Ollama-style dicts.

    ``.System`` is ``system`` when given, else the request's system messages joined by a blank
    line (which stay in ``.Messages`` too, as in Ollama). ``think`` None means "not set":
    ``.Think`` is then false and ``.IsThinkSet`` false; a ``think_level`` implies thinking on.
    """
    joined_system, collated = _collate(messages)
    think_on = bool(think) if think is not None else bool(think_level)
    return {
        "System": system or joined_system,
        "Prompt": prompt,
        "Response": response,
        "Suffix": suffix,
        "Messages": collated,
        "Tools": TemplateList(_tool_record(t) for t in tools or []),
        "Think": think_on,
        "ThinkLevel": think_level,
        "IsThinkSet": think is not None or bool(think_level),
    }


# ----------------------------------------------------------------------------------------------
# Go's encoding/json and fmt, as far as templates can observe them
# ----------------------------------------------------------------------------------------------

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
    return text, len(digits) + exponent - 1


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


# ----------------------------------------------------------------------------------------------
# Built-in functions
# ----------------------------------------------------------------------------------------------

def _truth(value: Any) -> bool:
    """Go's notion of true: not the zero value and not empty."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return len(value) > 0
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _basic_equal(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        if isinstance(a, bool) and isinstance(b, bool):
            return a == b
        raise TemplateError(f"incompatible types for comparison: {_type_name(a)} and {_type_name(b)}")
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, (list, tuple, dict)) or isinstance(b, (list, tuple, dict)):
        raise TemplateError(f"non-comparable type {_type_name(a if isinstance(a, (list, tuple, dict)) else b)}")
    if type(a) is not type(b) and (isinstance(a, str) or isinstance(b, str) or _is_number(a) or _is_number(b)):
        raise TemplateError(f"incompatible types for comparison: {_type_name(a)} and {_type_name(b)}")
    return a == b


def _eq(first: Any, *others: Any) -> bool:
    # Go's eq compares its first operand with each of the others: eq a b c is a==b || a==c.
    if not others:
        raise TemplateError("missing argument for comparison")
    return any(_basic_equal(first, other) for other in others)


def _ne(a: Any, b: Any) -> bool:
    return not _basic_equal(a, b)


def _ordered(a: Any, b: Any) -> tuple[Any, Any]:
    if (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
        return a, b
    raise TemplateError(f"incompatible types for comparison: {_type_name(a)} and {_type_name(b)}")


def _lt(a: Any, b: Any) -> bool:
    a, b = _ordered(a, b)
    return a < b


def _le(a: Any, b: Any) -> bool:
    a, b = _ordered(a, b)
    return a <= b


def _gt(a: Any, b: Any) -> bool:
    a, b = _ordered(a, b)
    return a > b


def _ge(a: Any, b: Any) -> bool:
    a, b = _ordered(a, b)
    return a >= b


def _len(value: Any) -> int:
    if value is None:
        return 0  # an unset slice field
    if isinstance(value, str):
        return len(value.encode("utf-8"))  # Go counts bytes
    if isinstance(value, (list, tuple, dict, bytes)):
        return len(value)
    raise TemplateError(f"len of type {_type_name(value)}")


def _as_index(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TemplateError(f"cannot index slice/array with type {_type_name(value)}")


def _index(item: Any, *indexes: Any) -> Any:
    for key in indexes:
        if isinstance(item, dict):
            item = item.get(key)
        elif isinstance(item, (list, tuple, str)):
            i = _as_index(key)
            if isinstance(item, str):
                item = item.encode("utf-8")  # Go indexes a string's bytes: the bounds are theirs too
            if not 0 <= i < len(item):
                raise TemplateError(f"error calling index: index out of range: {i}")
            item = item[i]
        elif item is None:
            return None
        else:
            raise TemplateError(f"can't index item of type {_type_name(item)}")
    return item


def _slice(item: Any, *bounds: Any) -> Any:
    if len(bounds) > 3:
        raise TemplateError("too many slice indexes")
    if isinstance(item, str):
        if len(bounds) == 3:
            raise TemplateError("cannot 3-index slice a string")
        data = item.encode("utf-8")
        indexes = [_as_index(b) for b in bounds]
        start = indexes[0] if indexes else 0
        stop = indexes[1] if len(indexes) > 1 else len(data)
        if not 0 <= start <= stop <= len(data):
            raise TemplateError(f"error calling slice: index out of range: {start}:{stop}")
        return data[start:stop].decode("utf-8", "replace")
    if isinstance(item, (list, tuple)):
        indexes = [_as_index(b) for b in bounds]
        start = indexes[0] if indexes else 0
        stop = indexes[1] if len(indexes) > 1 else len(item)
        if not 0 <= start <= stop <= len(item):
            raise TemplateError(f"error calling slice: index out of range: {start}:{stop}")
        return list(item[start:stop])
    if item is None:
        return []
    raise TemplateError(f"can't slice item of type {_type_name(item)}")


def _sprint(*args: Any) -> str:
    # fmt.Sprint puts a space between operands when neither side is a string.
    out = []
    previous_is_string = True
    for i, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if i > 0 and not is_string and not previous_is_string:
            out.append(" ")
        out.append(go_format(arg))
        previous_is_string = is_string
    return "".join(out)


def _sprintln(*args: Any) -> str:
    return " ".join(go_format(a) for a in args) + "\n"


def _go_quote(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\r\t\a\b\f\v":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\a": "\\a", "\b": "\\b", "\f": "\\f",
                        "\v": "\\v"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?([a-zA-Z%])")


def _format_verb(verb: str, flags: str, precision: int | None, arg: Any) -> str:
    if verb in "vs":
        text = go_format(arg) if not (verb == "s" and isinstance(arg, bytes)) else arg.decode("utf-8", "replace")
        return text[:precision] if precision is not None and verb == "s" else text
    if verb == "d":
        if _is_number(arg) and float(arg).is_integer():
            return ("+" if "+" in flags and arg >= 0 else "") + str(int(arg))
    elif verb in "fFeEgG":
        if _is_number(arg):
            if verb in "gG" and precision is None:
                text = _go_float(float(arg))
                return text.upper() if verb == "G" else text
            return format(float(arg), ("+" if "+" in flags else "") + f".{6 if precision is None else precision}"
                          + verb)
    elif verb == "t":
        if isinstance(arg, bool):
            return "true" if arg else "false"
    elif verb == "q":
        if isinstance(arg, str):
            return _go_quote(arg)
        if isinstance(arg, int) and not isinstance(arg, bool):
            return "'" + chr(arg) + "'"
    elif verb in "xX":
        if isinstance(arg, str):
            text = arg.encode("utf-8").hex()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            text = format(arg, "x")
        else:
            text = None
        if text is not None:
            return text.upper() if verb == "X" else text
    elif verb in "ob":
        if isinstance(arg, int) and not isinstance(arg, bool):
            return format(arg, verb)
    elif verb == "c":
        if isinstance(arg, int) and not isinstance(arg, bool):
            return chr(arg)
    return f"%!{verb}({_type_name(arg)}={go_format(arg)})"


def _sprintf(fmt: Any, *args: Any) -> str:
    if not isinstance(fmt, str):
        raise TemplateError(f"printf: format must be a string, not {_type_name(fmt)}")
    out: list[str] = []
    position = 0
    used = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[position:m.start()])
        position = m.end()
        flags, width, precision, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[used]
        used += 1
        if precision and int(precision) > MAX_OUTPUT:
            # %.999999999f would be one allocation of a gigabyte, which no render timeout can stop.
            raise TemplateError(f"printf precision {precision} is larger than a prompt may be")
        text = _format_verb(verb, flags, int(precision or 0) if precision is not None else None, arg)
        if width:
            size = int(width)
            if size > MAX_OUTPUT:
                raise TemplateError(f"printf width {size} is larger than a prompt may be")
            if "-" in flags:
                text = text.ljust(size)
            elif "0" in flags and _is_number(arg):
                sign = text[0] if text[:1] in "+-" else ""
                text = sign + text[len(sign):].rjust(size - len(sign), "0")
            else:
                text = text.rjust(size)
        out.append(text)
    out.append(fmt[position:])
    if used < len(args):
        extra = ", ".join(f"{_type_name(a)}={go_format(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _html_escape(*args: Any) -> str:
    text = _sprint(*args) if len(args) != 1 or not isinstance(args[0], str) else args[0]
    return (text.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&#34;").replace("\x00", "\ufffd"))


def _js_escape(*args: Any) -> str:
    text = _sprint(*args) if len(args) != 1 or not isinstance(args[0], str) else args[0]
    out = []
    for ch in text:
        if ch in "\\'\"":
            out.append("\\" + ch)
        elif ch in "<>&=":
            out.append(f"\\u{ord(ch):04X}")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def _urlquery(*args: Any) -> str:
    text = _sprint(*args) if len(args) != 1 or not isinstance(args[0], str) else args[0]
    return urllib.parse.quote_plus(text, safe="-_.~")


def _call(function: Any, *args: Any) -> Any:
    if not callable(function):
        raise TemplateError(f"can't call non-function of type {_type_name(function)}")
    return function(*args)


def _current_date() -> str:
    return datetime.date.today().isoformat()


def _yesterday_date() -> str:
    return (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}


def _to_typescript_type(prop: Any) -> str:
    """A tool parameter's JSON Schema type as TypeScript, as Ollama's harmony templates print it."""
    if not isinstance(prop, dict):
        return "any"
    if prop.get("anyOf"):
        return " | ".join(_to_typescript_type(p) for p in prop["anyOf"])
    if prop.get("enum"):
        return " | ".join(go_json(v) for v in prop["enum"])
    types = prop.get("type")
    if not types:
        return "any"
    if isinstance(types, str):
        types = [types]
    rendered = []
    for t in types:
        if t == "array" and isinstance(prop.get("items"), dict) and prop["items"].get("type"):
            rendered.append(_to_typescript_type(prop["items"]) + "[]")
        else:
            rendered.append(_TS_TYPES.get(t, "any"))
    return " | ".join(rendered)


_BUILTINS: dict[str, Callable[..., Any]] = {
    "and": lambda *a: a[-1],  # evaluated lazily by the executor; listed so the parser knows them
    "or": lambda *a: a[-1],
    "not": lambda a: not _truth(a),
    "eq": _eq, "ne": _ne, "lt": _lt, "le": _le, "gt": _gt, "ge": _ge,
    "len": _len, "index": _index, "slice": _slice,
    "print": _sprint, "printf": _sprintf, "println": _sprintln,
    "html": _html_escape, "js": _js_escape, "urlquery": _urlquery, "call": _call,
    # Ollama's additions (template/template.go)
    "json": go_json, "currentDate": _current_date, "yesterdayDate": _yesterday_date,
    "toTypeScriptType": _to_typescript_type,
}


# ----------------------------------------------------------------------------------------------
# Lexer
# ----------------------------------------------------------------------------------------------

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
                m = _IDENT.match(src, pos + 1)
                self.tokens.append(_Token("field", m.group(), pos))
                pos = m.end()
            elif ch.isdigit() or (ch in "+-." and pos + 1 < len(src) and src[pos + 1].isdigit()):
                m = _NUMBER.match(src, pos)
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
                m = _IDENT.match(src, pos)
                word = m.group()
                kind = ("keyword" if word in _KEYWORDS else "bool" if word in ("true", "false")
                        else "nil" if word == "nil" else "ident")
                value = (word == "true") if kind == "bool" else word
                self.tokens.append(_Token(kind, value, pos))
                pos = m.end()
            else:
                raise self.error(pos, f"unexpected {ch!r} in command")


# ----------------------------------------------------------------------------------------------
# Parse tree
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Execution
# ----------------------------------------------------------------------------------------------

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


# The largest prompt a template may write: far past any context window, short of exhausting memory.
MAX_OUTPUT = 256 << 20


class _Executor:
    def __init__(self, template: "GoTemplate", out: list[str]) -> None:
        self.template = template
        self.functions = template.functions
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
        if self.size > MAX_OUTPUT:
            raise TemplateError(f"the rendered prompt is larger than {MAX_OUTPUT >> 20} MiB")
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
        body = self.template.defines.get(node.name)
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
        if sum(len(a) for a in args if isinstance(a, str)) > MAX_OUTPUT:
            raise TemplateError(f"error calling {name}: a string larger than a prompt may be")
        try:
            result = self.functions[name](*args)
        except TemplateError:
            raise
        except TypeError as e:
            raise TemplateError(f"error calling {name}: wrong arguments: {e}") from None
        except Exception as e:  # a caller-supplied function may fail any way it likes
            raise TemplateError(f"error calling {name}: {e}") from None
        if isinstance(result, str) and len(result) > MAX_OUTPUT:
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


# ----------------------------------------------------------------------------------------------
# Public interface
# ----------------------------------------------------------------------------------------------

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
        executor = _Executor(self, out)
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
            executor = _Executor(self, out)
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
