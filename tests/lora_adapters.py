"""LoRA adapters generated for a real base model's shapes, with the ``gguf`` package.

A zero ``lora_b`` makes the adapter a no-op (the base model's output must not change); random
matrices must change it. They prove the plumbing of adapters, not any fine-tuning."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def write_lora(path: Path, base_gguf: str, *, rank: int = 8, alpha: float = 16.0, zero: bool = False,
               seed: int = 0, scale: float = 1.0) -> Path:
    reader = gguf.GGUFReader(base_gguf)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    for tensor in reader.tensors:
        if not tensor.name.endswith("attn_q.weight"):
            continue
        n_in, n_out = int(tensor.shape[0]), int(tensor.shape[1])  # ggml order: ne0 = input width
        a = (rng.standard_normal((rank, n_in)) * scale / np.sqrt(n_in)).astype(np.float32)
        b = np.zeros((n_out, rank), dtype=np.float32) if zero else \
            (rng.standard_normal((n_out, rank)) * scale).astype(np.float32)
        writer.add_tensor(tensor.name + ".lora_a", a)
        writer.add_tensor(tensor.name + ".lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
