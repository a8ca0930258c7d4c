"""Models stored as safetensors tensor layers, the format of Ollama's MLX engine.

Such a manifest has no GGUF ``image.model`` layer: its weights are ``image.tensor`` layers (each a
small safetensors file named by the tensor it holds, or a packed group of them) and its Hugging Face
files are ``image.json`` layers named ``config.json``, ``tokenizer.json`` and so on. The store keeps,
lists, shows, copies and deletes them like any model; llama.cpp cannot run them, so they report no
capabilities and a request to run one is refused with ``cannot_run``.

What ``/api/show`` reports for them follows Ollama: ``model_info`` from ``config.json`` with keys in
GGUF's spelling, the parameter count from the tensor headers, and the tensors themselves.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import manifest as mf
from .details import human_number

_MAX_HEADER = 100 * 1024 * 1024  # a packed blob's header may be large; anything past this is not one
_COMPANIONS = (".scale", ".bias", ".global_scale")  # quantization scales stored beside a tensor


def is_tensor_model(manifest: mf.Manifest) -> bool:
    """Weights only as safetensors tensor layers (no GGUF model layer)."""
    return manifest.model_layer() is None and bool(manifest.layers_of(mf.TENSOR))


def cannot_run(name: str) -> str:
    """Why a tensor model is refused: the error every API answers with (400)."""
    return (f'"{name}" cannot run here: its weights are safetensors tensors for Ollama\'s MLX engine, and '
            "A3S Power runs GGUF models only; pull a GGUF build of this model")


def json_file(manifest: mf.Manifest, name: str, blob_path: Callable[[str], Path]) -> dict[str, Any]:
    """The ``image.json`` layer called ``name`` (``config.json``), parsed; {} when absent or unreadable."""
    for layer in manifest.layers_of(mf.JSON_FILE):
        if layer.name == name:
            try:
                data = json.loads(blob_path(layer.digest).read_bytes())
            except (OSError, ValueError):
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def architecture(hf: dict[str, Any]) -> str:
    """Ollama's name for a Hugging Face architecture: ``model_type``, else ``Gemma3ForCausalLM`` -> ``gemma3``."""
    if isinstance(hf.get("model_type"), str) and hf["model_type"]:
        return hf["model_type"]
    archs = hf.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        name = archs[0].lower()
        for suffix in ("forcausallm", "forconditionalgeneration"):
            name = name.removesuffix(suffix)
        return name
    return ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _header(path: Path) -> dict[str, Any]:
    """A safetensors file's JSON header; {} when the file is not one."""
    try:
        with open(path, "rb") as f:
            size_bytes = f.read(8)
            if len(size_bytes) != 8:
                return {}
            (size,) = struct.unpack("<Q", size_bytes)
            if size > _MAX_HEADER:
                return {}
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return {}
    return header if isinstance(header, dict) else {}


def tensors(manifest: mf.Manifest, blob_path: Callable[[str], Path]) -> list[dict[str, Any]] | None:
    """Every tensor (name, type, shape) in the tensor layers, sorted by name; None when some are
    quantized (packed into words whose logical shape depends on the quantization) or unreadable."""
    out = []
    for layer in manifest.layers_of(mf.TENSOR):
        header = _header(blob_path(layer.digest))
        meta = header.get("__metadata__")
        if not header or (isinstance(meta, dict) and meta.get("quant_type")):
            return None
        main = [k for k in header if k != "__metadata__" and not k.endswith(_COMPANIONS)]
        for key in main:
            entry = header[key]
            if f"{key}.scale" in header or not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
                return None
            name = key if len(main) > 1 else (layer.name or key)  # one tensor: the layer names it
            out.append({"name": name, "type": str(entry.get("dtype", "")), "shape": list(entry["shape"])})
    return sorted(out, key=lambda t: t["name"])


def parameter_count(found: list[dict[str, Any]] | None) -> int:
    total = 0
    for tensor in found or []:
        n = 1
        for dim in tensor["shape"]:
            n *= int(dim)
        total += n
    return total


def model_info(hf: dict[str, Any], n_params: int) -> dict[str, Any]:
    """``/api/show``'s model_info for a tensor model: config.json's sizes under GGUF's key names
    (a multimodal model's text_config wins for the text sizes)."""
    arch = architecture(hf)
    text_config = hf.get("text_config")
    text = text_config if isinstance(text_config, dict) else {}
    sizes = {"context_length": _int(text.get("max_position_embeddings")) or _int(hf.get("max_position_embeddings")),
             "embedding_length": _int(text.get("hidden_size")) or _int(hf.get("hidden_size")),
             "block_count": _int(text.get("num_hidden_layers")) or _int(hf.get("num_hidden_layers")),
             "attention.head_count": _int(hf.get("num_attention_heads")),
             "attention.head_count_kv": _int(hf.get("num_key_value_heads")),
             "feed_forward_length": _int(hf.get("intermediate_size")),
             "vocab_size": _int(hf.get("vocab_size"))}
    info: dict[str, Any] = {"general.architecture": arch}
    info.update({f"{arch}.{key}": value for key, value in sizes.items() if value})
    if n_params:
        info["general.parameter_count"] = n_params
    return dict(sorted(info.items()))


def details(config: dict[str, Any], hf: dict[str, Any], n_params: int) -> dict[str, Any]:
    """Details as Ollama gives them for a safetensors model: the family from config.json, the size
    from the tensors, the quantization from the config blob or else the weights' dtype."""
    arch = architecture(hf) or str(config.get("model_family") or "")
    families = config.get("model_families")
    return {"parent_model": "", "format": str(config.get("model_format") or "safetensors"), "family": arch,
            "families": families if isinstance(families, list) and families else None,
            "parameter_size": human_number(n_params) if n_params else str(config.get("model_type") or ""),
            "quantization_level": str(config.get("file_type") or hf.get("torch_dtype") or "")}
