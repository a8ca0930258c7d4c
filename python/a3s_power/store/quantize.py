"""Quantizing a GGUF model through llama.cpp, with progress.

llama.cpp reports nothing while it works, so progress is the output file's size against an
estimate of its final size (the source's weights at the target's bits per weight).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from ..errors import InvalidOptionError
from .gguf import GGUFFile

# Approximate bits per weight of each target, for the size estimate.
BITS_PER_WEIGHT = {
    "q4_0": 4.5, "q4_1": 5.0, "q5_0": 5.5, "q5_1": 6.0, "q8_0": 8.5, "q2_k": 2.6, "q3_k_s": 3.5, "q3_k_m": 3.9,
    "q3_k_l": 4.3, "q4_k_s": 4.6, "q4_k_m": 4.9, "q5_k_s": 5.5, "q5_k_m": 5.7, "q6_k": 6.6, "f16": 16.0,
    "bf16": 16.0,
}
# Ollama's display names of the types (``quantizing F16 model to Q4_K_M``).
DISPLAY = {k: k.upper() for k in BITS_PER_WEIGHT}
SOURCE_TYPES = ("F32", "F16", "BF16")  # only full-precision models are quantized, as in Ollama


def normalize_type(qtype: str) -> str:
    key = (qtype or "").strip().lower()
    if key not in BITS_PER_WEIGHT:
        raise InvalidOptionError(f"unsupported quantization type {qtype}")
    return key


def estimate_size(src: GGUFFile, qtype: str) -> int:
    weights = src.parameter_count
    header = src.data_offset
    return int(header + weights * BITS_PER_WEIGHT[qtype] / 8)


async def quantize(src: Path, dst: Path, qtype: str, estimate: int, *, interval_s: float = 0.25,
                   n_threads: int = 0) -> AsyncIterator[tuple[int, int]]:
    """Runs the quantization in a worker thread, yielding (completed, total) as the file grows."""
    from ..core import _core

    task = asyncio.ensure_future(asyncio.to_thread(_core.quantize, str(src), str(dst), qtype, n_threads))
    total = max(1, estimate)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=interval_s)
            try:
                size = dst.stat().st_size
            except FileNotFoundError:
                size = 0
            if not task.done():
                yield min(size, total - 1), total
        task.result()
    finally:
        if not task.done():
            # The C++ call cannot be interrupted; wait for it so its output file is not in use.
            await asyncio.gather(task, return_exceptions=True)
    yield total, total
