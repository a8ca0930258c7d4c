"""How much memory a model will take once loaded, and how much system memory the machine has free:
what the scheduler checks before a load, evicting idle models until the new one fits. Where the
layers go on GPUs, and whether they fit there, is the placement module's part.

The estimate follows llama.cpp's allocations: the weights as stored in the GGUF, the KV cache for
num_ctx tokens in each slot (K and V for every layer, at the cache type's size), and compute
buffers that grow with the batch and the vocabulary (the logits of a batch)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .options import LoadOptions

_CACHE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@dataclass
class Estimate:
    weights: int
    kv_cache: int
    compute: int
    layers: int = 0  # repeating blocks (llama.cpp offloads these plus the output layer)

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute


def estimate(model_path: Path | str, load: LoadOptions, extra_files: Iterable[Path | str] = ()) -> Estimate:
    from ..store.gguf import read_gguf

    path = Path(model_path)
    header = read_gguf(path, max_array=0, check_size=False)
    weights = path.stat().st_size + sum(Path(p).stat().st_size for p in extra_files if Path(p).exists())

    def key(suffix: str, default: int = 0) -> int:
        value = header.arch_key(suffix)
        if isinstance(value, list):  # per-layer values: take the largest
            value = max(value) if value else default
        return int(value) if value is not None else default

    n_layer = key("block_count")
    n_embd = key("embedding_length")
    n_head = max(key("attention.head_count", 1), 1)
    n_head_kv = key("attention.head_count_kv", n_head) or n_head
    head_k = key("attention.key_length", n_embd // n_head)
    head_v = key("attention.value_length", n_embd // n_head)
    slots = 1 if load.embedding else load.num_parallel
    cells = load.num_ctx * slots
    per_elt = _CACHE_BYTES.get(load.kv_cache_type, 2.0)
    kv = int(n_layer * cells * n_head_kv * (head_k + head_v) * per_elt)
    n_vocab = len(header.metadata.get("tokenizer.ggml.tokens", [])) or key("vocab_size", 32000)
    batch = min(load.num_batch, cells)
    compute = int(batch * (n_vocab + 4 * n_embd) * 4 + n_embd * cells * 4 // max(n_layer, 1)) + (32 << 20)
    return Estimate(weights, kv, compute, n_layer)


def available_memory() -> int:
    """System memory a new model can use: MemAvailable on Linux, else what the OS reports free."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
