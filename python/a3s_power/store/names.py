"""Model names as Ollama parses them: ``[host/][namespace/]model[:tag]``.

The defaults are ``registry.ollama.ai``, ``library`` and ``latest``. Every part is checked against
Ollama's character rules before it is ever used as a path component, so a name can never reach
outside the manifests folder (no ``..``, no absolute paths, no stray slashes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from .types import InvalidModelName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
HF_HOSTS = ("hf.co", "huggingface.co")

# Ollama's part rules: host 1-350 characters, namespace, model and tag 1-80.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9\-_.:]{0,349}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9\-_]{0,79}")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9\-_.]{0,79}")
# Every part is a folder or file name in the store, and no file system takes a name longer than
# 255 bytes (NAME_MAX on Linux, macOS and Windows): a longer host, which Ollama's rule lets through,
# could only fail there, as a 500 naming the store's path. It is an invalid name instead.
MAX_PART_BYTES = 255


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str
    scheme: str = "https"  # an explicit "http://" in the name, or ``insecure``, makes it http

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parses and checks a name, filling in the defaults; raises InvalidModelName."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidModelName("invalid model name")
        raw = text.strip()
        scheme = "https"
        for prefix in ("https://", "http://"):
            if raw.lower().startswith(prefix):
                scheme = prefix[:-3]
                raw = raw[len(prefix):]
        tag = ""
        # "/" is not allowed in a tag, so a ":" after the last "/" starts the tag (a ":" before it
        # belongs to a host's port).
        if raw.rfind(":") > raw.rfind("/"):
            raw, tag = raw.rsplit(":", 1)
            if not tag:
                raise InvalidModelName(f"invalid model name: {text!r}")
        parts = raw.split("/")
        if len(parts) > 3 or any(p == "" for p in parts):
            raise InvalidModelName(f"invalid model name: {text!r}")
        host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
        if len(parts) == 3:
            host, namespace, model = parts
        elif len(parts) == 2:
            namespace, model = parts
        else:
            (model,) = parts
        name = cls(host, namespace, model, tag or DEFAULT_TAG, scheme)
        name.check(text)
        return name

    def check(self, original: str | None = None) -> None:
        shown = original if original is not None else self.full
        for pattern, value in ((_HOST, self.host), (_NAMESPACE, self.namespace), (_PART, self.model),
                               (_PART, self.tag)):
            # ".." is never a part (the patterns forbid a leading dot) nor inside one: belt and braces
            if not pattern.fullmatch(value) or ".." in value or len(value) > MAX_PART_BYTES:
                raise InvalidModelName(f"invalid model name: {shown!r}")

    @property
    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def display(self) -> str:
        """Ollama's DisplayShortest: the default host and namespace left out, the tag always shown."""
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def repository(self) -> str:
        """The registry's repository path: ``namespace/model``."""
        return f"{self.namespace}/{self.model}"

    @property
    def manifest_relpath(self) -> PurePosixPath:
        return PurePosixPath(self.host, self.namespace, self.model, self.tag)

    @property
    def is_huggingface(self) -> bool:
        return self.host.lower() in HF_HOSTS

    def base_url(self, insecure: bool = False) -> str:
        scheme = "http" if insecure else self.scheme
        return f"{scheme}://{self.host}"

    def key(self) -> tuple[str, str, str, str]:
        """Names compare case-insensitively, as Ollama's lookups do."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def __str__(self) -> str:
        return self.display


def parse_name(text: str) -> ModelName:
    return ModelName.parse(text)
