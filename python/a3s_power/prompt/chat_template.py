"""Hugging Face style Jinja chat templates, as GGUF files carry them in ``tokenizer.chat_template``.

Rendered in Jinja's immutable sandbox with what those templates expect: ``messages``, ``tools``,
``add_generation_prompt``, ``bos_token``/``eos_token``, ``raise_exception``, ``strftime_now`` and a
``tojson`` that keeps non-ASCII text as it is.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import string
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Undefined, markup_join
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import A3SPowerError

# What a model without a template gets: ChatML, which most small chat models speak.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class TemplateError(A3SPowerError):
    """A chat template that cannot be parsed or that refused the conversation."""

    http_status = 400


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template error: {message}")


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


# The most one operation in a template may make: a string or list of this many items, a number of
# this many bits. Jinja's sandbox bounds range() (100,000 items) but not `'x' * 10**10`, `s ~ s` in a
# loop or `'x'.center(10**10)`: each is one allocation that no render timeout can stop.
MAX_OPERATION_SIZE = 1 << 24
# Big integers are only ever arithmetic in a template (printing one past 4,300 digits fails), and
# multiplying or dividing two of them is one C call that takes time quadratic in their size.
MAX_INTEGER_BITS = 1 << 16


def _too_large(what: str) -> TemplateError:
    return TemplateError(f"chat template error: {what} larger than the template limit")


def _size(value: Any) -> int:
    """Characters or items a value holds, a sequence's strings counted in full."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return len(value) + sum(len(v) for v in value if isinstance(v, str))
    return 0


def _bounded(value: Any) -> Any:
    """What an operation made, refused when it is past the limit: a later operation on it could
    not be bounded in turn."""
    if _size(value) > MAX_OPERATION_SIZE:
        raise _too_large("a value")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Methods and filters that make as much as an integer argument says: a width is padding allocated
# at once, batch() fills a list at once, slice() makes that many lists.
_COUNTED = {"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "batch", "slice", "tojson"}


def _check_counts(values: Any) -> None:
    if any(_is_int(v) and abs(v) > MAX_OPERATION_SIZE for v in values):
        raise _too_large("a width or count")


_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")


def _check_format(text: str, values: list[Any], fields: int, widths: list[str]) -> None:
    """``text`` formatted with ``values``: each of its ``fields`` may be as wide as its width or
    as the largest value."""
    if "*" in widths or any("{" in w for w in widths):  # widths taken from the values
        _check_counts(values)
    numbers = [int(n) for w in widths for n in re.findall(r"\d+", w)]
    if any(n > MAX_OPERATION_SIZE for n in numbers):
        raise _too_large("a format width")
    largest = max([_size(v) for v in values] + numbers + [64])
    if len(text) + fields * largest > MAX_OPERATION_SIZE:
        raise _too_large("a formatted string")


def _check_percent(text: str, right: Any) -> None:
    values = list(right.values() if isinstance(right, dict) else right if isinstance(right, tuple) else [right])
    found = _PERCENT_FIELD.findall(text)
    _check_format(text, values, len(found), [w for field in found for w in field if w])


def _check_str_format(text: str, values: list[Any]) -> None:
    fields = [f for f in string.Formatter().parse(text) if f[1] is not None]
    _check_format(text, values, len(fields), [f[2] or "" for f in fields])


def _check_growth(name: str, subject: Any, arguments: dict[str, Any]) -> None:
    """The operations whose result can be far larger than what they were given, by the names of
    both the str methods and the filters."""
    if not isinstance(subject, str):
        return
    if name == "replace":
        old, new = arguments.get("old"), arguments.get("new")
        if isinstance(old, str) and isinstance(new, str) and \
                len(subject) + (subject.count(old) if old else len(subject) + 1) * len(new) > MAX_OPERATION_SIZE:
            raise _too_large("a replacement")
    elif name == "expandtabs":
        tabsize = arguments.get("tabsize", 8)
        if _is_int(tabsize) and len(subject) + subject.count("\t") * tabsize > MAX_OPERATION_SIZE:
            raise _too_large("an expansion")
    elif name == "indent":
        width = arguments.get("width", 4)
        width = len(width) if isinstance(width, str) else width if _is_int(width) else 0
        if len(subject) + (subject.count("\n") + 1) * width > MAX_OPERATION_SIZE:
            raise _too_large("an indentation")
    elif name == "wordwrap":
        wrapstring = arguments.get("wrapstring") or "\n"
        if isinstance(wrapstring, str) and len(subject) * (1 + len(wrapstring)) > MAX_OPERATION_SIZE:
            raise _too_large("a wrapped text")
    elif name == "translate":
        table = arguments.get("table")
        longest = max((_size(v) for v in table.values()), default=0) if isinstance(table, dict) else 0
        if len(subject) * max(longest, 1) > MAX_OPERATION_SIZE:
            raise _too_large("a translation")


def _check_join(separator: Any, items: list[Any]) -> None:
    if isinstance(separator, str) and len(items) * len(separator) + _size(items) > MAX_OPERATION_SIZE:
        raise _too_large("a joined string")


_STR_METHOD_ARGUMENTS = {"replace": ("old", "new"), "expandtabs": ("tabsize",), "translate": ("table",)}


def _check_str_method(method: Any, receiver: str, args: tuple, kwargs: dict) -> tuple:
    """Before ``receiver.method(*args)``; returns the arguments to call it with."""
    name = getattr(method, "__name__", "")
    if name in _COUNTED:
        _check_counts((*args, *kwargs.values()))
    if _size(receiver) + sum(_size(a) for a in args) > MAX_OPERATION_SIZE:
        raise _too_large("an operation")
    if name == "join" and args:
        items = list(args[0]) if not isinstance(args[0], (list, tuple, str)) else args[0]
        _check_join(receiver, list(items))
        args = (items, *args[1:])
    else:
        _check_growth(name, receiver, {**dict(zip(_STR_METHOD_ARGUMENTS.get(name, ()), args)), **kwargs})
    return args


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter that refuses work past the limit (see MAX_OPERATION_SIZE)."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return function(*args, **kwargs)  # wrong arguments: the filter's own error
        arguments = bound.arguments
        rest = [v for k, v in arguments.items() if k not in ("eval_ctx", "environment", "context")]
        subject: Any = rest[0] if rest else None
        if name in _COUNTED:
            _check_counts(rest[1:])
        if name in ("join", "sum"):
            items = subject if isinstance(subject, (list, tuple, str)) else list(subject)
            bound.arguments[next(k for k in arguments if k not in ("eval_ctx", "environment", "context"))] = items
            if name == "join":
                _check_join(arguments.get("d", ""), list(items))
            elif isinstance(arguments.get("start"), (list, tuple)) and \
                    len(items) * sum(len(i) for i in items if isinstance(i, (list, tuple))) > MAX_OPERATION_SIZE:
                # sum() of lists copies the running total at every step, in one C call: quadratic.
                raise _too_large("a sum of lists")
        elif name == "format" and isinstance(subject, str):
            _check_percent(subject, tuple(arguments.get("args", ())) or arguments.get("kwargs", {}))
        else:
            _check_growth(name, subject, arguments)
        return _bounded(function(*bound.args, **bound.kwargs))

    return run


class _Hidden:
    """A function, method or class a template got hold of: it calls like the original, but
    printing it (or making it a string any other way) is an error, not Python's repr of it."""

    __slots__ = ("target",)

    def __init__(self, target: Any) -> None:
        self.target = target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.target(*args, **kwargs)

    def __str__(self) -> str:
        raise TemplateError("chat template error: a function cannot be printed")

    __repr__ = __str__


def _hidden(value: Any) -> Any:
    # Undefined is callable too (calling it is the undefined error): it stays as it is.
    if callable(value) and not isinstance(value, (Undefined, _Hidden)):
        return _Hidden(value)
    return value


class _BoundedCodeGenerator(CodeGenerator):
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # `a ~ b`: joined by the environment, which bounds the result, instead of str_join.
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.volatile"
        else:
            markup = "True" if frame.eval_ctx.autoescape else "False"
        self.write("environment.bounded_concat((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write(f"), {markup})")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})
    code_generator_class = _BoundedCodeGenerator

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and _is_int(n) and len(seq) * n > MAX_OPERATION_SIZE:
                    raise TemplateError("chat template error: a repetition larger than the template limit")
        elif operator == "**" and _is_int(left) and _is_int(right) and abs(left) > 1:
            if right * max(abs(left).bit_length(), 1) > MAX_OPERATION_SIZE:
                raise TemplateError("chat template error: a power larger than the template limit")
        elif operator == "+" and _size(left) + _size(right) > MAX_OPERATION_SIZE:
            raise _too_large("a concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_percent(left, right)
        if operator in ("*", "//", "%") and _is_int(left) and _is_int(right) \
                and max(abs(left).bit_length(), abs(right).bit_length()) > MAX_INTEGER_BITS:
            raise _too_large("an integer operation")
        return _bounded(super().call_binop(context, operator, left, right))

    def bounded_concat(self, values: tuple, markup: bool) -> str:
        texts = [str(v) if not isinstance(v, str) else v for v in values]
        if sum(map(len, texts)) > MAX_OPERATION_SIZE:
            raise _too_large("a concatenation")
        return markup_join(texts) if markup else "".join(texts)

    def call(__self, __context, __obj, *args: Any, **kwargs: Any) -> Any:  # the names Jinja gives them
        if isinstance(__obj, _Hidden):
            __obj = __obj.target
        receiver = getattr(__obj, "__self__", None)
        if isinstance(receiver, str):
            args = _check_str_method(__obj, receiver, args, kwargs)
        return _bounded(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        return _hidden(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return _hidden(super().getitem(obj, argument))

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text, is_map = value.__self__, value.__name__ == "format_map"

        def bounded(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if is_map and len(args) == 1 and isinstance(args[0], dict) else {}
            _check_str_format(text, [*args, *kwargs.values(), *mapping.values()])
            return _bounded(wrapped(*args, **kwargs))

        return functools.update_wrapper(bounded, value)


def _environment() -> ImmutableSandboxedEnvironment:
    env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.filters["tojson"] = _bounded_filter("tojson", _tojson)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    # Functions and classes in reach of a template call as usual but never print as Python's repr.
    env.globals = {name: _hidden(value) for name, value in env.globals.items()}
    return env


_ENV = _environment()


class ChatTemplate:
    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source or CHATML
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _ENV.from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"chat template does not parse: {e.message} (line {e.lineno})") from None
        except TemplateError:
            raise
        except Exception as e:  # noqa: BLE001
            # Python's own compiler gives up on deep nesting (RecursionError, "too many statically
            # nested blocks"): the template is as unusable as one that does not parse.
            raise TemplateError(f"chat template does not parse: {type(e).__name__}: {e}") from None

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        context = {
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            **extra,
        }
        if tools:
            context["tools"] = tools
        try:
            return self._template.render(**context)
        except TemplateError:
            raise
        except jinja2.TemplateError as e:
            raise TemplateError(f"chat template failed: {e}") from None
        except RecursionError:
            raise TemplateError("chat template failed: it recursed too deeply") from None
        except Exception as e:  # noqa: BLE001
            # A template is a program over the request's messages: `1 / 0`, `'a' + 1`, a loop that
            # unpacks a string. Its failure is the template's, not the server's.
            raise TemplateError(f"chat template failed: {type(e).__name__}: {e}") from None
