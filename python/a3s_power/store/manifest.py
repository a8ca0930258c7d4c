"""Registry manifests (Docker distribution manifest v2) and Ollama's layer media types.

A manifest is kept on disk byte for byte as the registry sent it (its sha256 is the model's ID),
so ``Manifest`` remembers the raw bytes it was parsed from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import A3SPowerError
from . import digests

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"

_PREFIX = "application/vnd.ollama.image."
MODEL = _PREFIX + "model"
TEMPLATE = _PREFIX + "template"
LEGACY_PROMPT = _PREFIX + "prompt"
SYSTEM = _PREFIX + "system"
PARAMS = _PREFIX + "params"
LICENSE = _PREFIX + "license"
PROJECTOR = _PREFIX + "projector"
ADAPTER = _PREFIX + "adapter"
MESSAGES = _PREFIX + "messages"
DRAFT = _PREFIX + "draft"
TENSOR = _PREFIX + "tensor"
JSON_FILE = _PREFIX + "json"
EMBED = _PREFIX + "embed"  # deprecated; ignored

KNOWN_MEDIA_TYPES = frozenset({MODEL, TEMPLATE, LEGACY_PROMPT, SYSTEM, PARAMS, LICENSE, PROJECTOR, ADAPTER,
                               MESSAGES, DRAFT, TENSOR, JSON_FILE, EMBED, CONFIG_MEDIA_TYPE})


class InvalidManifest(A3SPowerError, ValueError):
    http_status = 400


@dataclass
class Layer:
    media_type: str
    digest: str
    size: int
    from_: str | None = None  # the parent model a model layer came from
    name: str | None = None  # tensor / json layers

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.from_:
            out["from"] = self.from_
        if self.name:
            out["name"] = self.name
        return out

    @classmethod
    def from_json(cls, data: Any) -> Layer:
        if not isinstance(data, dict):
            raise InvalidManifest("manifest layer is not an object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(media_type, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidManifest("manifest layer needs mediaType and a size")
        try:
            digest = digests.normalize(digest)
        except digests.InvalidDigest as exc:
            raise InvalidManifest(f"manifest layer: {exc}") from None
        return cls(media_type, digest, size, data.get("from") or None, data.get("name") or None)


@dataclass
class Manifest:
    config: Layer
    layers: list[Layer] = field(default_factory=list)
    raw: bytes = b""

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidManifest(f"manifest is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidManifest("manifest is not a JSON object")
        if data.get("schemaVersion") != 2:
            raise InvalidManifest(f"unsupported manifest schemaVersion {data.get('schemaVersion')!r}")
        if "config" not in data:
            raise InvalidManifest("manifest has no config")
        layers = data.get("layers")
        if not isinstance(layers, list):
            raise InvalidManifest("manifest has no layers")
        return cls(Layer.from_json(data["config"]), [Layer.from_json(layer) for layer in layers], bytes(raw))

    @classmethod
    def build(cls, config: Layer, layers: list[Layer]) -> Manifest:
        body = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "config": config.to_json(),
                "layers": [layer.to_json() for layer in layers]}
        return cls(config, layers, json.dumps(body, separators=(",", ":")).encode())

    @property
    def digest(self) -> str:
        """The model's ID: the hex sha256 of the manifest bytes, without prefix."""
        return digests.sha256_bytes(self.raw)[7:]

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)

    def all_layers(self) -> list[Layer]:
        """The config and every layer, each digest once."""
        seen: set[str] = set()
        out = []
        for layer in [self.config, *self.layers]:
            if layer.digest not in seen:
                seen.add(layer.digest)
                out.append(layer)
        return out

    def digests(self) -> set[str]:
        return {layer.digest for layer in self.all_layers()}

    def layers_of(self, media_type: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type == media_type]

    def model_layer(self) -> Layer | None:
        found = self.layers_of(MODEL)
        return found[0] if found else None
