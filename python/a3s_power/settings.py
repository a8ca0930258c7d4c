"""Settings declared once, the way Ollama's ``envconfig`` declares its variables.

A setting is a field of ``config.Config`` annotated with a ``Setting``: the field gives its name,
type and default; the ``Setting`` gives its environment variable, its config.toml key, the values
it may take and what it means. From that one declaration come the reading of the environment and
the checking of config.toml (``config.py``), the lists in ``a3s-power serve --help`` and README's
table (``python -m a3s_power.config --markdown``). This module holds the machinery and knows no
setting by name.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticUndefined

from .errors import InvalidOptionError


@dataclass(frozen=True)
class Setting:
    """How one setting is read and documented; ``Annotated[type, Setting(...)]`` on a Config field."""

    help: str  # one line, what it is: serve --help, and the start of README's "meaning"
    env: str | None = None  # the environment variable
    toml: str | bool = False  # config.toml's key: True, the field's name; "gpu.main_gpu", a key of a table
    more: str = ""  # the rest of README's "meaning"
    shown: str | None = None  # the default as people read it (Markdown), where the value itself would not say
    # The values it may take. config.toml names a value outside them as an error; the environment's
    # is ignored, as Ollama ignores a nonsense variable. env_ge: the environment's least (where 0 in
    # Ollama's variable means "the default", and in config.toml "no limit").
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    env_ge: float | None = None
    parse: Callable[[str], Any] | None = None  # the environment's text into a value; by default by the type
    clean: Callable[[Any], Any] | None = None  # a value from either source into the field's
    toml_type: Any = None  # what config.toml holds, where it is not the field's type
    after: str = ""  # a setting that is no field of Config: the field it is listed after
    # From the field (or, for a setting that is no field, given):
    name: str = ""
    type: Any = None
    default: Any = None

    def in_range(self, value: Any, *, env: bool = False) -> bool:
        least = self.env_ge if env and self.env_ge is not None else self.ge
        return ((least is None or value >= least) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le))

    @property
    def toml_key(self) -> str | None:
        if self.toml is True:
            return self.name
        return self.toml or None


def collect(model: type[BaseModel], others: Iterable[Setting] = ()) -> tuple[Setting, ...]:
    """The settings of a model's fields in their order, with ``others`` after the fields they name."""
    found: list[Setting] = []
    for name, field in model.model_fields.items():
        declared = [m for m in field.metadata if isinstance(m, Setting)]
        if declared:
            default = None if field.default is PydanticUndefined else field.default
            found.append(dataclasses.replace(declared[0], name=name, type=field.annotation, default=default))
    for other in others:
        at = next(i for i, s in enumerate(found) if s.name == other.after)
        found.insert(at + 1 + sum(1 for s in found[at + 1:] if not s.name and s.after == other.after), other)
    return tuple(found)


# ---- the environment ----

def env_text(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A variable as Ollama reads it: spaces and quotes around it dropped; empty is unset."""
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        return None
    value = value.strip().strip("\"'")
    return value or None


def parse_bool(text: str) -> bool:
    # Ollama: an unparseable value counts as true.
    return text.lower() not in ("0", "false", "f", "no", "off")


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def parse_seconds(text: str) -> float:
    try:
        return float(text.removesuffix("s"))
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None


def parse_list(text: str) -> tuple[str, ...]:
    """A comma-separated list."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _without_none(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _parser(setting: Setting) -> Callable[[str], Any]:
    if setting.parse is not None:
        return setting.parse
    base = _without_none(setting.type)
    if base is bool:
        return parse_bool
    if base is int:
        return parse_int
    if base is float:
        return parse_seconds
    if base is Path:
        return Path
    if typing.get_origin(base) is tuple:
        return parse_list
    return str


def _clean(setting: Setting, value: Any) -> Any:
    if setting.clean is not None:
        return setting.clean(value)
    if isinstance(value, Path):
        return value.expanduser()
    return value


def read_env(settings: Iterable[Setting], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields whose variables are set: malformed text is an error that names the variable, a
    value outside the setting's range is ignored."""
    values: dict[str, Any] = {}
    for s in settings:
        if not s.name or s.env is None or (text := env_text(s.env, environ)) is None:
            continue
        try:
            value = _clean(s, _parser(s)(text))
        except ValueError as exc:
            raise InvalidOptionError(f"environment variable {s.env}: {exc}") from None
        if value is not None and s.in_range(value, env=True):
            values[s.name] = value
    return values


# ---- config.toml ----

def toml_model(settings: Iterable[Setting]) -> type[BaseModel]:
    """config.toml's checked shape: every key a setting declares and nothing else."""
    tables: dict[str, dict[str, Any]] = {"": {}}
    for s in settings:
        if (key := s.toml_key) is None:
            continue
        table, _, name = key.rpartition(".")
        kind = s.toml_type if s.toml_type is not None else s.type
        tables.setdefault(table, {})[name] = (kind | None, Field(default=None, ge=s.ge, gt=s.gt, le=s.le))
    strict = ConfigDict(extra="forbid")
    top = tables.pop("")
    for table, fields in tables.items():
        top[table] = (create_model(f"_Toml_{table}", __config__=strict, **fields) | None, None)
    return create_model("_TomlFile", __config__=strict, **top)


def read_toml(settings: Iterable[Setting], data: dict[str, Any], where: str) -> dict[str, Any]:
    """The keys config.toml sets, checked, by setting: errors name the key, prefixed by ``where``."""
    settings = tuple(settings)
    try:
        parsed = toml_model(settings).model_validate(data).model_dump(exclude_none=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidOptionError(f"{where}: {problems}") from None
    values: dict[str, Any] = {}
    for s in settings:
        if (key := s.toml_key) is None:
            continue
        table, _, name = key.rpartition(".")
        found = parsed.get(table, {}) if table else parsed
        if name not in found:
            continue
        try:
            values[s.name or key] = _clean(s, found[name])
        except ValueError as exc:
            raise InvalidOptionError(f"{where}: {key}: {exc}") from None
    return values


# ---- documentation ----

def shown_default(setting: Setting) -> str:
    """The default in Markdown: the declared words, else the value as code."""
    if setting.shown is not None:
        return setting.shown
    value = setting.default
    if value is None or value == {} or value == ():
        return ""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, tuple):
        text = ",".join(value)
    else:
        text = str(value)
    return f"`{text}`"


def meaning(setting: Setting) -> str:
    return f"{setting.help}; {setting.more}" if setting.more else setting.help


def help_rows(settings: Iterable[Setting]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(variable, text) and (config.toml key, text) pairs for a command's help."""
    env_rows, toml_rows = [], []
    for s in settings:
        text = s.help
        if default := shown_default(s):
            text += f" (default {default})"
        text = text.replace("`", "")
        if s.env:
            env_rows.append((s.env, text))
        if s.toml_key:
            toml_rows.append((s.toml_key, text))
    return env_rows, toml_rows


def markdown(settings: Iterable[Setting]) -> str:
    """README's table of settings."""
    def code(text: str | None) -> str:
        return f"`{text}`" if text else ""

    lines = ["| variable | config.toml | default | meaning |", "|---|---|---|---|"]
    for s in settings:
        cells = (code(s.env), code(s.toml_key), shown_default(s), meaning(s))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


MARKERS = ("<!-- settings: python -m a3s_power.config --markdown -->", "<!-- /settings -->")


def spliced(document: str, table: str) -> str:
    """``document`` with the text between its two settings markers replaced by ``table``."""
    start, end = document.index(MARKERS[0]) + len(MARKERS[0]), document.index(MARKERS[1])
    return document[:start] + "\n" + table + document[end:]


def table_in(document: str) -> str:
    start, end = document.index(MARKERS[0]) + len(MARKERS[0]), document.index(MARKERS[1])
    return document[start:end].lstrip("\n")
