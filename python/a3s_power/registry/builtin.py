"""The built-in registry: known models' GGUF files by name, for when the Ollama registry cannot be
reached or does not have the name (the spec's offline fallback).

The index ships with the package (``known_models.json``); ``$A3S_POWER_HOME/known_models.json``
adds or overrides entries. An entry names a GGUF URL and may carry its sha256 (checked after the
download), a Go template, a system prompt, parameters and a license, which become layers.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..store.names import ModelName
from ..store.types import InvalidModelName

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownModel:
    name: ModelName
    url: str
    sha256: str | None = None
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    description: str = ""


def _entries(data: Any, origin: str) -> list[KnownModel]:
    out = []
    for item in data.get("models", []) if isinstance(data, dict) else []:
        try:
            digest = item.get("sha256")
            out.append(KnownModel(ModelName.parse(item["name"]), str(item["url"]),
                                  f"sha256:{digest.lower()}" if digest else None, item.get("template"),
                                  item.get("system"), dict(item.get("parameters") or {}), item.get("license"),
                                  item.get("description", "")))
        except (KeyError, TypeError, AttributeError, InvalidModelName) as exc:
            log.warning("%s: skipping a malformed entry %r: %s", origin, item, exc)
    return out


class BuiltinRegistry:
    def __init__(self, models: list[KnownModel]) -> None:
        self._by_key = {m.name.key(): m for m in models}

    @classmethod
    def load(cls, extra: Path | None = None) -> "BuiltinRegistry":
        models = _entries(json.loads(resources.files(__package__).joinpath("known_models.json").read_text()),
                          "known_models.json")
        if extra is not None and extra.is_file():
            try:
                models += _entries(json.loads(extra.read_text()), str(extra))
            except (OSError, ValueError) as exc:
                log.warning("cannot read %s: %s", extra, exc)
        return cls(models)

    def lookup(self, name: ModelName) -> KnownModel | None:
        return self._by_key.get(name.key())

    def models(self) -> list[KnownModel]:
        return list(self._by_key.values())
