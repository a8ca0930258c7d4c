"""The functions a template may call: Go's built-ins (``eq``, ``len``, ``index``, ``printf``, ...)
and Ollama's additions (``json``, ``currentDate``, ``toTypeScriptType``, ...), in :data:`_BUILTINS`."""

from __future__ import annotations

import datetime
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from ..chat_template import TemplateError
from .values import _go_float, _type_name, go_format, go_json

# The largest prompt a template may write: far past any context window, short of exhausting memory.
# printf's width and precision, the strings functions take and return, and the executor's output
# (exec.py reads it here) are all held to it.
MAX_OUTPUT = 256 << 20


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
        digits: str | None
        if isinstance(arg, str):
            digits = arg.encode("utf-8").hex()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            digits = format(arg, "x")
        else:
            digits = None
        if digits is not None:
            return digits.upper() if verb == "X" else digits
    elif verb in "ob":
        if isinstance(arg, int) and not isinstance(arg, bool):
            return format(arg, verb)
    elif verb == "c" and isinstance(arg, int) and not isinstance(arg, bool):
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
        elif ch in "<>&=" or ord(ch) < 0x20:
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
