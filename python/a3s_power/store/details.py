"""Model details (format, family, parameter size, quantization) and the manifest's config blob.

The config blob is Ollama's ConfigV2; ``/api/tags`` reads details from it without opening the
weights, and a model created here gets one Ollama itself can read.
"""

from __future__ import annotations

import json
from typing import Any

from .gguf import GGUFFile


def human_number(n: int) -> str:
    """Ollama's format.HumanNumber: 134515008 -> "134.52M", 3212749888 -> "3.2B"."""
    if n >= 1_000_000_000_000:
        return f"{n / 1e12:.0f}T"
    if n >= 1_000_000_000:
        v = n / 1e9
        return f"{v:.0f}B" if v == int(v) else f"{v:.1f}B"
    if n >= 1_000_000:
        v = n / 1e6
        return f"{v:.0f}M" if v == int(v) else f"{v:.2f}M"
    if n >= 1_000:
        return f"{n / 1e3:.0f}K"
    return str(n)


def config_for(gguf: GGUFFile, layer_digests: list[str], *, projector: GGUFFile | None = None,
               requires: str | None = None) -> bytes:
    """The ConfigV2 JSON for a GGUF model."""
    families = [gguf.architecture]
    if projector is not None and projector.architecture and projector.architecture not in families:
        families.append(projector.architecture)
    config: dict[str, Any] = {
        "model_format": "gguf",
        "model_family": gguf.architecture,
        "model_families": families,
        "model_type": human_number(gguf.parameter_count),
        "file_type": gguf.file_type,
    }
    if isinstance(ctx := gguf.arch_key("context_length"), int):
        config["context_length"] = ctx
    if isinstance(emb := gguf.arch_key("embedding_length"), int):
        config["embedding_length"] = emb
    if requires:
        config["requires"] = requires
    config.update({"architecture": "amd64", "os": "linux",
                   "rootfs": {"type": "layers", "diff_ids": layer_digests}})
    return json.dumps(config, separators=(",", ":")).encode()


def remote_config_for(remote_host: str, remote_model: str, layer_digests: list[str], *,
                      requires: str | None = None) -> bytes:
    """The ConfigV2 JSON of a remote model: no weights, the host and model that answer for it."""
    config: dict[str, Any] = {"model_format": "", "model_family": "", "model_families": None, "model_type": "",
                              "file_type": "", "remote_host": remote_host, "remote_model": remote_model,
                              "capabilities": ["completion"]}
    if requires:
        config["requires"] = requires
    config.update({"architecture": "amd64", "os": "linux",
                   "rootfs": {"type": "layers", "diff_ids": layer_digests}})
    return json.dumps(config, separators=(",", ":")).encode()


def details_from_config(config: dict[str, Any], parent_model: str = "") -> dict[str, Any]:
    families = config.get("model_families")
    return {
        "parent_model": parent_model,
        "format": config.get("model_format") or ("" if config.get("remote_host") else "gguf"),
        "family": config.get("model_family") or "",
        "families": families if isinstance(families, list) and families else None,
        "parameter_size": config.get("model_type") or "",
        "quantization_level": config.get("file_type") or "",
    }


def details_from_gguf(gguf: GGUFFile, parent_model: str = "") -> dict[str, Any]:
    return {
        "parent_model": parent_model,
        "format": "gguf",
        "family": gguf.architecture,
        "families": [gguf.architecture],
        "parameter_size": human_number(gguf.parameter_count),
        "quantization_level": gguf.file_type,
    }
